using Emunet.Engine.Link;
using Emunet.Engine.Diagnostics;
using System.Buffers.Binary;
using System.Net;
using System.Net.Sockets;
using Emunet.Engine.Interop;
using Emunet.Engine.Runtime;
using Emunet.Engine.Stack;
using Microsoft.Extensions.Logging;

namespace Emunet.Engine.Devices.Stream;

/// <summary>
/// Theory of operation: QEMU's stream-socket network back-end (<c>-netdev stream</c> in QEMU 7.2+, and the older
/// <c>-netdev socket,connect=</c> of emulator forks) carries each Ethernet frame as a 4-byte big-endian length followed
/// by the frame. Emunet listens (Unix socket path or <c>tcp:127.0.0.1:PORT</c>) and serves one emulator at a time;
/// when it disconnects the device goes back to listening, so a restarted emulator gets its network back.
///
/// Receive: one read fills a large buffer with as many frames as the kernel has; each whole frame is handed to the
/// stack in place (no copy, no allocation); a partial tail is moved to the front. A length over
/// <see cref="MaxFrameLength"/> means the stream lost its framing: the connection is dropped and counted.
/// Transmit: the stack writes frames straight into one transmit buffer behind their length prefix; the buffer is
/// flushed at the end of each loop batch (and when it fills). If the emulator does not read, the buffer fills,
/// <see cref="TransmitSpace"/> shrinks and the stack stops reading host sockets: back-pressure, not loss.
/// </summary>
internal sealed class StreamDevice : IGuestDevice, IEndOfBatch
{
    /// <summary>The largest frame either way: a 65535-byte IPv4 packet plus Ethernet and a VLAN tag.</summary>
    public const int MaxFrameLength = LinkLimits.MaxFrameLength;
    private const int ReceiveBufferSize = 512 * 1024;
    private const int TransmitBufferSize = 2 * 1024 * 1024;
    private const int FlushThreshold = 256 * 1024;

    private readonly EventLoop _loop;
    private readonly Counters _counters;
    private readonly ILogger _logger;
    private readonly string _endpointText;
    private readonly byte[] _rx = GC.AllocateUninitializedArray<byte>(ReceiveBufferSize, pinned: true);
    private readonly FrameQueue _tx = new(TransmitBufferSize);
    private readonly ListenerHandler _listenerHandler;
    private readonly ConnectionHandler _connectionHandler;
    private Socket? _listener;
    private int _listenerToken = -1;
    private Socket? _connection;
    private int _connectionToken = -1;
    private string? _unixPath;
    private int _rxLength;
    private bool _pushedBack;
    private bool _writeWatched;

    public StreamDevice(EventLoop loop, string endpoint, Counters counters, ILogger logger)
    {
        _loop = loop;
        _endpointText = endpoint;
        _counters = counters;
        _logger = logger;
        _listenerHandler = new ListenerHandler(this);
        _connectionHandler = new ConnectionHandler(this);
    }

    /// <summary>Where frames go; set before <see cref="Start"/>.</summary>
    public IFrameHandler? Handler { get; set; }

    /// <summary>Called for every frame in either direction (capture).</summary>
    public FrameTap? Tap { get; set; }

    /// <summary>Human-readable endpoint, e.g. <c>stream:unix:/run/emu.sock</c>.</summary>
    public string Description => _unixPath is not null ? $"stream:unix:{_unixPath}" : $"stream:{_endpointText}";

    public bool IsConnected => _connection is not null;

    public int TransmitSpace => _connection is null ? 0 : _tx.Space;

    /// <summary>Binds and listens. Throws <see cref="EngineStartException"/> naming the cause and the fix.</summary>
    public void Start()
    {
        _listener = Bind(_endpointText);
        _listener.Blocking = false;
        _listenerToken = _loop.Register((int)_listener.Handle, Libc.EPOLLIN, _listenerHandler);
        _loop.AddEndOfBatch(this);
    }

    private Socket Bind(string endpoint)
    {
        if (endpoint.StartsWith("tcp:", StringComparison.OrdinalIgnoreCase))
        {
            var rest = endpoint[4..];
            int colon = rest.LastIndexOf(':');
            if (colon < 0 || !IPAddress.TryParse(rest[..colon], out var address) || !int.TryParse(rest[(colon + 1)..], out int port) || port is < 1 or > 65535)
                throw new EngineStartException($"The socket '{endpoint}' is not valid: use tcp:127.0.0.1:PORT (or a Unix socket path).");
            var s = new Socket(address.AddressFamily, SocketType.Stream, ProtocolType.Tcp);
            try
            {
                s.Bind(new IPEndPoint(address, port));
                s.Listen(4);
                return s;
            }
            catch (SocketException e)
            {
                s.Dispose();
                throw new EngineStartException(e.SocketErrorCode == SocketError.AddressAlreadyInUse
                    ? $"The emulator socket {address}:{port} is already in use by another program; pick another port."
                    : $"Cannot listen on {address}:{port}: {e.Message}.");
            }
        }
        var path = Path.GetFullPath(endpoint);
        var listener = UnixListener.Bind(path, "--socket");
        _unixPath = path;
        return listener;
    }

    private void OnAccept()
    {
        while (true)
        {
            Socket accepted;
            try { accepted = _listener!.Accept(); }
            catch (SocketException e) when (e.SocketErrorCode == SocketError.WouldBlock) { return; }
            catch (SocketException e)
            {
                _logger.LogWarning("Accepting an emulator connection failed: {Error}", e.SocketErrorCode);
                return;
            }
            if (_connection is not null)
            {
                _logger.LogWarning("A second emulator tried to attach to {Endpoint} while one is attached; refused.", Description);
                _counters.Drop(DropReason.DeviceProtocolError);
                accepted.Dispose();
                continue;
            }
            accepted.Blocking = false;
            if (accepted.AddressFamily != AddressFamily.Unix) accepted.NoDelay = true;
            accepted.SendBufferSize = 1 << 20;
            accepted.ReceiveBufferSize = 1 << 20;
            _connection = accepted;
            _rxLength = 0;
            _tx.Clear();
            _writeWatched = false;
            _connectionToken = _loop.Register((int)accepted.Handle, Libc.EPOLLIN | Libc.EPOLLRDHUP, _connectionHandler);
            _logger.LogInformation("Emulator attached on {Endpoint}.", Description);
            Handler?.OnDeviceConnected();
        }
    }

    private void OnConnectionEvents(uint events)
    {
        if ((events & Libc.EPOLLOUT) != 0) Flush();
        if ((events & (Libc.EPOLLIN | Libc.EPOLLHUP | Libc.EPOLLERR | Libc.EPOLLRDHUP)) != 0) Receive();
    }

    private void Receive()
    {
        // Bounded: at most a few buffers per wake-up so one busy guest cannot starve host sockets.
        for (int round = 0; round < 8 && _connection is not null; round++)
        {
            int n = _connection.Receive(_rx.AsSpan(_rxLength), SocketFlags.None, out var error);
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
                if (_connection is null) return; // the handler may not disconnect us, but stay safe
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
        if (_connection is null || maxLength > MaxFrameLength || maxLength < 0) return default;
        var room = _tx.Reserve(maxLength, out int token);
        if (room.IsEmpty)
        {
            Flush();
            if (_connection is not null) room = _tx.Reserve(maxLength, out token);
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
        if (_connection is null || !_tx.TryCommit(token, length, out var frame)) return;
        Tap?.Invoke(frame, true);
        if (_tx.Count >= FlushThreshold) Flush();
    }

    public void OnEndOfBatch()
    {
        if (_connection is not null && !_tx.IsEmpty && !_writeWatched) Flush();
    }

    private void Flush()
    {
        while (_connection is not null && !_tx.IsEmpty)
        {
            int n = _connection.Send(_tx.Queued, SocketFlags.None, out var error);
            if (error == SocketError.WouldBlock)
            {
                WatchWrite(true);
                return;
            }
            if (error != SocketError.Success)
            {
                Disconnect($"send failed: {error}");
                return;
            }
            _tx.Consume(n);
        }
        if (_connection is null) return;
        WatchWrite(false);
        if (_pushedBack)
        {
            _pushedBack = false;
            Handler?.OnTransmitReady();
        }
    }

    private void WatchWrite(bool on)
    {
        if (_writeWatched == on || _connection is null) return;
        _writeWatched = on;
        _loop.Modify(_connectionToken, (int)_connection.Handle, Libc.EPOLLIN | Libc.EPOLLRDHUP | (on ? Libc.EPOLLOUT : 0));
    }

    private void Disconnect(string why)
    {
        if (_connection is null) return;
        _logger.LogInformation("Emulator detached from {Endpoint}: {Reason}.", Description, why);
        _loop.Unregister(_connectionToken, (int)_connection.Handle);
        _connection.Dispose();
        _connection = null;
        _rxLength = 0;
        _tx.Clear();
        _pushedBack = false;
        Handler?.OnDeviceDisconnected();
    }

    public void Dispose()
    {
        Disconnect("the engine is stopping");
        if (_listener is not null)
        {
            _loop.Unregister(_listenerToken, (int)_listener.Handle);
            _listener.Dispose();
            _listener = null;
        }
        if (_unixPath is not null)
        {
            try { File.Delete(_unixPath); } catch (IOException) { }
        }
    }

    private sealed class ListenerHandler(StreamDevice device) : IPollable
    {
        public void OnPoll(uint events) => device.OnAccept();
    }

    private sealed class ConnectionHandler(StreamDevice device) : IPollable
    {
        public void OnPoll(uint events) => device.OnConnectionEvents(events);
    }
}
