using System.Buffers.Binary;
using System.Collections.Concurrent;
using System.Net;
using System.Net.Sockets;
using Emunet.Engine.Devices;
using Emunet.Engine.Devices.Stream;
using Emunet.Engine.Devices.VhostUser;
using Emunet.Engine.Diagnostics;
using Emunet.Engine.Link;
using Emunet.Engine.Runtime;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Abstractions;

namespace Emunet.Engine.Tests.Devices;

/// <summary>
/// The dial-out source against emulators played by plain sockets that listen: it waits for one that is not there
/// yet, attaches when it appears, dials again when it leaves, backs off boundedly, refuses what it must not dial,
/// and stops on dispose.
/// </summary>
public sealed class EmulatorDialerTests : IDisposable
{
    private static readonly TimeSpan Timeout = TimeSpan.FromSeconds(10);
    private readonly string _dir = Directory.CreateTempSubdirectory("emunet-dial-").FullName;
    private readonly EventLoop _loop = new();
    private readonly Counters _counters = new();
    private readonly RecordingHandler _handler = new();
    private readonly RecordingLogger _log = new();
    private readonly Thread _thread;
    private IGuestDevice? _device;

    public EmulatorDialerTests()
    {
        _thread = new Thread(_loop.Run) { IsBackground = true };
    }

    public void Dispose()
    {
        if (_thread.IsAlive)
        {
            _loop.Stop();
            _thread.Join();
        }
        _device?.Dispose();
        _loop.Dispose();
        Directory.Delete(_dir, true);
    }

    private string SocketPath => Path.Combine(_dir, "emu.sock");

    private IGuestDevice StartStream(string endpoint)
    {
        _device = new StreamDevice(_loop, EmulatorDialer.ForEndpoint(_loop, endpoint, "--connect", tcpAllowed: true, _log), _counters, _log) { Handler = _handler };
        _device.Start();
        _thread.Start();
        return _device;
    }

    private static int FreeTcpPort()
    {
        using var probe = new TcpListener(IPAddress.Loopback, 0);
        probe.Start();
        return ((IPEndPoint)probe.LocalEndpoint).Port;
    }

    private static Socket ListenUnix(string path)
    {
        var s = new Socket(AddressFamily.Unix, SocketType.Stream, ProtocolType.Unspecified);
        s.Bind(new UnixDomainSocketEndPoint(path));
        s.Listen(1);
        return s;
    }

    /// <summary>Accepts within the timeout, as the emulator's listening socket would.</summary>
    private static async Task<Socket> AcceptAsync(Socket listener)
    {
        using var cts = new CancellationTokenSource(Timeout);
        var s = await listener.AcceptAsync(cts.Token);
        s.ReceiveTimeout = 5000;
        return s;
    }

    private static byte[] Framed(byte[] frame)
    {
        var bytes = new byte[4 + frame.Length];
        BinaryPrimitives.WriteUInt32BigEndian(bytes, (uint)frame.Length);
        frame.CopyTo(bytes, 4);
        return bytes;
    }

    [Fact]
    public async Task A_tcp_emulator_that_starts_listening_later_is_dialled_and_carries_frames()
    {
        int port = FreeTcpPort();
        var device = StartStream($"tcp:127.0.0.1:{port}");
        Assert.Equal($"stream:connect:tcp:127.0.0.1:{port}", device.Description);
        // Several refused attempts first (the backoff starts at 100 ms), then the emulator listens.
        await WaitUntil(() => _log.Count("did not answer") >= 2);
        Assert.False(_handler.WaitConnected(TimeSpan.Zero));

        using var emulator = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
        emulator.Bind(new IPEndPoint(IPAddress.Loopback, port));
        emulator.Listen(1);
        using var peer = await AcceptAsync(emulator);
        Assert.True(_handler.WaitConnected(Timeout));
        var frame = Enumerable.Range(0, 60).Select(i => (byte)i).ToArray();
        peer.Send(Framed(frame));
        Assert.True(_handler.Frames.TryTake(out var got, Timeout));
        Assert.Equal(frame, got);
        Assert.Equal(1, _log.Count("Waiting for the emulator")); // once per wait, not per attempt
        Assert.Equal(1, _log.Count("attached on"));
    }

    [Fact]
    public async Task A_unix_emulator_is_dialled_again_each_time_it_leaves()
    {
        var device = StartStream($"unix:{SocketPath}");
        Assert.Equal($"stream:connect:unix:{SocketPath}", device.Description);
        await WaitUntil(() => _log.Count("did not answer") >= 1); // no socket file yet
        using var emulator = ListenUnix(SocketPath);
        for (int round = 1; round <= 3; round++)
        {
            using (var peer = await AcceptAsync(emulator))
            {
                Assert.True(_handler.WaitConnected(Timeout));
                Assert.True(await _loop.InvokeAsync(() => device.IsConnected));
            }
            Assert.True(_handler.WaitDisconnected(Timeout));
        }
        using var last = await AcceptAsync(emulator);
        Assert.True(_handler.WaitConnected(Timeout));
        Assert.Equal(4, _log.Count("Waiting for the emulator")); // at start and after each of the three drops
    }

    [Fact]
    public async Task A_restarted_emulator_on_the_same_tcp_port_is_dialled_again()
    {
        int port = FreeTcpPort();
        StartStream($"tcp:{port}"); // tcp:PORT is 127.0.0.1:PORT
        var first = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
        first.Bind(new IPEndPoint(IPAddress.Loopback, port));
        first.Listen(1);
        var peer = await AcceptAsync(first);
        Assert.True(_handler.WaitConnected(Timeout));
        // The emulator is gone altogether, listener first: refused attempts, then it is back.
        first.Dispose();
        peer.Dispose();
        Assert.True(_handler.WaitDisconnected(Timeout));
        int refusedBefore = _log.Count("did not answer");
        await WaitUntil(() => _log.Count("did not answer") > refusedBefore);
        using var second = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
        second.SetSocketOption(SocketOptionLevel.Socket, SocketOptionName.ReuseAddress, true);
        second.Bind(new IPEndPoint(IPAddress.Loopback, port));
        second.Listen(1);
        using var again = await AcceptAsync(second);
        Assert.True(_handler.WaitConnected(Timeout));
    }

    [Fact]
    public async Task A_peer_that_accepts_and_closes_at_once_is_not_dialled_in_a_tight_loop()
    {
        using var emulator = ListenUnix(SocketPath);
        StartStream($"unix:{SocketPath}");
        // Each connection ends at once; the next dial waits a backoff that keeps growing (100, 200, 400 ms, ...), so
        // four connections take at least 100 + 200 + 400 ms after the first. A slow machine only makes it longer.
        var clock = new System.Diagnostics.Stopwatch();
        for (int i = 0; i < 4; i++)
        {
            using var peer = await AcceptAsync(emulator);
            if (i == 0) clock.Start();
            Assert.True(_handler.WaitConnected(Timeout));
            peer.Shutdown(SocketShutdown.Both);
            Assert.True(_handler.WaitDisconnected(Timeout));
        }
        Assert.True(clock.ElapsedMilliseconds >= 600, $"four short-lived connections in {clock.ElapsedMilliseconds} ms");
    }

    [Fact]
    public void The_backoff_doubles_from_100_ms_and_stops_at_2_s()
    {
        // Driven by hand, loop not running: each OnTimer at the deadline is one refused attempt (no socket file).
        using var dialer = EmulatorDialer.ForEndpoint(_loop, SocketPath, "--connect", tcpAllowed: true, _log);
        var link = new EmulatorLink(_loop, dialer, "emulator", _counters, _log, new NoDevice());
        link.Start();
        var delays = new List<int> { dialer.RetryDelayMs };
        long deadline = 0;
        for (int i = 0; i < 7; i++)
        {
            deadline = dialer.OnTimer(long.MaxValue - 1);
            delays.Add(dialer.RetryDelayMs);
        }
        Assert.Equal([200, 400, 800, 1600, 2000, 2000, 2000, 2000], delays);
        Assert.NotEqual(long.MaxValue, deadline);
        Assert.Equal(1, _log.Count("Waiting for the emulator"));
        link.Dispose();
        Assert.Equal(long.MaxValue, dialer.OnTimer(long.MaxValue - 1)); // disposed: no more attempts
        Assert.False(File.Exists(SocketPath));
    }

    [Fact]
    public async Task Dispose_closes_the_attached_connection_and_stops_dialling()
    {
        using var emulator = ListenUnix(SocketPath);
        var device = StartStream(SocketPath); // a bare path is a Unix socket
        using var peer = await AcceptAsync(emulator);
        Assert.True(_handler.WaitConnected(Timeout));
        _loop.Stop();
        _thread.Join();
        device.Dispose();
        Assert.Equal(0, peer.Receive(new byte[1])); // end of stream: the engine closed its end
        Assert.True(_handler.WaitDisconnected(Timeout));
        Assert.Equal(0, _log.Count("Waiting for the emulator", after: "attached"));
    }

    [Fact]
    public async Task The_vhost_user_device_dials_a_front_end_that_listens()
    {
        using var frontEnd = ListenUnix(SocketPath);
        _device = new VhostUserDevice(_loop, EmulatorDialer.ForEndpoint(_loop, $"unix:{SocketPath}", "--connect", tcpAllowed: false, _log), _counters, _log) { Handler = _handler };
        Assert.Equal($"vhost-user:connect:unix:{SocketPath}", _device.Description);
        _device.Start();
        _thread.Start();
        using var peer = await AcceptAsync(frontEnd);
        Assert.True(_handler.WaitConnected(Timeout));
        Assert.True(await _loop.InvokeAsync(() => _device.IsConnected));
    }

    [Theory]
    [InlineData("tcp:10.0.2.2:5555", true, "not a loopback address")]
    [InlineData("tcp:192.168.1.20:5555", true, "listen=127.0.0.1:5555")]
    [InlineData("tcp:example.com:5555", true, "tcp:127.0.0.1:PORT")]
    [InlineData("tcp:127.0.0.1:0", true, "tcp:127.0.0.1:PORT")]
    [InlineData("tcp:127.0.0.1:x", true, "tcp:127.0.0.1:PORT")]
    [InlineData("unix:", true, "unix:PATH")]
    [InlineData("tcp:127.0.0.1:5555", false, "unix:PATH")]
    public void What_must_not_or_cannot_be_dialled_is_refused_naming_the_fix(string endpoint, bool tcpAllowed, string fix)
    {
        var e = Assert.Throws<EngineStartException>(() => EmulatorDialer.ForEndpoint(_loop, endpoint, "--connect", tcpAllowed, NullLogger.Instance));
        Assert.Contains(fix, e.Message);
        Assert.Contains("--connect", e.Message);
    }

    [Theory]
    [InlineData("tcp:localhost:5555", "tcp:127.0.0.1:5555")]
    [InlineData("tcp:[::1]:5555", "tcp:[::1]:5555")]
    [InlineData("tcp:127.0.0.2:5555", "tcp:127.0.0.2:5555")]
    public void Loopback_hosts_are_accepted(string endpoint, string description)
    {
        using var dialer = EmulatorDialer.ForEndpoint(_loop, endpoint, "--connect", true, NullLogger.Instance);
        Assert.Equal(description, dialer.Description);
    }

    [Theory]
    [InlineData(LinkKind.Stream, "tcp:127.0.0.1:5555", "stream:connect:tcp:127.0.0.1:5555")]
    [InlineData(LinkKind.Stream, "unix:/tmp/emunet-x.sock", "stream:connect:unix:/tmp/emunet-x.sock")]
    [InlineData(LinkKind.VhostUser, "unix:/tmp/emunet-x.sock", "vhost-user:connect:unix:/tmp/emunet-x.sock")]
    public void The_device_factory_builds_dialling_devices(LinkKind kind, string endpoint, string description)
    {
        using var device = DeviceFactory.Create(new LinkOptions(kind, LinkMode.Connect, endpoint), _loop, _counters, NullLogger.Instance);
        Assert.Equal(description, device.Description);
    }

    private static async Task WaitUntil(Func<bool> condition)
    {
        var until = DateTime.UtcNow + Timeout;
        while (!condition())
        {
            Assert.True(DateTime.UtcNow < until, "the condition did not come true in time");
            await Task.Delay(20);
        }
    }

    private sealed class NoDevice : IEmulatorConnectionHandler
    {
        public string Description => "test:device";
        public void OnAttached(Socket connection) { }
        public void OnConnectionEvents(uint events) { }
        public void OnDetached(string why) { }
    }

    private sealed class RecordingHandler : IFrameHandler
    {
        private readonly SemaphoreSlim _connected = new(0);
        private readonly SemaphoreSlim _disconnected = new(0);

        public BlockingCollection<byte[]> Frames { get; } = new();

        public bool WaitConnected(TimeSpan timeout) => _connected.Wait(timeout);
        public bool WaitDisconnected(TimeSpan timeout) => _disconnected.Wait(timeout);

        public void OnFrame(ReadOnlySpan<byte> frame) => Frames.Add(frame.ToArray());
        public void OnDeviceConnected() => _connected.Release();
        public void OnDeviceDisconnected() => _disconnected.Release();
        public void OnTransmitReady() { }
    }
}
