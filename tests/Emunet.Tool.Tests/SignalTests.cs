using System.Diagnostics;
using Emunet.Engine.Control;

namespace Emunet.Tool.Tests;

/// <summary>`emunet run` as its own process: SIGTERM and SIGINT shut it down cleanly.</summary>
public sealed class SignalTests
{
    [Theory]
    [InlineData("TERM")]
    [InlineData("INT")]
    public async Task A_signal_closes_the_listeners_and_removes_the_sockets(string signal)
    {
        using var tmp = new TempFolder();
        string run = tmp.File("run"), device = tmp.File("dev.sock"), control = Path.Combine(run, "sig.sock");
        var psi = new ProcessStartInfo("dotnet") { RedirectStandardError = true, RedirectStandardOutput = true };
        foreach (string a in new[] { typeof(EmunetCli).Assembly.Location, "run", "--name", "sig", "--socket", device, "--forward", "tcp:0:80" })
            psi.ArgumentList.Add(a);
        psi.Environment[RuntimeDirectory.OverrideVariable] = run;
        // setsid gives the engine default signal dispositions even when this test runs with SIGINT ignored.
        if (File.Exists("/usr/bin/setsid"))
        {
            psi.ArgumentList.Insert(0, psi.FileName);
            psi.FileName = "/usr/bin/setsid";
        }
        using var p = Process.Start(psi)!;
        var stderr = p.StandardError.ReadToEndAsync();
        try
        {
            // The socket file appears at bind, a moment before listen: wait until it answers.
            Wait.Until(() => p.HasExited || File.Exists(device) && RuntimeDirectory.IsLive(control), "the engine's sockets", TimeSpan.FromSeconds(20));
            if (p.HasExited) Assert.Fail("run exited early: " + await stderr);
            using (var client = ControlClient.Connect(control)) Assert.Single(client.ListForwards());

            using (var kill = Process.Start("kill", ["-" + signal, p.Id.ToString()])) kill.WaitForExit();
            Assert.True(p.WaitForExit(15_000), "the engine did not stop");
            string log = await stderr;
            Assert.True(p.ExitCode == 0, log);
            Assert.False(File.Exists(control));
            Assert.False(File.Exists(device));
            Assert.Contains("stopping", log);
        }
        finally
        {
            if (!p.HasExited) p.Kill(entireProcessTree: true);
        }
    }
}
