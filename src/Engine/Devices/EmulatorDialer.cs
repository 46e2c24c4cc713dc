using System.Net;
using System.Net.Sockets;
using Emunet.Engine.Interop;
using Emunet.Engine.Runtime;
using Microsoft.Extensions.Logging;

namespace Emunet.Engine.Devices;

/// <summary>
/// Theory of operation: the dial-out source. The emulator listens (<c>-netdev socket,listen=127.0.0.1:P</c>, the
/// Android Emulator's <c>-net-socket listen=…</c>, QEMU 7.2's <c>-netdev stream,server=on</c>, a vhost-user
/// <c>-chardev socket,server=on</c>) and Emunet connects to it, so the emulator may start first and outlives the
/// engine: QEMU's socket and stream back-ends go back to listening when their peer leaves (net/socket.c and
/// net/stream.c re-arm the accept on end of connection), and the next engine dials in.
///
/// Everything happens on the owner thread with no thread sleeping: a non-blocking connect is started; a Unix socket
/// answers at once, a TCP one completes later and the socket is watched for writability, then SO_ERROR says how it
/// went. A connected socket goes to the <see cref="EmulatorLink"/> (the device logs it as attached); a refused one is closed and the next attempt is a
/// loop deadline (<see cref="ITimerClient"/>) after a backoff of <see cref="FirstRetryMs"/> doubling to
/// <see cref="MaxRetryMs"/>. When the link drops, dialling starts over (at once after a connection that lived, after
/// the growing backoff after one that did not). "Waiting for the emulator" is logged once per
/// wait, not per attempt. Dispose stops dialling and closes the socket being connected.
/// </summary>
internal sealed class EmulatorDialer : IEmulatorSource, IPollable, ITimerClient
{
    public const int FirstRetryMs = 100;
    public const int MaxRetryMs = 2000;

    private readonly EventLoop _loop;
    private readonly EndPoint _endpoint;
    private readonly ILogger _logger;
    private readonly Action _dialAfterDrop;
    private EmulatorLink? _link;
    private Socket? _connecting;
    private int _token = -1;
    private long _retryAt = long.MaxValue;
    private int _delayMs = FirstRetryMs;
    private long _attachedAt;
    private bool _timerAdded;
    private bool _warned;
    private bool _redialAtOnce;
    private bool _disposed;

    private EmulatorDialer(EventLoop loop, EndPoint endpoint, string description, ILogger logger)
    {
        _loop = loop;
        _endpoint = endpoint;
        Description = description;
        _logger = logger;
        _dialAfterDrop = DialAfterDrop;
    }

    /// <summary>
    /// Dials <paramref name="endpoint"/>: <c>tcp:HOST:PORT</c> (a loopback address or <c>localhost</c>; <c>tcp:PORT</c>
    /// is 127.0.0.1), <c>unix:PATH</c> or a Unix socket path; <paramref name="tcpAllowed"/> false admits Unix sockets
    /// only (vhost-user). <paramref name="option"/> (e.g. <c>--connect</c>) is the setting errors name as the fix.
    /// Throws <see cref="EngineStartException"/> naming the cause and the fix.
    /// </summary>
    public static EmulatorDialer ForEndpoint(EventLoop loop, string endpoint, string option, bool tcpAllowed, ILogger logger)
    {
        if (endpoint.StartsWith("tcp:", StringComparison.OrdinalIgnoreCase))
        {
            if (!tcpAllowed)
                throw new EngineStartException($"A vhost-user front-end listens on a Unix socket only: give {option} unix:PATH, not '{endpoint}'.");
            var address = ParseTcp(endpoint, option);
            return new EmulatorDialer(loop, address, $"tcp:{FormatHost(address.Address)}:{address.Port}", logger);
        }
        var path = endpoint.StartsWith("unix:", StringComparison.OrdinalIgnoreCase) ? endpoint[5..] : endpoint;
        if (path.Length == 0) throw new EngineStartException($"The endpoint '{endpoint}' names no socket path: use {option} unix:PATH.");
        path = Path.GetFullPath(path);
        UnixDomainSocketEndPoint unix;
        try { unix = new UnixDomainSocketEndPoint(path); }
        catch (ArgumentException)
        {
            throw new EngineStartException($"The socket path '{path}' is too long for a Unix socket; choose a shorter {option} path.");
        }
        return new EmulatorDialer(loop, unix, $"unix:{path}", logger);
    }

    /// <summary>What is dialled: <c>tcp:127.0.0.1:5555</c> or <c>unix:/abs/path</c>.</summary>
    public string Description { get; }

    /// <summary>True while a connect is in flight (for tests).</summary>
    internal bool IsConnecting => _connecting is not null;

    /// <summary>The wait before the next attempt after a refusal, in milliseconds (for tests).</summary>
    internal int RetryDelayMs => _delayMs;

    public void Start(EmulatorLink link)
    {
        _link = link;
        if (!_timerAdded)
        {
            _loop.AddTimerClient(this);
            _timerAdded = true;
        }
        LogWaiting();
        Dial();
    }

    /// <summary>The emulator left (or the device dropped it): dial again, from a fresh loop turn.</summary>
    public void OnConnectionClosed()
    {
        if (_disposed) return;
        // A connection that lived is dialled again at once, with the backoff from its start. One that ended within
        // MaxRetryMs (a peer that accepts and closes, a stream that keeps losing its framing) waits the backoff
        // first and keeps it growing, so such a peer is not dialled in a tight loop. Posted, not dialled here: this
        // may run inside another timer client's turn, where a deadline set with WakeAt would be overwritten by the
        // loop's recomputation.
        _redialAtOnce = _loop.NowMs - _attachedAt >= MaxRetryMs;
        if (_redialAtOnce) _delayMs = FirstRetryMs;
        _loop.Post(_dialAfterDrop);
    }

    private void DialAfterDrop()
    {
        if (_disposed || _link is null || _link.IsConnected || _connecting is not null) return;
        LogWaiting();
        if (_redialAtOnce) Dial();
        else ScheduleNext();
    }

    private void LogWaiting()
    {
        _warned = false;
        _logger.LogInformation("Waiting for the emulator at {Endpoint} (Emunet dials it and retries until it answers).", Description);
    }

    /// <summary>One attempt: attaches, waits for the TCP handshake, or schedules the next attempt.</summary>
    private void Dial()
    {
        if (_disposed) return;
        Socket? socket = null;
        try
        {
            socket = new Socket(_endpoint.AddressFamily, SocketType.Stream, _endpoint is UnixDomainSocketEndPoint ? ProtocolType.Unspecified : ProtocolType.Tcp)
            {
                Blocking = false,
            };
            socket.Connect(_endpoint);
        }
        catch (SocketException e) when (socket is not null && e.SocketErrorCode is SocketError.WouldBlock or SocketError.InProgress
            && _endpoint is not UnixDomainSocketEndPoint)
        {
            // The TCP handshake is under way: writability (or an error) says when it is done (connect(2), EINPROGRESS).
            try
            {
                _token = _loop.Register((int)socket.Handle, Libc.EPOLLOUT, this);
                _connecting = socket;
            }
            catch (InvalidOperationException)
            {
                socket.Dispose();
                ScheduleRetry(SocketError.SocketError);
            }
            return;
        }
        catch (SocketException e)
        {
            // Refused, no such socket file, a Unix listener whose backlog is full (EAGAIN), or out of descriptors.
            socket?.Dispose();
            ScheduleRetry(e.SocketErrorCode);
            return;
        }
        Attach(socket);
    }

    /// <summary>The TCP connect finished: SO_ERROR is 0 on success, else the reason it failed.</summary>
    public void OnPoll(uint events)
    {
        var socket = _connecting;
        if (socket is null) return;
        _loop.Unregister(_token, (int)socket.Handle);
        _connecting = null;
        _token = -1;
        int error;
        try { error = (int)socket.GetSocketOption(SocketOptionLevel.Socket, SocketOptionName.Error)!; }
        catch (SocketException e) { error = (int)e.SocketErrorCode; }
        if (error != 0)
        {
            socket.Dispose();
            ScheduleRetry((SocketError)error);
            return;
        }
        Attach(socket);
    }

    private void Attach(Socket socket)
    {
        _attachedAt = _loop.NowMs;
        _link!.Offer(socket);
    }

    private void ScheduleRetry(SocketError why)
    {
        // Refused (nothing listens), no socket file yet, or a full backlog: the emulator is not there yet. Anything
        // else (permission denied, ...) will not pass by itself: said once per wait, and still retried.
        if (why is not (SocketError.ConnectionRefused or SocketError.AddressNotAvailable or SocketError.WouldBlock
            or SocketError.TimedOut or SocketError.ConnectionReset) && !_warned)
        {
            _warned = true;
            _logger.LogWarning("Dialling the emulator at {Endpoint} fails with {Error}; still retrying every {Max} ms at most.", Description, why, MaxRetryMs);
        }
        if (_logger.IsEnabled(LogLevel.Debug))
            _logger.LogDebug("The emulator at {Endpoint} did not answer ({Error}); next attempt in {Delay} ms.", Description, why, _delayMs);
        ScheduleNext();
    }

    /// <summary>The next attempt after the current backoff, which then doubles up to <see cref="MaxRetryMs"/>.</summary>
    private void ScheduleNext()
    {
        _retryAt = _loop.NowMs + _delayMs;
        _delayMs = Math.Min(_delayMs * 2, MaxRetryMs);
        _loop.WakeAt(_retryAt);
    }

    public long OnTimer(long nowMs)
    {
        if (_retryAt <= nowMs)
        {
            _retryAt = long.MaxValue;
            Dial(); // may set the next _retryAt
        }
        return _retryAt;
    }

    /// <summary>Stops dialling and closes a socket still connecting; the link closes an attached one.</summary>
    public void Dispose()
    {
        if (_disposed) return;
        _disposed = true;
        _retryAt = long.MaxValue;
        if (_connecting is { } socket)
        {
            _loop.Unregister(_token, (int)socket.Handle);
            socket.Dispose();
            _connecting = null;
            _token = -1;
        }
    }

    private static IPEndPoint ParseTcp(string endpoint, string option)
    {
        if (!TcpEndpoint.TryParse(endpoint, loopbackShorthands: true, out var address, out int port))
            throw new EngineStartException($"The endpoint '{endpoint}' is not valid: use {option} tcp:127.0.0.1:PORT (or unix:PATH).");
        // The emulator's socket carries the guest's whole network unauthenticated: Emunet dials this machine only.
        if (!IPAddress.IsLoopback(address))
            throw new EngineStartException($"Emunet dials emulators on this machine only, and {address} is not a loopback address: have the emulator listen on 127.0.0.1 (-netdev socket,listen=127.0.0.1:{port} or -net-socket listen=127.0.0.1:{port}) and give {option} tcp:127.0.0.1:{port}.");
        return new IPEndPoint(address, port);
    }

    private static string FormatHost(IPAddress address) => address.AddressFamily == AddressFamily.InterNetworkV6 ? $"[{address}]" : address.ToString();
}
