using System.Diagnostics;
using System.Text.Json;
using System.Text.RegularExpressions;
using Emunet.Engine.Control;

namespace Emunet.Tool.Tests;

/// <summary>`emunet run` as its own process: its log on stderr, configured from the environment the standard way.</summary>
public sealed class LoggingTests
{
    /// <summary>Runs an engine until it is ready, stops it through the control socket, returns its stderr lines.</summary>
    private static async Task<string[]> RunLog(IDictionary<string, string> env)
    {
        using var tmp = new TempFolder();
        string run = tmp.File("run"), control = Path.Combine(run, "log.sock");
        var psi = new ProcessStartInfo("dotnet") { RedirectStandardError = true, RedirectStandardOutput = true };
        foreach (string a in new[] { typeof(EmunetCli).Assembly.Location, "run", "--name", "log", "--socket", tmp.File("dev.sock") })
            psi.ArgumentList.Add(a);
        psi.Environment[RuntimeDirectory.OverrideVariable] = run;
        foreach (var (k, v) in env) psi.Environment[k] = v;
        using var p = Process.Start(psi)!;
        var stderr = p.StandardError.ReadToEndAsync();
        try
        {
            Wait.Until(() => p.HasExited || RuntimeDirectory.IsLive(control), "the engine's control socket", TimeSpan.FromSeconds(20));
            if (p.HasExited) Assert.Fail("run exited early: " + await stderr);
            using (var client = ControlClient.Connect(control)) client.Shutdown();
            Assert.True(p.WaitForExit(15_000), "the engine did not stop");
            return (await stderr).Split('\n', StringSplitOptions.RemoveEmptyEntries);
        }
        finally
        {
            if (!p.HasExited) p.Kill(entireProcessTree: true);
        }
    }

    [Fact]
    public async Task Lines_carry_the_date_with_its_zone_and_appear_once()
    {
        var lines = await RunLog(new Dictionary<string, string>());
        var ready = lines.Where(l => l.Contains("Instance 'log' ready")).ToList();
        Assert.Single(ready);
        Assert.Matches(new Regex(@"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}[+-]\d\d:\d\d info: Emunet\[101\] "), ready[0]);
        Assert.Contains("-netdev stream,id=n0,server=off,addr.type=unix,addr.path=", ready[0]);
    }

    [Fact]
    public async Task Logging__Console__FormatterName_json_writes_one_json_object_per_line()
    {
        var lines = await RunLog(new Dictionary<string, string> { ["Logging__Console__FormatterName"] = "json" });
        var events = lines.Select(l => JsonDocument.Parse(l).RootElement).ToList();
        var ready = events.Single(e => e.GetProperty("EventId").GetInt32() == 101);
        Assert.Equal("Emunet", ready.GetProperty("Category").GetString());
        Assert.Equal("log", ready.GetProperty("State").GetProperty("Name").GetString());
        Assert.True(DateTimeOffset.TryParse(ready.GetProperty("Timestamp").GetString(), out _));
        Assert.Matches(@"[+-]\d\d:\d\d$", ready.GetProperty("Timestamp").GetString()!);
        Assert.Contains(events, e => e.GetProperty("EventId").GetInt32() == 102);
    }

    [Fact]
    public async Task Levels_from_the_environment_apply_per_category()
    {
        var lines = await RunLog(new Dictionary<string, string> { ["Logging__LogLevel__Emunet.Engine"] = "Warning" });
        Assert.DoesNotContain(lines, l => l.Contains("Emunet.Engine["));
        Assert.Contains(lines, l => l.Contains("Emunet[101]")); // other categories keep --log-level's Information
    }
}
