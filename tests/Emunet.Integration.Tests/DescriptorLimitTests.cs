using System.Diagnostics;
using System.Globalization;
using System.Net;
using System.Net.Sockets;
using Emunet.Engine.Control;
using Emunet.GuestRig;

namespace Emunet.Integration.Tests;

/// <summary>
/// The engine under a low open-file limit (the hardening issue's fourth finding): hundreds of forward clients must not
/// make it spin, flood its log, or die; it sizes its tables to the limit and says so once.
/// </summary>
public sealed class DescriptorLimitTests
{
    /// <summary>CPU seconds (user + system) the process has used, from /proc/PID/stat.</summary>
    private static double CpuSeconds(int pid)
    {
        var stat = File.ReadAllText($"/proc/{pid}/stat");
        var fields = stat[(stat.LastIndexOf(')') + 2)..].Split(' ');
        long ticks = long.Parse(fields[11], CultureInfo.InvariantCulture) + long.Parse(fields[12], CultureInfo.InvariantCulture);
        return ticks / 100.0; // USER_HZ
    }

    [Fact]
    public async Task Four_hundred_forward_clients_under_ulimit_256_neither_spin_nor_flood_nor_kill_the_engine()
    {
        var dir = Directory.CreateTempSubdirectory("emunet-nofile-").FullName;
        int port = LoopbackPorts.Free();
        var psi = new ProcessStartInfo("bash") { RedirectStandardError = true, RedirectStandardOutput = true };
        psi.ArgumentList.Add("-c");
        psi.ArgumentList.Add($"ulimit -n 256 && exec dotnet \"{ToolProcessTests.ToolDll}\" run --socket \"{Path.Combine(dir, "g.sock")}\" --name nofile --forward tcp:{port}:80 --log-level Information");
        psi.Environment["EMUNET_RUNTIME_DIR"] = Path.Combine(dir, "run");
        using var engine = Process.Start(psi)!;
        var lines = new List<string>();
        var listening = new TaskCompletionSource();
        engine.ErrorDataReceived += (_, e) =>
        {
            if (e.Data is null) return;
            lock (lines) lines.Add(e.Data);
            if (e.Data.Contains("listening on", StringComparison.Ordinal)) listening.TrySetResult();
        };
        engine.OutputDataReceived += (_, e) => { if (e.Data is not null) lock (lines) lines.Add(e.Data); };
        engine.BeginErrorReadLine();
        engine.BeginOutputReadLine();
        var clients = new List<Socket>();
        try
        {
            await listening.Task.WaitAsync(TimeSpan.FromSeconds(30));
            // No guest is attached, so forwarded connections wait for a SYN-ACK that never comes: they hold descriptors.
            for (int i = 0; i < 400; i++)
            {
                var c = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
                try { await c.ConnectAsync(new IPEndPoint(IPAddress.Loopback, port)).WaitAsync(TimeSpan.FromSeconds(5)); }
                catch (Exception e) when (e is SocketException or TimeoutException) { }
                clients.Add(c);
            }
            double before = CpuSeconds(engine.Id);
            var watch = Stopwatch.StartNew();
            await Task.Delay(3000); // measuring a rate over a window, not waiting for a condition
            double used = CpuSeconds(engine.Id) - before;
            Assert.False(engine.HasExited, "the engine died");
            Assert.True(used < 0.5 * watch.Elapsed.TotalSeconds, $"the engine used {used:0.00} s of CPU in {watch.Elapsed.TotalSeconds:0.0} s with no work to do");
            string log;
            lock (lines) log = string.Join('\n', lines);
            Assert.True(lines.Count < 60, $"{lines.Count} log lines:\n{log}");
            Assert.Contains("open-file limit is 256", log);
        }
        finally
        {
            foreach (var c in clients) c.Dispose();
            if (!engine.HasExited) engine.Kill();
            await engine.WaitForExitAsync();
            try { Directory.Delete(dir, true); } catch (IOException) { }
        }
    }
}
