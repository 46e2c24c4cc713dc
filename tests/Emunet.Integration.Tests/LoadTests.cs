using System.Diagnostics;
using System.Net;
using System.Net.Sockets;
using System.Security.Cryptography;
using Emunet.Engine.Forwarding;
using Emunet.Engine.Stack.Nat;
using Emunet.GuestRig;
using Xunit.Abstractions;

namespace Emunet.Integration.Tests;

/// <summary>
/// Load with integrity (the hardening issue): a thousand forwarded and three hundred guest-outbound TCP connections
/// open at once on each link, random data checked by sha256 end to end, and afterwards no flow left. The guest side is
/// <c>tests/guest/loadpeer.c</c>, one epoll process (a process per connection is more than a TCG guest can run).
/// </summary>
public sealed class LoadTests(ITestOutputHelper output)
{
    private const int Forwarded = 1000;
    private const int Outbound = 300;
    /// <summary>Per connection, each way: small, so that the count, not the volume, is what is tested.</summary>
    private const int Bytes = 16 * 1024;
    private const int GuestEchoPort = 10977;
    private static readonly TimeSpan Step = TimeSpan.FromSeconds(120);

    [Theory]
    [InlineData("stream")]
    [InlineData("vhost-user")]
    public async Task A_thousand_forwarded_and_300_outbound_connections_at_once_carry_random_data_intact_and_leave_no_flow(string link)
    {
        bool vhostUser = link == "vhost-user";
        byte[] peer = await LoadPeer.BinaryAsync();
        using var engine = new TestEngine(vhostUser: vhostUser);
        using var echo = new HashingEchoServer();
        using var control = new GuestControl();
        using var guest = QemuGuest.Start(new GuestOptions
        {
            NetworkArgs = vhostUser ? GuestNetwork.VhostUser(engine.SocketPath) : GuestNetwork.StreamUnix(engine.SocketPath),
            Files = new Dictionary<string, byte[]> { ["loadpeer"] = peer },
            Timeout = TimeSpan.FromMinutes(5),
            Script = $"""
                cp /loadpeer /tmp/lp && chmod +x /tmp/lp
                /tmp/lp echo {GuestEchoPort} > /tmp/echo.log 2>&1 &
                while ! netstat -ltn | grep -q ':{GuestEchoPort} '; do usleep 50000; done
                echo ready
                {control.WaitLine}
                /tmp/lp client 10.0.2.2 {echo.Port} {Outbound} {Bytes}
                echo "outbound rc=$?"
                {control.WaitLine}
                """,
        });
        try
        {
            await guest.WaitForLineAsync(l => l == "ready", Step);
            var forward = await engine.Engine.AddForwardAsync(ForwardSpec.Create(ForwardProtocol.Tcp, 0, GuestEchoPort));
            var watch = Stopwatch.StartNew();

            // A thousand clients connect, and all are established through to the guest before any data moves.
            var clients = new Socket[Forwarded];
            await Task.WhenAll(Enumerable.Range(0, Forwarded).Select(async i =>
            {
                clients[i] = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
                await clients[i].ConnectAsync(IPAddress.Loopback, forward.BoundPort);
            }));
            await WaitForAsync(engine, "1000 forwarded connections established", c =>
                c.Count(x => x.Direction == FlowDirection.Forwarded && x.State == "ESTABLISHED") == Forwarded, Step);
            output.WriteLine($"{link}: {Forwarded} forwarded connections established in {watch.Elapsed.TotalSeconds:0.0} s");

            await Task.WhenAll(clients.Select(RoundTripAsync)).WaitAsync(Step);
            foreach (var c in clients) c.Dispose();
            output.WriteLine($"{link}: {Forwarded} forwarded round trips checked at {watch.Elapsed.TotalSeconds:0.0} s");

            // Three hundred guest connections out to the host, all open at once, through the same engine.
            await control.SendAsync("go", Step);
            var rc = await guest.WaitForLineAsync(l => l.StartsWith("outbound rc=", StringComparison.Ordinal), Step);
            Assert.True(rc == "outbound rc=0", string.Join('\n', guest.Lines));
            var expected = Enumerable.Range(0, Outbound).Select(i => Convert.ToHexString(SHA256.HashData(LoadPeer.Stream(i, Bytes)))).Order().ToList();
            Assert.Equal(expected, echo.Digests().Order().ToList());
            output.WriteLine($"{link}: {Outbound} outbound round trips checked at {watch.Elapsed.TotalSeconds:0.0} s");

            // Every flow ends with its connection (the guest is still attached; only the command channel is open).
            await WaitForAsync(engine, "no flow left but the command channel", c =>
                c.All(x => x.HostRemoteEndPoint?.Port == control.Port), Step);
            var stats = await engine.Engine.GetStatisticsAsync();
            output.WriteLine($"{link}: flows gone at {watch.Elapsed.TotalSeconds:0.0} s; drops: {string.Join(", ", stats.DropsByReason.Where(kv => kv.Value > 0).Select(kv => $"{kv.Key}={kv.Value}"))}");
            await control.SendAsync("end", Step);
            var result = await guest.WaitForExitAsync();
            Assert.True(result.ExitCode == 0, result.ToString());
        }
        catch (Exception e) when (e is not Xunit.Sdk.XunitException)
        {
            var stats = await engine.Engine.GetStatisticsAsync();
            throw new InvalidOperationException($"{e.GetType().Name}: {e.Message}\ndrops: {string.Join(", ", stats.DropsByReason.Where(kv => kv.Value > 0).Select(kv => $"{kv.Key}={kv.Value}"))}\nguest:\n{string.Join('\n', guest.Lines.TakeLast(20))}", e);
        }
    }

    /// <summary>VmRSS or VmHWM of <paramref name="pid"/> in MiB, from /proc/PID/status.</summary>
    private static double MemoryMiB(int pid, string field)
    {
        foreach (var line in File.ReadLines($"/proc/{pid}/status"))
            if (line.StartsWith(field + ":", StringComparison.Ordinal))
                return long.Parse(line[(field.Length + 1)..].Trim().Split(' ')[0], System.Globalization.CultureInfo.InvariantCulture) / 1024.0;
        throw new InvalidOperationException($"no {field} in /proc/{pid}/status");
    }

    /// <summary>
    /// The memory target of the hardening issue: a thousand forwarded connections each pushing 2 MiB into a guest
    /// app that does not read keep the engine (its own process, <c>emunet run</c>) under 300 MiB, and once the
    /// clients close and QEMU is gone it is back within 64 MiB of where it started.
    /// </summary>
    [Fact]
    public async Task A_thousand_connections_pushing_2_MiB_into_a_guest_that_does_not_read_keep_the_engine_under_300_MiB()
    {
        const int PushBytes = 2 * 1024 * 1024;
        byte[] peer = await LoadPeer.BinaryAsync();
        var dir = Directory.CreateTempSubdirectory("emunet-mem-").FullName;
        string sock = Path.Combine(dir, "g.sock");
        int port = LoopbackPorts.Free();
        var psi = new ProcessStartInfo("dotnet") { RedirectStandardError = true, RedirectStandardOutput = true };
        foreach (var a in new[] { ToolProcessTests.ToolDll, "run", "--socket", sock, "--name", "mem", "--forward", $"tcp:{port}:{GuestEchoPort}" })
            psi.ArgumentList.Add(a);
        psi.Environment["EMUNET_RUNTIME_DIR"] = Path.Combine(dir, "run");
        using var engine = Process.Start(psi)!;
        var started = new TaskCompletionSource();
        // "ready on" comes once the control socket listens ("started on", before it, only says the device does).
        engine.ErrorDataReceived += (_, e) => { if (e.Data?.Contains("' ready on ", StringComparison.Ordinal) == true) started.TrySetResult(); };
        engine.OutputDataReceived += (_, _) => { };
        engine.BeginErrorReadLine();
        engine.BeginOutputReadLine();
        var clients = new List<Socket>();
        QemuGuest? guest = null;
        try
        {
            await started.Task.WaitAsync(Step);
            using var control = Emunet.Engine.Control.ControlClient.Connect(Path.Combine(dir, "run", "mem.sock"));
            double startRss = MemoryMiB(engine.Id, "VmRSS");
            guest = QemuGuest.Start(new GuestOptions
            {
                NetworkArgs = GuestNetwork.StreamUnix(sock),
                Files = new Dictionary<string, byte[]> { ["loadpeer"] = peer },
                Timeout = TimeSpan.FromMinutes(5),
                Script = $"""
                    cp /loadpeer /tmp/lp && chmod +x /tmp/lp
                    /tmp/lp hold {GuestEchoPort} > /tmp/hold.log 2>&1 &
                    while ! netstat -ltn | grep -q ':{GuestEchoPort} '; do usleep 50000; done
                    echo ready
                    sleep 600
                    """,
            });
            await guest.WaitForLineAsync(l => l == "ready", Step);

            var payload = RandomNumberGenerator.GetBytes(PushBytes);
            var sends = new List<Task>();
            for (int i = 0; i < Forwarded; i++)
            {
                var c = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
                clients.Add(c);
                await c.ConnectAsync(IPAddress.Loopback, port);
                sends.Add(c.SendAsync(payload).ContinueWith(_ => { }, TaskScheduler.Default)); // never completes while the guest does not read
            }
            // Wait until every connection is through to the guest and the data has stopped moving: the engine holds
            // all it is going to hold.
            var watch = Stopwatch.StartNew();
            long lastToGuest = -1;
            int steady = 0;
            while (steady < 3)
            {
                Assert.True(watch.Elapsed < Step, "the push never settled");
                await Task.Delay(1000); // sampling the engine's counters until they settle
                var stats = await Task.Run(control.Stats);
                steady = stats.TcpFlows >= Forwarded && stats.BytesToGuest == lastToGuest ? steady + 1 : 0;
                lastToGuest = stats.BytesToGuest;
            }
            double peak = MemoryMiB(engine.Id, "VmHWM");
            var settled = await Task.Run(control.Stats);
            output.WriteLine($"start {startRss:0} MiB, peak {peak:0} MiB with {settled.TcpFlows} flows, {settled.BytesToGuest / (1 << 20)} MiB to the guest, buffers {settled.BufferBytes / (1 << 20)} of {settled.BufferBudget / (1 << 20)} MiB");
            Assert.True(peak < 300, $"the engine peaked at {peak:0} MiB");

            foreach (var c in clients) c.Dispose();
            clients.Clear();
            guest.Dispose();
            guest = null;
            // The flows end with their clients and the guest; then the memory goes back.
            watch.Restart();
            double rss;
            while (true)
            {
                var stats = await Task.Run(control.Stats);
                rss = MemoryMiB(engine.Id, "VmRSS");
                if (stats.TcpFlows == 0 && rss <= startRss + 64) break;
                Assert.True(watch.Elapsed < TimeSpan.FromSeconds(60), $"after 60 s: {stats.TcpFlows} TCP flows, {rss:0} MiB against {startRss:0} MiB at start");
                await Task.Delay(500);
            }
            output.WriteLine($"back to {rss:0} MiB (start {startRss:0} MiB) in {watch.Elapsed.TotalSeconds:0.0} s");
        }
        finally
        {
            foreach (var c in clients) c.Dispose();
            guest?.Dispose();
            if (!engine.HasExited) engine.Kill();
            await engine.WaitForExitAsync();
            try { Directory.Delete(dir, true); } catch (IOException) { }
        }
    }

    /// <summary>Sends <see cref="Bytes"/> random bytes, reads the echo while sending, compares their sha256.</summary>
    private static async Task RoundTripAsync(Socket client)
    {
        var sent = RandomNumberGenerator.GetBytes(Bytes);
        var back = new byte[Bytes];
        var send = client.SendAsync(sent);
        int got = 0;
        while (got < back.Length)
        {
            int n = await client.ReceiveAsync(back.AsMemory(got));
            if (n == 0) throw new IOException($"the echo closed after {got} of {Bytes} bytes");
            got += n;
        }
        Assert.Equal(Bytes, await send);
        Assert.Equal(Convert.ToHexString(SHA256.HashData(sent)), Convert.ToHexString(SHA256.HashData(back)));
    }

    private static async Task WaitForAsync(TestEngine engine, string what, Func<IReadOnlyList<ConnectionInfo>, bool> done, TimeSpan timeout)
    {
        var watch = Stopwatch.StartNew();
        while (true)
        {
            var list = await engine.Engine.ListConnectionsAsync();
            if (done(list)) return;
            if (watch.Elapsed > timeout)
                Assert.Fail($"{what}: not within {timeout.TotalSeconds} s; {list.Count} flows: {string.Join(", ", list.GroupBy(c => $"{c.Direction}/{c.State}").Select(g => $"{g.Key}={g.Count()}"))}");
            await Task.Delay(250);
        }
    }

    /// <summary>
    /// The host end of the guest's outbound connections: echoes every byte and keeps the sha256 of what each
    /// connection carried, to compare with what the guest generated.
    /// </summary>
    private sealed class HashingEchoServer : IDisposable
    {
        private readonly TcpListener _listener = new(IPAddress.Loopback, 0);
        private readonly CancellationTokenSource _stop = new();
        private readonly List<string> _digests = new();

        public HashingEchoServer()
        {
            _listener.Start(1024);
            _ = AcceptAsync();
        }

        public int Port => ((IPEndPoint)_listener.LocalEndpoint).Port;

        public List<string> Digests()
        {
            lock (_digests) return new List<string>(_digests);
        }

        private async Task AcceptAsync()
        {
            while (!_stop.IsCancellationRequested)
            {
                Socket s;
                try { s = await _listener.AcceptSocketAsync(_stop.Token); }
                catch (Exception e) when (e is OperationCanceledException or SocketException or ObjectDisposedException) { return; }
                _ = EchoAsync(s);
            }
        }

        private async Task EchoAsync(Socket s)
        {
            using (s)
            using (var hash = IncrementalHash.CreateHash(HashAlgorithmName.SHA256))
            {
                var buffer = new byte[16384];
                try
                {
                    while (true)
                    {
                        int n = await s.ReceiveAsync(buffer, SocketFlags.None, _stop.Token);
                        if (n == 0) break;
                        hash.AppendData(buffer, 0, n);
                        int off = 0;
                        while (off < n) off += await s.SendAsync(buffer.AsMemory(off, n - off), SocketFlags.None, _stop.Token);
                    }
                }
                catch (Exception e) when (e is OperationCanceledException or SocketException) { return; }
                var digest = Convert.ToHexString(hash.GetHashAndReset());
                lock (_digests) _digests.Add(digest);
            }
        }

        public void Dispose()
        {
            _stop.Cancel();
            _listener.Stop();
        }
    }
}

/// <summary>The guest helper <c>tests/guest/loadpeer.c</c>, built static once per test run, and the stream it sends.</summary>
internal static class LoadPeer
{
    private static readonly Lazy<Task<byte[]>> Binary = new(BuildAsync);

    public static Task<byte[]> BinaryAsync() => Binary.Value;

    private static async Task<byte[]> BuildAsync()
    {
        var source = Path.Combine(RepoPaths.Root, "tests", "guest", "loadpeer.c");
        var output = Path.Combine(Directory.CreateTempSubdirectory("emunet-loadpeer-").FullName, "loadpeer");
        var psi = new ProcessStartInfo("gcc", ["-static", "-O2", "-o", output, source]) { RedirectStandardError = true };
        using var gcc = Process.Start(psi)!;
        string errors = await gcc.StandardError.ReadToEndAsync();
        await gcc.WaitForExitAsync();
        Assert.True(gcc.ExitCode == 0, $"gcc -static {source}: {errors}");
        var bytes = await File.ReadAllBytesAsync(output);
        Directory.Delete(Path.GetDirectoryName(output)!, true);
        return bytes;
    }

    /// <summary>What loadpeer's connection <paramref name="index"/> sends: xorshift32 seeded with 0x9E3779B9 ^ (index + 1), low bytes.</summary>
    public static byte[] Stream(int index, int length)
    {
        uint x = 0x9E3779B9u ^ (uint)(index + 1);
        var bytes = new byte[length];
        for (int i = 0; i < length; i++)
        {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            bytes[i] = (byte)x;
        }
        return bytes;
    }
}
