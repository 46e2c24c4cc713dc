using System.Net.Sockets;
using Emunet.Engine.Diagnostics;
using Emunet.Engine.Interop;
using Emunet.Engine.Runtime;
using Microsoft.Extensions.Logging;

namespace Emunet.Engine.Devices;

/// <summary>
/// Where a device's emulator connection comes from. <see cref="EmulatorListener"/> accepts one (the emulator connects
/// to Emunet); <see cref="EmulatorDialer"/> makes one (Emunet connects to an emulator that listens, retrying until it
/// answers). Either hands each connected socket to <see cref="EmulatorLink.Offer"/>.
/// </summary>
internal interface IEmulatorSource : IDisposable
{
    /// <summary>Human-readable endpoint, e.g. <c>unix:/run/emu.sock</c> or <c>tcp:127.0.0.1:5555</c>.</summary>
    string Description { get; }

    /// <summary>Starts providing connections to <paramref name="link"/>. Throws <see cref="EngineStartException"/> naming the cause and the fix.</summary>
    void Start(EmulatorLink link);

    /// <summary>The connection this source provided has ended (not called while the link is being disposed).</summary>
    void OnConnectionClosed();
}

/// <summary>What a device does with the connection its <see cref="EmulatorLink"/> holds. Owner thread only.</summary>
internal interface IEmulatorConnectionHandler
{
    /// <summary>Names the device in log lines (<see cref="IGuestDevice.Description"/>).</summary>
    string Description { get; }

    /// <summary>
    /// A new emulator is attached on <paramref name="connection"/> (non-blocking, watched for input): the device starts
    /// a fresh session. Borrows the socket: the link closes it.
    /// </summary>
    void OnAttached(Socket connection);

    /// <summary>The connection is readable, writable or closed (<paramref name="events"/>: epoll bits).</summary>
    void OnConnectionEvents(uint events);

    /// <summary>The connection has been closed for <paramref name="why"/>: the device drops what belonged to it.</summary>
    void OnDetached(string why);
}

/// <summary>
/// Theory of operation: a device's one connection to its emulator, whatever its source. A device serves one emulator
/// at a time (QEMU's stream and vhost-user back-ends are point to point): a socket offered while one is attached is
/// closed, logged and counted as <see cref="DropReason.DeviceProtocolError"/>. The attached socket is watched on the
/// loop for input (and, on request, for room to write); when the device ends the connection, or the peer does, the
/// socket is closed, the device is told, and the source provides the next one. Owner thread only.
/// </summary>
internal sealed class EmulatorLink : IPollable, IDisposable
{
    private const uint InputEvents = Libc.EPOLLIN | Libc.EPOLLRDHUP;
    private readonly EventLoop _loop;
    private readonly IEmulatorSource _source;
    private readonly string _peer;
    private readonly Counters _counters;
    private readonly ILogger _logger;
    private readonly IEmulatorConnectionHandler _handler;
    private int _token = -1;
    private bool _disposing;

    /// <summary>
    /// Serves <paramref name="handler"/> with connections from <paramref name="source"/>; <paramref name="peer"/> is
    /// what connects, as log lines name it (<c>emulator</c>, <c>vhost-user front-end</c>).
    /// </summary>
    public EmulatorLink(EventLoop loop, IEmulatorSource source, string peer, Counters counters, ILogger logger, IEmulatorConnectionHandler handler)
    {
        _loop = loop;
        _source = source;
        _peer = peer;
        _counters = counters;
        _logger = logger;
        _handler = handler;
    }

    /// <summary>The attached emulator's socket, or null.</summary>
    public Socket? Connection { get; private set; }

    public bool IsConnected => Connection is not null;

    /// <summary>The engine's counters, where the source counts what it drops.</summary>
    public Counters Counters => _counters;

    /// <summary>True while the connection is also watched for room to write (<see cref="WatchWrites"/>).</summary>
    public bool WritesWatched { get; private set; }

    /// <summary>
    /// How a device names where its emulator is: the source's endpoint, behind <c>connect:</c> when Emunet dials it
    /// (<c>unix:/run/emu.sock</c>, <c>connect:tcp:127.0.0.1:5555</c>).
    /// </summary>
    public static string Describe(IEmulatorSource source) => source is EmulatorDialer ? $"connect:{source.Description}" : source.Description;

    /// <summary>Starts the source. Throws <see cref="EngineStartException"/> naming the cause and the fix.</summary>
    public void Start() => _source.Start(this);

    /// <summary>A connected socket from the source. Takes ownership: it becomes the connection, or is closed.</summary>
    public void Offer(Socket socket)
    {
        if (Connection is not null)
        {
            _logger.LogWarning("A second {Peer} tried to attach to {Endpoint} while one is attached; refused.", _peer, _handler.Description);
            _counters.Drop(DropReason.DeviceProtocolError);
            socket.Dispose();
            return;
        }
        socket.Blocking = false;
        Connection = socket;
        WritesWatched = false;
        _token = _loop.Register((int)socket.Handle, InputEvents, this);
        _handler.OnAttached(socket);
    }

    /// <summary>Watches the connection for room to write too (<paramref name="on"/>), or for input only.</summary>
    public void WatchWrites(bool on)
    {
        if (WritesWatched == on || Connection is null) return;
        WritesWatched = on;
        _loop.Modify(_token, (int)Connection.Handle, InputEvents | (on ? Libc.EPOLLOUT : 0));
    }

    /// <summary>Closes the connection, if any, tells the device why, and lets the source provide the next one.</summary>
    public void Disconnect(string why)
    {
        var socket = Connection;
        if (socket is null) return;
        _loop.Unregister(_token, (int)socket.Handle);
        socket.Dispose();
        Connection = null;
        _token = -1;
        _handler.OnDetached(why);
        if (!_disposing) _source.OnConnectionClosed();
    }

    public void OnPoll(uint events) => _handler.OnConnectionEvents(events);

    /// <summary>Ends the connection and the source (a listener's socket file is removed).</summary>
    public void Dispose()
    {
        _disposing = true;
        Disconnect("the engine is stopping");
        _source.Dispose();
    }
}
