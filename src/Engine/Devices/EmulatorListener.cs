using System.Net;
using System.Net.Sockets;
using Emunet.Engine.Diagnostics;
using Emunet.Engine.Interop;
using Emunet.Engine.Runtime;
using Microsoft.Extensions.Logging;

namespace Emunet.Engine.Devices;

/// <summary>
/// Theory of operation: the socket a device listens on for its emulator, shared by the stream and vhost-user devices.
/// It binds at <see cref="Start"/> (a Unix socket path, or <c>tcp:ADDR:PORT</c> where the device allows it), stays
/// registered on the loop for the device's whole life, and hands every connection it accepts to the
/// <see cref="EmulatorLink"/>, which keeps one and refuses the others; so when an emulator leaves, the next one is
/// accepted at once. Dispose closes it and removes the socket file.
/// Out of file descriptors, the waiting connection is not accepted: when the next descriptor would be in the headroom
/// kept free at the top of the open-file limit (<see cref="DescriptorHeadroom"/>, probed before each accept), or when
/// none is left (EMFILE/ENFILE). The level-triggered listener would wake the loop again at once; so the socket leaves
/// the loop for a pause (50 ms doubling to 2 s while it keeps happening), each refusal is counted
/// (<see cref="DropReason.AcceptOutOfDescriptors"/>), and the log says so once per episode, as the forwards do. A
/// connection accepted onto a headroom descriptor anyway (another thread took the one probed) is reset, and the
/// listener pauses.
/// </summary>
internal sealed class EmulatorListener : IEmulatorSource, IPollable, ITimerClient
{
    private const int Backlog = 4;
    private readonly EventLoop _loop;
    private readonly string _endpoint;
    private readonly string _option;
    private readonly bool _tcpAllowed;
    private readonly ILogger _logger;
    private EmulatorLink? _link;
    private Socket? _socket;
    private int _token = -1;
    private int _fd = -1;
    private readonly AcceptBackoff _backoff = new();

    private EmulatorListener(EventLoop loop, string endpoint, string option, bool tcpAllowed, ILogger logger)
    {
        _loop = loop;
        _endpoint = endpoint;
        _option = option;
        _tcpAllowed = tcpAllowed;
        _logger = logger;
    }

    /// <summary>
    /// Listens on <paramref name="endpoint"/>: <c>tcp:ADDR:PORT</c>, or else a Unix socket path (made absolute at start).
    /// <paramref name="option"/> (e.g. <c>--socket</c>) is the setting start errors name as the fix.
    /// </summary>
    public static EmulatorListener ForEndpoint(EventLoop loop, string endpoint, string option, ILogger logger) => new(loop, endpoint, option, true, logger);

    /// <summary>Listens on the Unix socket <paramref name="path"/> only.</summary>
    public static EmulatorListener ForUnixPath(EventLoop loop, string path, string option, ILogger logger) => new(loop, path, option, false, logger);

    /// <summary>The endpoint as given (for <see cref="ForUnixPath"/>, the path).</summary>
    public string Path => _endpoint;

    /// <summary>The absolute socket path once bound to one, else null.</summary>
    public string? UnixPath { get; private set; }

    public string Description => UnixPath is not null ? $"unix:{UnixPath}" : _endpoint;

    /// <summary>Pauses since a connection was last accepted (0: accepting); an episode is logged once, when it starts.</summary>
    public long PausesThisEpisode => _backoff.PausesThisEpisode;

    /// <summary>Until when (loop ms) the socket is out of the loop after an accept failed; 0 when listening.</summary>
    public long PausedUntil => _backoff.PausedUntil;

    public void Start(EmulatorLink link)
    {
        _link = link;
        _socket = _tcpAllowed && _endpoint.StartsWith("tcp:", StringComparison.OrdinalIgnoreCase) ? BindTcp(_endpoint) : BindUnix(System.IO.Path.GetFullPath(_endpoint));
        _socket.Blocking = false;
        _fd = (int)_socket.Handle;
        _token = _loop.Register(_fd, Libc.EPOLLIN, this);
        _loop.AddTimerClient(this);
    }

    public void OnPoll(uint events)
    {
        while (_socket is not null && _link is not null && PausedUntil == 0)
        {
            if (_loop.Headroom.NextIsAtHeadroom(_fd))
            {
                // Look before accepting: the emulator waits in the backlog until a descriptor below the headroom is free.
                Pause(SocketError.TooManyOpenSockets);
                return;
            }
            Socket accepted;
            try { accepted = _socket.Accept(); }
            catch (SocketException e) when (e.SocketErrorCode == SocketError.WouldBlock) { return; }
            catch (SocketException e) when (e.SocketErrorCode is SocketError.ConnectionAborted or SocketError.ConnectionReset)
            {
                // The emulator gave up between readiness and accept: its connection left the backlog, nothing to retry.
                if (_logger.IsEnabled(LogLevel.Debug)) _logger.LogDebug("Accepting a connection on {Endpoint}: {Error}", Description, e.SocketErrorCode);
                continue;
            }
            catch (SocketException e)
            {
                Pause(e.SocketErrorCode);
                return;
            }
            if (_loop.Headroom.IsAtHeadroom(accepted))
            {
                // Another thread took the descriptor the probe saw: this connection would hold one of the last. The
                // emulator hears a reset (QEMU reconnects, or is restarted); the listener pauses.
                try { accepted.LingerState = new LingerOption(true, 0); }
                catch (SocketException) { }
                accepted.Dispose();
                Pause(SocketError.TooManyOpenSockets);
                return;
            }
            long pauses = _backoff.Accepted();
            if (pauses > 0 && _logger.IsEnabled(LogLevel.Information))
                _logger.LogInformation("Accepting emulator connections on {Endpoint} again, after {Count} failed attempts.", Description, pauses);
            _link.Offer(accepted);
            // One per wake-up: accept(2) takes a descriptor before it looks at the backlog, so with none left a second
            // try fails even when nobody waits. The listener is level-triggered: another waiting emulator wakes it again.
            return;
        }
    }

    /// <summary>
    /// The accept failed or was held back with the connection still waiting (out of descriptors above all): retrying
    /// at once would spin the loop, so the socket leaves it for an <see cref="AcceptBackoff"/> pause. Counted every time, logged once
    /// per episode.
    /// </summary>
    private void Pause(SocketError error)
    {
        if (_socket is null || PausedUntil != 0) return;
        bool outOfDescriptors = error == SocketError.TooManyOpenSockets;
        if (outOfDescriptors) _link!.Counters.Drop(DropReason.AcceptOutOfDescriptors);
        if (_backoff.Pause(_loop.NowMs) && _logger.IsEnabled(LogLevel.Warning))
        {
            if (outOfDescriptors)
                _logger.LogWarning("The process is out of file descriptors: the emulator's connection to {Endpoint} waits until one is free (retrying every {Min} to {Max} ms; {Advice}).",
                    Description, AcceptBackoff.FirstPauseMs, AcceptBackoff.MaxPauseMs, _loop.Headroom.Advice);
            else
                _logger.LogWarning("Accepting a connection on {Endpoint} failed: {Error}; retrying every {Min} to {Max} ms.", Description, error,
                    AcceptBackoff.FirstPauseMs, AcceptBackoff.MaxPauseMs);
        }
        _loop.Unregister(_token, _fd);
        _token = -1;
        _loop.WakeAt(_backoff.PausedUntil);
    }

    /// <summary>Puts the socket back in the loop when its pause is over; a connection still waiting wakes it at once.</summary>
    public long OnTimer(long nowMs)
    {
        if (PausedUntil == 0 || _socket is null) return long.MaxValue;
        if (nowMs < PausedUntil) return PausedUntil;
        _backoff.EndPause();
        _token = _loop.Register(_fd, Libc.EPOLLIN, this);
        return long.MaxValue;
    }

    /// <summary>Nothing to do: the listener never stopped listening, and the next emulator's connection is accepted.</summary>
    public void OnConnectionClosed() { }

    public void Dispose()
    {
        if (_socket is null) return;
        if (_token >= 0) _loop.Unregister(_token, _fd);
        _socket.Dispose();
        _socket = null;
        _token = -1;
        _backoff.EndPause();
        if (UnixPath is not null)
        {
            try { File.Delete(UnixPath); } catch (IOException) { }
        }
    }

    private static Socket BindTcp(string endpoint)
    {
        if (!TcpEndpoint.TryParse(endpoint, loopbackShorthands: false, out var address, out int port))
            throw new EngineStartException($"The socket '{endpoint}' is not valid: use tcp:127.0.0.1:PORT (or a Unix socket path).");
        // Whoever connects first becomes the guest: on any other address, anyone who can reach this machine could.
        if (!IPAddress.IsLoopback(address))
            throw new EngineStartException($"The socket '{endpoint}' would let any machine that reaches {address} attach as the guest; Emunet serves emulators on loopback only. Use tcp:127.0.0.1:{port} (or a Unix socket path).");
        var s = new Socket(address.AddressFamily, SocketType.Stream, ProtocolType.Tcp);
        try
        {
            s.Bind(new IPEndPoint(address, port));
            s.Listen(Backlog);
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

    /// <summary>
    /// Listens on <paramref name="path"/> (an absolute path), mode 0600. A stale socket left by an engine that did not
    /// shut down is replaced; a live one, a directory or any other file is refused, naming the option as the fix.
    /// </summary>
    private Socket BindUnix(string path)
    {
        if (File.Exists(path) || Directory.Exists(path))
        {
            if (Directory.Exists(path)) throw new EngineStartException($"The socket path '{path}' is a directory; give a file path such as /tmp/emunet.sock.");
            if (!Libc.IsSocket(path)) throw new EngineStartException($"'{path}' exists and is not a socket; Emunet will not replace it. Choose another {_option} path.");
            using (var probe = new Socket(AddressFamily.Unix, SocketType.Stream, ProtocolType.Unspecified))
            {
                try
                {
                    probe.Connect(new UnixDomainSocketEndPoint(path));
                    throw new EngineStartException($"Another program is already serving '{path}'; stop it or choose another {_option} path.");
                }
                catch (SocketException) { }
            }
            File.Delete(path); // stale socket of an engine that did not shut down
        }
        var dir = System.IO.Path.GetDirectoryName(path);
        if (dir is not null && !Directory.Exists(dir)) throw new EngineStartException($"The folder of the socket path '{path}' does not exist.");
        var u = new Socket(AddressFamily.Unix, SocketType.Stream, ProtocolType.Unspecified);
        try
        {
            u.Bind(new UnixDomainSocketEndPoint(path));
            File.SetUnixFileMode(path, UnixFileMode.UserRead | UnixFileMode.UserWrite);
            u.Listen(Backlog);
        }
        catch (Exception e) when (e is SocketException or IOException or UnauthorizedAccessException)
        {
            u.Dispose();
            throw new EngineStartException($"Cannot listen on '{path}': {e.Message}.");
        }
        UnixPath = path;
        return u;
    }
}
