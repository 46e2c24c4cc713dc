using System.Net;
using System.Net.Sockets;
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
/// </summary>
internal sealed class EmulatorListener : IEmulatorSource, IPollable
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

    public void Start(EmulatorLink link)
    {
        _link = link;
        _socket = _tcpAllowed && _endpoint.StartsWith("tcp:", StringComparison.OrdinalIgnoreCase) ? BindTcp(_endpoint) : BindUnix(System.IO.Path.GetFullPath(_endpoint));
        _socket.Blocking = false;
        _token = _loop.Register((int)_socket.Handle, Libc.EPOLLIN, this);
    }

    public void OnPoll(uint events)
    {
        while (_socket is not null && _link is not null)
        {
            Socket accepted;
            try { accepted = _socket.Accept(); }
            catch (SocketException e) when (e.SocketErrorCode == SocketError.WouldBlock) { return; }
            catch (SocketException e)
            {
                _logger.LogWarning("Accepting a connection on {Endpoint} failed: {Error}", Description, e.SocketErrorCode);
                return;
            }
            _link.Offer(accepted);
        }
    }

    /// <summary>Nothing to do: the listener never stopped listening, and the next emulator's connection is accepted.</summary>
    public void OnConnectionClosed() { }

    public void Dispose()
    {
        if (_socket is null) return;
        _loop.Unregister(_token, (int)_socket.Handle);
        _socket.Dispose();
        _socket = null;
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
