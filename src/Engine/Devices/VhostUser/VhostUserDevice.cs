using System.Net.Sockets;
using Emunet.Engine.Diagnostics;
using Emunet.Engine.Link;
using Emunet.Engine.Runtime;
using Microsoft.Extensions.Logging;

namespace Emunet.Engine.Devices.VhostUser;

/// <summary>
/// Theory of operation: a vhost-user virtio-net back-end (QEMU <c>-netdev vhost-user</c>). Emunet listens on a Unix
/// socket (<see cref="EmulatorListener"/>), or dials a front-end that listens (<c>-chardev socket,server=on</c>,
/// <see cref="EmulatorDialer"/>), and serves one front-end at a time (<see cref="EmulatorLink"/>). QEMU
/// connects, negotiates features, passes the guest's RAM as file descriptors and, per queue, its size, ring addresses,
/// base index and eventfds; frames then move through guest memory directly, with no socket copy. The work is split as
/// passt splits vhost_user.c / virtio.c / vu_common.c:
/// <list type="bullet">
/// <item><see cref="VhostUserChannel"/>: the message framing (one message at a time with its descriptors, replies);</item>
/// <item><see cref="VhostUserSession"/>: the requests (features, memory table, SET_VRING_*, REPLY_ACK, protocol
/// errors) and what the front-end negotiated;</item>
/// <item><see cref="Vring"/>: one queue's lifecycle (kick, call and err eventfds; start, stop, enable, remap, break);</item>
/// <item><see cref="VirtioNetQueues"/>: the virtio-net data path (transmit-queue drain, receive-queue delivery with
/// num_buffers, frames waiting for receive buffers, one call per ring per loop batch).</item>
/// </list>
/// This class wires them together and is what the engine sees. The front-end and the guest are untrusted: each part
/// counts and refuses or drops what it cannot use, and nothing throws out of the loop. When QEMU goes away the memory
/// is unmapped, the fds closed, waiting frames dropped, the stack reset, and the device listens for the next front-end.
/// </summary>
internal sealed class VhostUserDevice : IGuestDevice, IEmulatorConnectionHandler, IVringHandler
{
    public const int MaxFrameLength = LinkLimits.MaxFrameLength;
    /// <summary>VIRTIO 1.2 §5.1.6: struct virtio_net_hdr is 12 bytes with VERSION_1 or MRG_RXBUF, 10 otherwise.</summary>
    public const int NetHeaderLength = VirtioNetQueues.NetHeaderLength;

    private readonly EventLoop _loop;
    private readonly ILogger _logger;
    private readonly IEmulatorSource _source;
    private readonly EmulatorLink _link;
    private readonly VhostUserSession _session;
    private readonly VirtioNetQueues _queues;

    /// <summary>Listens on the Unix socket <paramref name="path"/>.</summary>
    public VhostUserDevice(EventLoop loop, string path, Counters counters, ILogger logger)
        : this(loop, EmulatorListener.ForUnixPath(loop, Path.GetFullPath(path), "--vhost-user", logger), counters, logger)
    {
    }

    /// <summary>Serves the front-end connections <paramref name="source"/> provides (a listener or a dialer); takes ownership of it.</summary>
    public VhostUserDevice(EventLoop loop, IEmulatorSource source, Counters counters, ILogger logger)
    {
        _loop = loop;
        _source = source;
        _logger = logger;
        _link = new EmulatorLink(loop, source, "vhost-user front-end", counters, logger, this);
        _session = new VhostUserSession(loop, _link, counters, logger, Description, this);
        _queues = new VirtioNetQueues(_session, this, counters);
    }

    public IFrameHandler? Handler
    {
        get => _queues.Handler;
        set => _queues.Handler = value;
    }

    public FrameTap? Tap
    {
        get => _queues.Tap;
        set => _queues.Tap = value;
    }

    /// <summary><c>vhost-user:/run/emu.sock</c> when Emunet listens, <c>vhost-user:connect:unix:/run/emu.sock</c> when it dials.</summary>
    public string Description => _source is EmulatorListener listener ? $"vhost-user:{listener.Path}" : $"vhost-user:{EmulatorLink.Describe(_source)}";

    public bool IsConnected => _link.IsConnected;

    public int TransmitSpace => _link.IsConnected ? _queues.TransmitSpace : 0;

    /// <summary>Requests handled, for tests and diagnostics.</summary>
    internal int MessagesHandled => _session.MessagesHandled;

    public void Start()
    {
        _link.Start();
        _loop.AddEndOfBatch(_queues);
    }

    public TransmitLease BeginTransmit(int maxLength) => _link.IsConnected ? _queues.BeginTransmit(maxLength) : default;

    public void CommitTransmit(int token, int length)
    {
        if (_link.IsConnected) _queues.CommitTransmit(token, length);
    }

    public void CommitTransmit(int token, int length, in TransmitOffload offload)
    {
        if (_link.IsConnected) _queues.CommitTransmit(token, length, in offload);
    }

    public bool TryTransmitDirect(in FramePieces frame, in TransmitOffload offload) =>
        _link.IsConnected && _queues.TryTransmitDirect(in frame, in offload);

    /// <summary>The offloads the attached guest negotiated toward it (none while no guest is attached).</summary>
    public LinkOffloads Offloads => _link.IsConnected ? _queues.Offloads : LinkOffloads.None;

    /// <summary>The virtio feature bits the front-end acknowledged (0 before SET_FEATURES), for diagnostics and tests.</summary>
    internal ulong NegotiatedFeatures => _session.Features;

    void IEmulatorConnectionHandler.OnAttached(Socket connection)
    {
        _logger.LogInformation("vhost-user front-end attached on {Endpoint}.", Description);
        Handler?.OnDeviceConnected();
    }

    void IEmulatorConnectionHandler.OnConnectionEvents(uint events) => _session.OnReadable();

    // The session's rings are made before the data path that serves them; kicks reach it through here.
    void IVringHandler.OnRingReady(Vring vring) => _queues.OnRingReady(vring);

    void IEmulatorConnectionHandler.OnDetached(string why)
    {
        _logger.LogInformation("vhost-user front-end detached from {Endpoint}: {Reason}.", Description, why);
        _session.Reset();
        _queues.Reset();
        Handler?.OnDeviceDisconnected();
    }

    /// <summary>Ends the session and the source (stops listening and removes the socket file, or stops dialling).</summary>
    public void Dispose() => _link.Dispose();
}
