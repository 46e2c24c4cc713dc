using System.Diagnostics;
using System.Net;
using System.Net.Sockets;
using System.Runtime.InteropServices;
using Emunet.Engine.Control;
using Emunet.GuestRig;
using Xunit.Abstractions;

namespace Emunet.Integration.Tests;

/// <summary>
/// Faults around a real guest (the hardening issue), on the engine as users run it (<c>emunet run</c>, its own
/// process), all on one guest boot: a host peer that resets or never answers, SIGTERM in the middle of a transfer,
/// and SIGKILL, after which the next start must replace the stale sockets. (The guest app dying mid-transfer is
/// ForwardTests; QEMU killed and restarted is NatStackTests and VhostUserTests; a refused connect is NatStackTests.)
/// </summary>
public sealed class FaultTests(ITestOutputHelper output)
{
    private const int GuestEchoPort = 10977;
    private static readonly TimeSpan Step = TimeSpan.FromSeconds(90);

    [DllImport("libc", SetLastError = true)]
    private static extern int kill(int pid, int signal);

    private sealed class Tool : IDisposable
    {
        private readonly List<string> _lines = new();
        private readonly TaskCompletionSource _started = new(TaskCreationOptions.RunContinuationsAsynchronously);

        public Tool(string dir, string device, int forwardPort)
        {
            var psi = new ProcessStartInfo("dotnet") { RedirectStandardError = true, RedirectStandardOutput = true };
            foreach (var a in new[] { ToolProcessTests.ToolDll, "run", "--socket", device, "--name", "faults", "--forward", $"tcp:{forwardPort}:{GuestEchoPort}" })
                psi.ArgumentList.Add(a);
            psi.Environment["EMUNET_RUNTIME_DIR"] = Path.Combine(dir, "run");
            Process = Process.Start(psi)!;
            Process.ErrorDataReceived += (_, e) =>
            {
                if (e.Data is null) return;
                lock (_lines) _lines.Add(e.Data);
                if (e.Data.Contains("control socket", StringComparison.Ordinal)) _started.TrySetResult(); // "Instance ... ready on ...; control socket ..."
            };
            Process.OutputDataReceived += (_, e) => { if (e.Data is not null) lock (_lines) _lines.Add(e.Data); };
            Process.BeginErrorReadLine();
            Process.BeginOutputReadLine();
        }

        public Process Process { get; }

        public string Log
        {
            get { lock (_lines) return string.Join('\n', _lines); }
        }

        public async Task StartedAsync()
        {
            var exited = Process.WaitForExitAsync();
            if (await Task.WhenAny(_started.Task, exited).WaitAsync(Step) == exited)
                Assert.Fail($"emunet run exited with {Process.ExitCode} before it started:\n{Log}");
        }

        public async Task<int> StopAsync(int signal, TimeSpan timeout)
        {
            Assert.Equal(0, kill(Process.Id, signal));
            await Process.WaitForExitAsync().WaitAsync(timeout);
            return Process.ExitCode;
        }

        public void Dispose()
        {
            if (!Process.HasExited) Process.Kill();
            Process.Dispose();
        }
    }

    [Fact]
    public async Task Host_peer_resets_or_never_answers_then_SIGTERM_mid_transfer_stops_cleanly_and_a_SIGKILLed_engines_sockets_are_replaced()
    {
        byte[] peer = await LoadPeer.BinaryAsync();
        var dir = Directory.CreateTempSubdirectory("emunet-faults-").FullName;
        string device = Path.Combine(dir, "g.sock");
        string control = Path.Combine(dir, "run", "faults.sock");
        int forwardPort = LoopbackPorts.Free();

        // A host server that reads the guest's first bytes and answers with a reset (SO_LINGER 0).
        using var resetter = new TcpListener(IPAddress.Loopback, 0);
        resetter.Start();
        var reset = Task.Run(async () =>
        {
            using var s = await resetter.AcceptSocketAsync();
            var buffer = new byte[5];
            int got = 0;
            while (got < buffer.Length)
            {
                int n = await s.ReceiveAsync(buffer.AsMemory(got));
                if (n == 0) break;
                got += n;
            }
            s.LingerState = new LingerOption(true, 0);
            s.Close();
            return got;
        });
        // A host server that never answers: its accept queue (backlog 0) is full, so the kernel drops new SYNs.
        using var silent = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
        silent.Bind(new IPEndPoint(IPAddress.Loopback, 0));
        silent.Listen(0);
        int silentPort = ((IPEndPoint)silent.LocalEndPoint!).Port;
        using var filler = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
        await filler.ConnectAsync(IPAddress.Loopback, silentPort);

        var first = new Tool(dir, device, forwardPort);
        Tool? second = null, third = null;
        QemuGuest? guest = null;
        try
        {
            await first.StartedAsync();
            guest = QemuGuest.Start(new GuestOptions
            {
                NetworkArgs = GuestNetwork.StreamUnix(device),
                Files = new Dictionary<string, byte[]> { ["loadpeer"] = peer },
                Timeout = TimeSpan.FromMinutes(5),
                Script = $"""
                    cp /loadpeer /tmp/lp && chmod +x /tmp/lp
                    /tmp/lp echo {GuestEchoPort} > /tmp/echo.log 2>&1 &
                    while ! netstat -ltn | grep -q ':{GuestEchoPort} '; do usleep 50000; done
                    printf 'hello' | nc 10.0.2.2 {((IPEndPoint)resetter.LocalEndpoint).Port}; echo "reset rc=$?"
                    nc -w 3 10.0.2.2 {silentPort} </dev/null; echo "silent rc=$?"
                    echo ready
                    sleep 600
                    """,
            });

            // The reset reaches the guest app (its nc ends instead of hanging), after the host saw its bytes.
            await guest.WaitForLineAsync(l => l.StartsWith("reset rc=", StringComparison.Ordinal), Step);
            Assert.Equal(5, await reset.WaitAsync(Step));
            // A peer that never answers: the guest's own connect timeout ends it cleanly.
            var silentRc = await guest.WaitForLineAsync(l => l.StartsWith("silent rc=", StringComparison.Ordinal), Step);
            Assert.NotEqual("silent rc=0", silentRc);
            await guest.WaitForLineAsync(l => l == "ready", Step);
            using (var admin = ControlClient.Connect(control))
            {
                var watch = Stopwatch.StartNew();
                int resetPort = ((IPEndPoint)resetter.LocalEndpoint).Port;
                while (admin.ListConnections("tcp").Any(c => c.HostRemote?.EndsWith($":{resetPort}", StringComparison.Ordinal) == true))
                {
                    Assert.True(watch.Elapsed < TimeSpan.FromSeconds(30), "the reset connection's flow was not removed");
                    await Task.Delay(100);
                }
                var left = admin.ListConnections("tcp");
                output.WriteLine($"flows after the faults: {string.Join(", ", left.Select(c => $"{c.HostRemote} {c.State}"))}");
            }

            // SIGTERM while a forwarded connection is moving data: the engine stops cleanly, the client hears the
            // end, and the runtime folder's sockets are gone.
            using (var client = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp))
            {
                await client.ConnectAsync(IPAddress.Loopback, forwardPort);
                var chunk = new byte[64 * 1024];
                Random.Shared.NextBytes(chunk);
                long echoed = 0;
                var movedEnough = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
                using var stopPump = new CancellationTokenSource();
                var pump = Task.Run(async () =>
                {
                    try { while (!stopPump.IsCancellationRequested) await client.SendAsync(chunk, SocketFlags.None, stopPump.Token); }
                    catch (Exception e) when (e is SocketException or OperationCanceledException or ObjectDisposedException) { }
                });
                var reader = Task.Run(async () =>
                {
                    var buffer = new byte[64 * 1024];
                    try
                    {
                        while (true)
                        {
                            int n = await client.ReceiveAsync(buffer, SocketFlags.None);
                            if (n == 0) return "eof";
                            if (Interlocked.Add(ref echoed, n) >= 1 << 20) movedEnough.TrySetResult();
                        }
                    }
                    catch (SocketException e) { return e.SocketErrorCode.ToString(); }
                });
                await movedEnough.Task.WaitAsync(Step);
                int code = await first.StopAsync(15, TimeSpan.FromSeconds(20));
                Assert.True(code == 0, $"exit {code}:\n{first.Log}");
                string end = await reader.WaitAsync(TimeSpan.FromSeconds(10));
                output.WriteLine($"SIGTERM after {Interlocked.Read(ref echoed) >> 10} KiB echoed: the client saw {end}");
                stopPump.Cancel();
                await pump;
            }
            Assert.False(File.Exists(device), "SIGTERM left the device socket behind");
            Assert.False(File.Exists(control), "SIGTERM left the control socket behind");

            // SIGKILL leaves both sockets behind; the next start replaces them.
            second = new Tool(dir, device, forwardPort);
            await second.StartedAsync();
            await second.StopAsync(9, TimeSpan.FromSeconds(20));
            Assert.True(File.Exists(device) && File.Exists(control), "SIGKILL should have left the sockets behind");
            third = new Tool(dir, device, forwardPort);
            await third.StartedAsync();
            using (var admin = ControlClient.Connect(control))
                Assert.Equal("faults", admin.Info().Name);
            Assert.Equal(0, await third.StopAsync(15, TimeSpan.FromSeconds(20)));
            Assert.False(File.Exists(device) || File.Exists(control), "the sockets were left behind");
        }
        finally
        {
            guest?.Dispose();
            first.Dispose();
            second?.Dispose();
            third?.Dispose();
            try { Directory.Delete(dir, true); } catch (IOException) { }
        }
    }

    /// <summary>
    /// The guest reboots in the same QEMU (the link stays up): its old connections end (the rebooted kernel resets
    /// them, and their flows go), it takes a lease again, and forwards reach the new boot's app.
    /// </summary>
    [Fact]
    public async Task A_guest_reboot_ends_its_flows_and_after_a_new_lease_forwards_work_again()
    {
        byte[] peer = await LoadPeer.BinaryAsync();
        using var engine = new TestEngine();
        using var control = new GuestControl();
        using var guest = QemuGuest.Start(new GuestOptions
        {
            NetworkArgs = GuestNetwork.StreamUnix(engine.SocketPath),
            Files = new Dictionary<string, byte[]> { ["loadpeer"] = peer },
            AllowReboot = true,
            Timeout = TimeSpan.FromMinutes(5),
            Script = $"""
                cp /loadpeer /tmp/lp && chmod +x /tmp/lp
                /tmp/lp echo {GuestEchoPort} > /tmp/echo.log 2>&1 &
                while ! netstat -ltn | grep -q ':{GuestEchoPort} '; do usleep 50000; done
                echo "ready $(cat /proc/sys/kernel/random/boot_id) $(ip -4 addr show eth0 | grep -o 'inet [0-9.]*')"
                {control.WaitLine}
                [ "$cmd" = reboot ] && reboot -f
                sleep 600
                """,
        });
        var first = await guest.WaitForLineAsync(l => l.StartsWith("ready ", StringComparison.Ordinal), Step);
        var forward = await engine.Engine.AddForwardAsync(Emunet.Engine.Forwarding.ForwardSpec.Create(Emunet.Engine.Forwarding.ForwardProtocol.Tcp, 0, GuestEchoPort));
        using var old = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
        await old.ConnectAsync(IPAddress.Loopback, forward.BoundPort);
        await EchoAsync(old, "before the reboot");
        var oldPort = ((IPEndPoint)old.LocalEndPoint!).Port;

        await control.SendAsync("reboot", Step);
        var second = await guest.WaitForLineAsync(l => l.StartsWith("ready ", StringComparison.Ordinal) && l != first, Step);
        Assert.Equal(first.Split(' ')[2..], second.Split(' ')[2..]); // the same address, leased again
        output.WriteLine($"{first}\n{second}");

        // The old connection: the rebooted guest knows nothing of it, so what the client sends is answered with a reset.
        var end = await Task.Run(async () =>
        {
            try
            {
                await old.SendAsync("after"u8.ToArray());
                var buffer = new byte[16];
                return await old.ReceiveAsync(buffer) == 0 ? "eof" : "data";
            }
            catch (SocketException e) { return e.SocketErrorCode.ToString(); }
        }).WaitAsync(Step);
        Assert.NotEqual("data", end);
        var watch = Stopwatch.StartNew();
        while ((await engine.Engine.ListConnectionsAsync()).Any(c => c.HostRemoteEndPoint?.Port == oldPort))
        {
            Assert.True(watch.Elapsed < TimeSpan.FromSeconds(30), "the old connection's flow outlived the reboot");
            await Task.Delay(100);
        }

        // And the forward reaches the new boot's app.
        using var fresh = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
        await fresh.ConnectAsync(IPAddress.Loopback, forward.BoundPort);
        await EchoAsync(fresh, "after the reboot");
    }

    private static async Task EchoAsync(Socket s, string text)
    {
        var sent = System.Text.Encoding.ASCII.GetBytes(text);
        await s.SendAsync(sent);
        var back = new byte[sent.Length];
        int got = 0;
        while (got < back.Length)
        {
            int n = await s.ReceiveAsync(back.AsMemory(got)).AsTask().WaitAsync(Step);
            Assert.True(n > 0, $"the echo closed after {got} bytes");
            got += n;
        }
        Assert.Equal(text, System.Text.Encoding.ASCII.GetString(back));
    }
}
