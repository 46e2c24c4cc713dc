using Emunet.Engine.Link;
using Emunet.Engine.Diagnostics;
using System.Buffers.Binary;
using System.Net.Sockets;
using Emunet.Engine.Interop;
using Emunet.Engine.Runtime;
using Microsoft.Extensions.Logging;

namespace Emunet.Engine.Devices.Stream;

/// <summary>
/// Theory of operation: QEMU's stream-socket network back-end (<c>-netdev stream</c> in QEMU 7.2+, and the older
/// <c>-netdev socket,connect=</c> of emulator forks) carries each Ethernet frame as a 4-byte big-endian length followed
/// by the frame. Emunet listens (Unix socket path or <c>tcp:127.0.0.1:PORT</c>, <see cref="EmulatorListener"/>) or
/// dials an emulator that listens (<see cref="EmulatorDialer"/>), and serves one emulator at a time
/// (<see cref="EmulatorLink"/>); when the connection ends the source provides the next one, so a restarted emulator,
/// or a restarted engine that dials, gets the guest its network back.
///
/// Receive: one read fills a large buffer with as many frames as the kernel has; each whole frame is handed to the
/// stack in place (no copy, no allocation); a partial tail is moved to the front. A length over
/// <see cref="MaxFrameLength"/> means the stream lost its framing: the connection is dropped and counted.
/// Transmit: the stack writes frames straight into one transmit buffer behind their length prefix; the buffer is
/// flushed at the end of each loop batch (and when it fills). If the emulator does not read, the buffer fills,
/// <see cref="TransmitSpace"/> shrinks and the stack stops reading host sockets: back-pressure, not loss.
/// </summary>
internal sealed class StreamDevice : IGuestDevice, IEndOfBatch, IEmulatorConnectionHandler
{
    /// <summary>The largest frame either way: a 65535-byte IPv4 packet plus Ethernet and a VLAN tag.</summary>
    public const int MaxFrameLength = LinkLimits.MaxFrameLength;
    private const int ReceiveBufferSize = 512 * 1024;
    private const int TransmitBufferSize = 512 * 1024;
    private const int FlushThreshold = 256 * 1024;
    private const int SocketBufferSize = 1 << 20;

    private readonly EventLoop _loop;
    private readonly Counters _counters;
    private readonly ILogger _logger;
    private readonly byte[] _rx = GC.AllocateUninitializedArray<byte>(ReceiveBufferSize, pinned: true);
    private readonly FrameQueue _tx = new(TransmitBufferSize);
    private readonly IEmulatorSource _source;
    private readonly EmulatorLink _link;
    private int _rxLength;
    private bool _pushedBack;

    /// <summary>Listens on <paramref name="endpoint"/>: a Unix socket path or <c>tcp:127.0.0.1:PORT</c>.</summary>
    public StreamDevice(EventLoop loop, string endpoint, Counters counters, ILogger logger)
        : this(loop, EmulatorListener.ForEndpoint(loop, endpoint, "--socket", logger), counters, logger)
    {
    }

    /// <summary>Serves the emulator connections <paramref name="source"/> provides (a listener or a dialer); takes ownership of it.</summary>
    public StreamDevice(EventLoop loop, IEmulatorSource source, Counters counters, ILogger logger)
    {
        _loop = loop;
        _counters = counters;
        _logger = logger;
        _source = source;
        _link = new EmulatorLink(loop, source, "emulator", counters, logger, this);
    }

    /// <summary>Where frames go; set before <see cref="Start"/>.</summary>
    public IFrameHandler? Handler { get; set; }

    /// <summary>Called for every frame in either direction (capture).</summary>
    public FrameTap? Tap { get; set; }

    /// <summary>Human-readable endpoint, e.g. <c>stream:unix:/run/emu.sock</c>, or <c>stream:connect:tcp:127.0.0.1:5555</c> when Emunet dials.</summary>
    public string Description => $"stream:{EmulatorLink.Describe(_source)}";

    public bool IsConnected => _link.IsConnected;

    public int TransmitSpace => _link.IsConnected ? _tx.Space : 0;

    /// <summary>Binds and listens, or starts dialling. Throws <see cref="EngineStartException"/> naming the cause and the fix.</summary>
    public void Start()
    {
        _link.Start();
        _loop.AddEndOfBatch(this);
    }

    void IEmulatorConnectionHandler.OnAttached(Socket connection)
    {
        if (connection.AddressFamily != AddressFamily.Unix) connection.NoDelay = true;
        connection.SendBufferSize = SocketBufferSize;
        connection.ReceiveBufferSize = SocketBufferSize;
        _rxLength = 0;
        _tx.Clear();
        _logger.LogInformation("Emulator attached on {Endpoint}.", Description);
        Handler?.OnDeviceConnected();
    }

    void IEmulatorConnectionHandler.OnConnectionEvents(uint events)
    {
        if ((events & Libc.EPOLLOUT) != 0) Flush();
        if ((events & (Libc.EPOLLIN | Libc.EPOLLHUP | Libc.EPOLLERR | Libc.EPOLLRDHUP)) != 0) Receive();
    }

    private void Receive()
    {
        // Bounded: at most a few buffers per wake-up so one busy guest cannot starve host sockets.
        for (int round = 0; round < 8 && _link.Connection is { } connection; round++)
        {
            int n = connection.Receive(_rx.AsSpan(_rxLength), SocketFlags.None, out var error);
            if (error == SocketError.WouldBlock) return;
            if (error != SocketError.Success || n == 0)
            {
                Disconnect(error == SocketError.Success ? "the emulator closed the connection" : $"receive failed: {error}");
                return;
            }
            _rxLength += n;
            int offset = 0;
            while (_rxLength - offset >= 4)
            {
                uint len = BinaryPrimitives.ReadUInt32BigEndian(_rx.AsSpan(offset));
                if (len > MaxFrameLength)
                {
                    _counters.Drop(DropReason.DeviceProtocolError);
                    Disconnect($"frame length {len} exceeds {MaxFrameLength}: the stream lost its framing");
                    return;
                }
                int total = 4 + (int)len; // cannot overflow: len <= MaxFrameLength
                if (_rxLength - offset < total) break;
                var frame = _rx.AsSpan(offset + 4, (int)len);
                offset += total;
                Tap?.Invoke(frame, false);
                Handler?.OnFrame(frame);
                if (!_link.IsConnected) return; // the handler may not disconnect us, but stay safe
            }
            if (offset > 0)
            {
                _rx.AsSpan(offset, _rxLength - offset).CopyTo(_rx);
                _rxLength -= offset;
            }
            if (n < _rx.Length / 2) return; // the kernel had no more
        }
    }

    public TransmitLease BeginTransmit(int maxLength)
    {
        if (!_link.IsConnected || maxLength > MaxFrameLength || maxLength < 0) return default;
        var room = _tx.Reserve(maxLength, out int token);
        if (room.IsEmpty)
        {
            Flush();
            if (_link.IsConnected) room = _tx.Reserve(maxLength, out token);
            if (room.IsEmpty)
            {
                _pushedBack = true;
                return default;
            }
        }
        return new TransmitLease(this, room, token);
    }

    public void CommitTransmit(int token, int length)
    {
        if (!_link.IsConnected || !_tx.TryCommit(token, length, out var frame)) return;
        Tap?.Invoke(frame, true);
        if (_tx.Count >= FlushThreshold) Flush();
    }

    public void OnEndOfBatch()
    {
        if (_link.IsConnected && !_tx.IsEmpty && !_link.WritesWatched) Flush();
    }

    private void Flush()
    {
        while (_link.Connection is { } connection && !_tx.IsEmpty)
        {
            int n = connection.Send(_tx.Queued, SocketFlags.None, out var error);
            if (error == SocketError.WouldBlock)
            {
                _link.WatchWrites(true);
                return;
            }
            if (error != SocketError.Success)
            {
                Disconnect($"send failed: {error}");
                return;
            }
            _tx.Consume(n);
        }
        if (!_link.IsConnected) return;
        _link.WatchWrites(false);
        if (_pushedBack)
        {
            _pushedBack = false;
            Handler?.OnTransmitReady();
        }
    }

    private void Disconnect(string why) => _link.Disconnect(why);

    void IEmulatorConnectionHandler.OnDetached(string why)
    {
        _logger.LogInformation("Emulator detached from {Endpoint}: {Reason}.", Description, why);
        _rxLength = 0;
        _tx.Clear();
        _pushedBack = false;
        Handler?.OnDeviceDisconnected();
    }

    /// <summary>Ends the connection and the source (stops listening and removes the socket file, or stops dialling).</summary>
    public void Dispose() => _link.Dispose();
}
