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

    /// <summary>
    /// Runs <c>emunet run</c> as its own process; returns it and its log lines. Its limit is lowered once it runs
    /// (<c>prlimit --pid</c>): the runtime raises its soft limit to the hard one at start, and only the soft one can
    /// be raised again without privileges.
    /// </summary>
    private static (Process Engine, List<string> Lines, Task Started) StartEngine(string dir, string name, string extra)
    {
        var psi = new ProcessStartInfo("dotnet") { RedirectStandardError = true, RedirectStandardOutput = true };
        foreach (var a in $"{ToolProcessTests.ToolDll} run --name {name} --log-level Information {extra}".Split(' ')) psi.ArgumentList.Add(a);
        psi.Environment["EMUNET_RUNTIME_DIR"] = Path.Combine(dir, "run");
        var engine = Process.Start(psi)!;
        var lines = new List<string>();
        var started = new TaskCompletionSource();
        engine.ErrorDataReceived += (_, e) =>
        {
            if (e.Data is null) return;
            lock (lines) lines.Add(e.Data);
            if (e.Data.Contains("started on", StringComparison.Ordinal)) started.TrySetResult();
        };
        engine.OutputDataReceived += (_, e) => { if (e.Data is not null) lock (lines) lines.Add(e.Data); };
        engine.BeginErrorReadLine();
        engine.BeginOutputReadLine();
        return (engine, lines, started.Task);
    }

    private static async Task WaitForLogAsync(List<string> lines, string text, TimeSpan timeout)
    {
        var deadline = Stopwatch.StartNew();
        while (true)
        {
            lock (lines)
                if (lines.Exists(l => l.Contains(text, StringComparison.Ordinal))) return;
            if (deadline.Elapsed > timeout)
            {
                lock (lines) Assert.Fail($"no log line with '{text}' within {timeout.TotalSeconds} s:\n{string.Join('\n', lines)}");
            }
            await Task.Delay(50);
        }
    }

    private static async Task SetOpenFileLimitAsync(int pid, int limit)
    {
        using var p = Process.Start(new ProcessStartInfo("prlimit", $"--pid {pid} --nofile={limit}:") { RedirectStandardError = true })!;
        await p.WaitForExitAsync();
        Assert.True(p.ExitCode == 0, await p.StandardError.ReadToEndAsync());
    }

    /// <summary>
    /// The engine's descriptors all spent (forwards bound until the next one fails): an emulator that connects must
    /// not make the device listener spin (it pauses, counts, logs once), a new control client must still hear why it
    /// cannot be served (the reserve descriptor), and once descriptors are free again the emulator is attached.
    /// </summary>
    /// <remarks>
    /// Skipped in CI: in about one run in five the .NET runtime itself aborts ("Out of memory.") at the moment the
    /// last descriptor goes, before the engine's code is involved (strace shows runtime calls such as pipe2 failing
    /// with EMFILE then). It passes whenever the runtime survives; run it by hand with
    /// <c>dotnet test tests/Emunet.Integration.Tests --filter Out_of_descriptors</c> after removing the Skip.
    /// </remarks>
    [Fact(Skip = "The .NET runtime aborts in ~1 run of 5 when every descriptor is spent (see remarks); run by hand.")]
    public async Task Out_of_descriptors_the_device_listener_pauses_and_the_control_socket_still_answers()
    {
        var dir = Directory.CreateTempSubdirectory("emunet-nofd-").FullName;
        string device = Path.Combine(dir, "g.sock");
        string control = Path.Combine(dir, "run", "nofd.sock");
        var (engine, lines, started) = StartEngine(dir, "nofd", $"--socket {device}");
        using var _ = engine;
        using var emulator = new Socket(AddressFamily.Unix, SocketType.Stream, ProtocolType.Unspecified);
        try
        {
            await started.WaitAsync(TimeSpan.FromSeconds(60));
            // Room for a couple of dozen more descriptors, then none.
            await SetOpenFileLimitAsync(engine.Id, Directory.GetFiles($"/proc/{engine.Id}/fd").Length + 24);
            // Each forward holds a listening socket: bind them until the process has no descriptor left. The control
            // connection stays open, or closing it would give one back.
            using var admin = ControlClient.Connect(control);
            ControlException? full = null;
            for (int i = 0; i < 200 && full is null; i++)
            {
                try { admin.AddForward("tcp:127.0.0.1:0:80"); }
                catch (ControlException e) { full = e; }
            }
            Assert.NotNull(full);

            // The emulator connects (the kernel completes it in the backlog); accepting it fails with EMFILE.
            await emulator.ConnectAsync(new UnixDomainSocketEndPoint(device));
            await WaitForLogAsync(lines, "out of file descriptors: the emulator's connection", TimeSpan.FromSeconds(10));
            double before = CpuSeconds(engine.Id);
            var watch = Stopwatch.StartNew();
            await Task.Delay(2000); // measuring a rate over a window, not waiting for a condition
            double used = CpuSeconds(engine.Id) - before;
            Assert.False(engine.HasExited, "the engine died");
            Assert.True(used < 0.3 * watch.Elapsed.TotalSeconds, $"the engine used {used:0.00} s of CPU in {watch.Elapsed.TotalSeconds:0.0} s while out of descriptors");

            // A new control client is answered, not left hanging in the backlog.
            var refused = await Task.Run(() => Assert.Throws<ControlException>(() =>
            {
                using var client = ControlClient.Connect(control, TimeSpan.FromSeconds(10));
                client.Stats();
            }));
            Assert.True(refused.Code == ControlErrorCodes.TooManyClients, $"{refused.Code}: {refused.Message}");
            Assert.Contains("out of file descriptors", refused.Message, StringComparison.Ordinal);
            // And again: the reserve was taken back after the first answer.
            var again = await Task.Run(() => Assert.Throws<ControlException>(() =>
            {
                using var client = ControlClient.Connect(control, TimeSpan.FromSeconds(10));
                client.Info();
            }));
            Assert.Equal(ControlErrorCodes.TooManyClients, again.Code);

            // Descriptors free again: the paused listener takes the waiting emulator, and the control socket serves.
            await SetOpenFileLimitAsync(engine.Id, 1024);
            await WaitForLogAsync(lines, "Emulator attached", TimeSpan.FromSeconds(15));
            var stats = await Task.Run(async () =>
            {
                // The reserve answer may still be closing when the limit rises: wait for the first client served.
                var deadline = Stopwatch.StartNew();
                while (true)
                {
                    try
                    {
                        using var after = ControlClient.Connect(control);
                        return after.Stats();
                    }
                    catch (ControlException e) when (e.Code == ControlErrorCodes.TooManyClients && deadline.Elapsed < TimeSpan.FromSeconds(15))
                    {
                        await Task.Delay(100);
                    }
                }
            });
            {
                Assert.True(stats.DropsByReason.TryGetValue("AcceptOutOfDescriptors", out long refusals) && refusals >= 1,
                    string.Join(", ", stats.DropsByReason.Select(kv => $"{kv.Key}={kv.Value}")));
            }
            lock (lines)
            {
                int warnings = lines.Count(l => l.Contains("out of file descriptors", StringComparison.Ordinal));
                Assert.True(warnings <= 3, $"{warnings} lines about descriptors:\n{string.Join('\n', lines)}");
            }
        }
        catch (Exception e) when (e is not Xunit.Sdk.XunitException)
        {
            lock (lines) throw new InvalidOperationException($"{e.Message}\nengine log:\n{string.Join('\n', lines)}", e);
        }
        finally
        {
            if (!engine.HasExited) engine.Kill();
            await engine.WaitForExitAsync();
            try { Directory.Delete(dir, true); } catch (IOException) { }
        }
    }
}
