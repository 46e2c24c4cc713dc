using System.Net;
using System.Net.Sockets;
using Emunet.Engine.Devices;
using Emunet.Engine.Devices.Stream;
using Emunet.Engine.Devices.VhostUser;
using Emunet.Engine.Diagnostics;
using Emunet.Engine.Link;
using Emunet.Engine.Runtime;
using Microsoft.Extensions.Logging.Abstractions;

namespace Emunet.Engine.Tests.Devices;

/// <summary>
/// The emulator listener and link both devices share: one emulator at a time, a second one refused and counted, the
/// next one attached when the first leaves, the socket file removed on dispose; and the link's contract with its
/// source, which the dialer relies on (EmulatorDialerTests).
/// </summary>
public sealed class EmulatorListenerTests : IDisposable
{
    public const string Stream = "stream";
    public const string VhostUser = "vhost-user";

    private readonly string _dir = Directory.CreateTempSubdirectory("emunet-listen-").FullName;
    private readonly EventLoop _loop = new();
    private readonly Counters _counters = new();
    private readonly RecordingHandler _handler = new();
    private readonly Thread _thread;
    private IGuestDevice? _device;

    public EmulatorListenerTests()
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

    /// <summary>Starts a device of <paramref name="kind"/> on <paramref name="endpoint"/> (default: a socket in the test folder) and runs the loop.</summary>
    private IGuestDevice Start(string kind, string? endpoint = null)
    {
        _device = kind == Stream
            ? new StreamDevice(_loop, endpoint ?? SocketPath, _counters, NullLogger.Instance)
            : new VhostUserDevice(_loop, endpoint ?? SocketPath, _counters, NullLogger.Instance);
        _device.Handler = _handler;
        _device.Start();
        _thread.Start();
        return _device;
    }

    private Socket Connect()
    {
        var s = new Socket(AddressFamily.Unix, SocketType.Stream, ProtocolType.Unspecified);
        s.Connect(new UnixDomainSocketEndPoint(SocketPath));
        s.ReceiveTimeout = 5000;
        return s;
    }

    /// <summary>True when the device closed its end of <paramref name="s"/>.</summary>
    private static bool ClosedByDevice(Socket s)
    {
        int n = s.Receive(new byte[1], 0, 1, SocketFlags.None, out var error);
        return n == 0 && error is SocketError.Success or SocketError.ConnectionReset;
    }

    [Theory]
    [InlineData(Stream)]
    [InlineData(VhostUser)]
    public async Task A_second_emulator_is_refused_and_counted_while_one_is_attached(string kind)
    {
        var device = Start(kind);
        using var first = Connect();
        Assert.True(_handler.WaitConnected(1));
        using var second = Connect();
        Assert.True(ClosedByDevice(second), "the second emulator was not refused");
        Assert.Equal(1, await _loop.InvokeAsync(() => _counters.Drops(DropReason.DeviceProtocolError)));
        Assert.True(await _loop.InvokeAsync(() => device.IsConnected));
        Assert.Equal(0, _handler.DisconnectedCount);
        Assert.False(_handler.WaitConnected(1, TimeSpan.FromMilliseconds(100)));
    }

    [Theory]
    [InlineData(Stream)]
    [InlineData(VhostUser)]
    public async Task After_an_emulator_leaves_the_next_one_is_attached(string kind)
    {
        var device = Start(kind);
        using (Connect()) Assert.True(_handler.WaitConnected(1));
        Assert.True(_handler.WaitDisconnected(1));
        Assert.False(await _loop.InvokeAsync(() => device.IsConnected));
        Assert.Equal(0, await _loop.InvokeAsync(() => device.TransmitSpace));
        using var next = Connect();
        Assert.True(_handler.WaitConnected(1));
        Assert.True(await _loop.InvokeAsync(() => device.IsConnected));
        Assert.Equal(0, await _loop.InvokeAsync(() => _counters.Drops(DropReason.DeviceProtocolError)));
    }

    [Theory]
    [InlineData(Stream)]
    [InlineData(VhostUser)]
    public void Dispose_detaches_the_emulator_and_removes_the_socket_file(string kind)
    {
        var device = Start(kind);
        Assert.True(Emunet.Engine.Interop.Libc.IsSocket(SocketPath));
        using var emulator = Connect();
        Assert.True(_handler.WaitConnected(1));
        _loop.Stop();
        _thread.Join();
        device.Dispose();
        Assert.Equal(1, _handler.DisconnectedCount);
        Assert.True(ClosedByDevice(emulator));
        Assert.False(File.Exists(SocketPath));
        device.Dispose(); // twice is harmless
    }

    [Fact]
    public async Task The_stream_device_listens_on_a_tcp_endpoint()
    {
        int port;
        using (var probe = new TcpListener(IPAddress.Loopback, 0))
        {
            probe.Start();
            port = ((IPEndPoint)probe.LocalEndpoint).Port;
        }
        var device = Start(Stream, $"tcp:127.0.0.1:{port}");
        Assert.Equal($"stream:tcp:127.0.0.1:{port}", device.Description);
        using var emulator = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
        emulator.Connect(IPAddress.Loopback, port);
        Assert.True(_handler.WaitConnected(1));
        Assert.True(await _loop.InvokeAsync(() => device.IsConnected));
    }

    [Theory]
    [InlineData("tcp:127.0.0.1")]
    [InlineData("tcp:localhost:80")]
    [InlineData("tcp:127.0.0.1:0")]
    public void A_malformed_tcp_endpoint_is_refused_with_a_clear_error(string endpoint)
    {
        using var device = new StreamDevice(_loop, endpoint, _counters, NullLogger.Instance);
        var e = Assert.Throws<EngineStartException>(device.Start);
        Assert.Contains("use tcp:127.0.0.1:PORT", e.Message);
    }

    [Theory]
    [InlineData("tcp:0.0.0.0:{0}")]
    [InlineData("tcp:[::]:{0}")]
    public void A_tcp_socket_off_loopback_is_refused_and_nothing_listens(string form)
    {
        int port = FreeTcpPort();
        using var device = new StreamDevice(_loop, string.Format(System.Globalization.CultureInfo.InvariantCulture, form, port), _counters, NullLogger.Instance);
        var e = Assert.Throws<EngineStartException>(device.Start);
        Assert.Contains("loopback only", e.Message);
        Assert.Contains($"tcp:127.0.0.1:{port}", e.Message);
        using var probe = new System.Net.Sockets.TcpListener(System.Net.IPAddress.Loopback, port);
        probe.Start(); // the port was never taken
    }

    /// <summary>Waits until <paramref name="condition"/> (asked on the loop thread) holds; fails after 5 s.</summary>
    private async Task WaitOnLoop(Func<bool> condition, string what)
    {
        var deadline = DateTime.UtcNow + TimeSpan.FromSeconds(5);
        while (!await _loop.InvokeAsync(condition))
        {
            if (DateTime.UtcNow > deadline) Assert.Fail($"not within 5 s: {what}");
            await Task.Delay(5);
        }
    }

    /// <summary>A stream device over a listener the test keeps, with every new descriptor in the headroom.</summary>
    private EmulatorListener StartAtHeadroom(DescriptorHeadroom headroom)
    {
        _loop.Headroom = headroom;
        var listener = EmulatorListener.ForUnixPath(_loop, SocketPath, "--socket", NullLogger.Instance);
        _device = new StreamDevice(_loop, listener, _counters, NullLogger.Instance);
        _device.Handler = _handler;
        _device.Start();
        _thread.Start();
        return listener;
    }

    [Fact]
    public async Task While_the_next_descriptor_would_be_in_the_headroom_the_emulator_waits_in_the_backlog_and_then_attaches()
    {
        // A limit of 4 keeps 1 free: every descriptor from 3 up is in the headroom, so the probe always says no.
        var listener = StartAtHeadroom(DescriptorHeadroom.ForLimit(4));
        using var emulator = Connect();
        await WaitOnLoop(() => _counters.Drops(DropReason.AcceptOutOfDescriptors) >= 1 && listener.PausesThisEpisode != 0, "the listener held back and paused");
        Assert.False(_handler.WaitConnected(1, TimeSpan.Zero));
        long refusals = await _loop.InvokeAsync(() => _counters.Drops(DropReason.AcceptOutOfDescriptors));
        Assert.True(refusals < 20, $"{refusals} refusals at once: the listener did not back off");

        await _loop.InvokeAsync(() => _loop.Headroom = DescriptorHeadroom.Unlimited);
        Assert.True(_handler.WaitConnected(1, TimeSpan.FromSeconds(5)), "the waiting emulator was not attached once descriptors were free");
        Assert.Equal(0, await _loop.InvokeAsync(() => _counters.Drops(DropReason.DeviceProtocolError)));
    }

    [Fact]
    public async Task An_emulator_accepted_onto_a_headroom_descriptor_is_reset_and_the_listener_pauses()
    {
        // The probe sees a free descriptor (as when another thread takes it before the accept), the accepted one is in the headroom.
        var listener = StartAtHeadroom(DescriptorHeadroom.ForLimit(4).WithoutProbe());
        using var emulator = Connect();
        Assert.True(ClosedByDevice(emulator), "the emulator accepted onto a headroom descriptor was kept");
        await WaitOnLoop(() => _counters.Drops(DropReason.AcceptOutOfDescriptors) == 1 && listener.PausesThisEpisode != 0, "one refusal counted and the listener paused");
        Assert.False(_handler.WaitConnected(1, TimeSpan.Zero));

        await _loop.InvokeAsync(() => _loop.Headroom = DescriptorHeadroom.Unlimited);
        using var next = Connect();
        Assert.True(_handler.WaitConnected(1, TimeSpan.FromSeconds(5)));
    }

    private static int FreeTcpPort()
    {
        using var l = new System.Net.Sockets.TcpListener(System.Net.IPAddress.Loopback, 0);
        l.Start();
        return ((System.Net.IPEndPoint)l.LocalEndpoint).Port;
    }

    [Fact]
    public void The_link_tells_its_source_when_a_connection_closes_but_not_when_it_is_disposed()
    {
        var source = new HandOverSource();
        var device = new LinkOnly();
        var link = new EmulatorLink(_loop, source, "emulator", _counters, NullLogger.Instance, device);
        link.Start();
        Assert.Same(link, source.Link);

        var (ours, theirs) = Pair();
        using (theirs)
        {
            link.Offer(ours);
            Assert.True(link.IsConnected);
            Assert.Same(ours, device.Attached);
            link.Disconnect("test");
            Assert.Equal("test", device.DetachedWhy);
            Assert.Equal(1, source.Closed);
            Assert.True(ClosedByDevice(theirs));
        }

        var (again, peer) = Pair();
        using (peer)
        {
            link.Offer(again);
            var (extra, extraPeer) = Pair();
            using (extraPeer)
            {
                link.Offer(extra); // a source that offers while one is attached gets the same refusal
                Assert.True(ClosedByDevice(extraPeer));
            }
            Assert.Same(again, device.Attached);
            link.Dispose();
            Assert.Equal("the engine is stopping", device.DetachedWhy);
            Assert.Equal(1, source.Closed);
            Assert.True(source.Disposed);
        }
        Assert.Equal(1, _counters.Drops(DropReason.DeviceProtocolError));
    }

    private static (Socket Ours, Socket Theirs) Pair()
    {
        var path = Path.Combine(Path.GetTempPath(), $"emunet-pair-{Guid.NewGuid():N}.sock");
        using var listener = new Socket(AddressFamily.Unix, SocketType.Stream, ProtocolType.Unspecified);
        listener.Bind(new UnixDomainSocketEndPoint(path));
        listener.Listen(1);
        var theirs = new Socket(AddressFamily.Unix, SocketType.Stream, ProtocolType.Unspecified);
        theirs.Connect(new UnixDomainSocketEndPoint(path));
        var ours = listener.Accept();
        File.Delete(path);
        theirs.ReceiveTimeout = 5000;
        return (ours, theirs);
    }

    /// <summary>A source as the dialer is: it hands over sockets it made itself.</summary>
    private sealed class HandOverSource : IEmulatorSource
    {
        public EmulatorLink? Link;
        public int Closed;
        public bool Disposed;

        public string Description => "test:";
        public void Start(EmulatorLink link) => Link = link;
        public void OnConnectionClosed() => Closed++;
        public void Dispose() => Disposed = true;
    }

    private sealed class LinkOnly : IEmulatorConnectionHandler
    {
        public Socket? Attached;
        public string? DetachedWhy;

        public string Description => "test:device";
        public void OnAttached(Socket connection) => Attached = connection;
        public void OnConnectionEvents(uint events) { }
        public void OnDetached(string why) => DetachedWhy = why;
    }

    private sealed class RecordingHandler : IFrameHandler
    {
        private readonly SemaphoreSlim _connected = new(0);
        private readonly SemaphoreSlim _disconnected = new(0);
        private int _disconnectedCount;

        public int DisconnectedCount => Volatile.Read(ref _disconnectedCount);

        public bool WaitConnected(int n, TimeSpan? timeout = null) => Wait(_connected, n, timeout);
        public bool WaitDisconnected(int n) => Wait(_disconnected, n, null);

        private static bool Wait(SemaphoreSlim events, int n, TimeSpan? timeout)
        {
            for (int i = 0; i < n; i++)
                if (!events.Wait(timeout ?? TimeSpan.FromSeconds(5))) return false;
            return true;
        }

        public void OnFrame(ReadOnlySpan<byte> frame) { }
        public void OnDeviceConnected() => _connected.Release();

        public void OnDeviceDisconnected()
        {
            Interlocked.Increment(ref _disconnectedCount);
            _disconnected.Release();
        }

        public void OnTransmitReady() { }
    }
}
