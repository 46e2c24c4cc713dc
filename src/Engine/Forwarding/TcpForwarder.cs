using System.Globalization;
using System.Net;
using System.Net.Sockets;
using Emunet.Engine.Interop;
using Emunet.Engine.Runtime;
using Emunet.Engine.Stack.Tcp;
using Microsoft.Extensions.Logging;

namespace Emunet.Engine.Forwarding;

/// <summary>
/// A TCP forward: a non-blocking host listener whose clients become connections from the gateway (10.0.2.2) into the
/// guest's port, through <see cref="TcpStack.OpenToGuest"/> (no adb in the path). Owner thread only.
/// </summary>
internal sealed class TcpForwarder : IPollable
{
    /// <summary>Connections accepted per readiness event, so one busy listener cannot starve the loop.</summary>
    private const int AcceptBudget = 64;
    private const int SolSocket = 1;
    private const int SoReuseAddr = 2;

    private readonly EventLoop _loop;
    private readonly TcpStack _tcp;
    private ForwardSpec _spec;
    private readonly ILogger _logger;
    private string _name;
    private Socket? _listener;
    private int _token = -1;
    private int _fd = -1;

    public TcpForwarder(EventLoop loop, TcpStack tcp, ForwardSpec spec, ILogger logger)
    {
        if (spec.Protocol != ForwardProtocol.Tcp) throw new ArgumentException($"The forward '{spec}' is not a TCP forward.", nameof(spec));
        _loop = loop;
        _tcp = tcp;
        _spec = spec;
        _logger = logger;
        _name = spec.ToString();
    }

    public ForwardSpec Spec => _spec;

    /// <summary>The port bound (the spec's, or the one the kernel chose for port 0).</summary>
    public int BoundPort { get; private set; }

    public int ActiveConnections => _tcp.ActiveForwardConnections(_name);

    public long TotalConnections { get; private set; }

    public DateTimeOffset Created { get; } = DateTimeOffset.UtcNow;

    /// <summary>A snapshot for the control API.</summary>
    public ForwardInfo Info => new()
    {
        Spec = _spec,
        BoundPort = BoundPort,
        ActiveConnections = ActiveConnections,
        TotalConnections = TotalConnections,
        Created = Created,
    };

    /// <summary>
    /// Binds and listens (owner thread: it registers with the loop). Throws <see cref="InvalidOperationException"/> naming
    /// the address and, when /proc tells, the process holding it when the port is in use.
    /// </summary>
    public void Start()
    {
        if (_listener is not null) return;
        var listener = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
        try
        {
            // SO_REUSEADDR alone (as servers do, for restarts over TIME-WAIT); .NET's ReuseAddress would add SO_REUSEPORT
            // on Linux and let two listeners share the port silently.
            listener.SetRawSocketOption(SolSocket, SoReuseAddr, BitConverter.GetBytes(1));
            listener.Bind(new IPEndPoint(_spec.HostAddress, _spec.HostPort));
            listener.Listen(512);
            listener.Blocking = false;
        }
        catch (SocketException e) when (e.SocketErrorCode == SocketError.AddressAlreadyInUse)
        {
            listener.Dispose();
            throw new InvalidOperationException(PortInUseMessage(_spec.HostAddress, _spec.HostPort), e);
        }
        catch (SocketException e)
        {
            listener.Dispose();
            throw new InvalidOperationException($"Cannot listen on {_spec.HostAddress}:{_spec.HostPort} for the forward {_name}: {e.Message}", e);
        }
        _listener = listener;
        BoundPort = ((IPEndPoint)listener.LocalEndPoint!).Port;
        // A forward asked for port 0 is known by the port it got: that is what the user connects to and removes.
        _spec = _spec with { HostPort = BoundPort };
        _name = _spec.ToString();
        _fd = (int)listener.Handle;
        _token = _loop.Register(_fd, Libc.EPOLLIN, this);
        if (_logger.IsEnabled(LogLevel.Information))
            _logger.LogInformation("forward {Forward}: listening on {Address}:{Port}", _name, _spec.HostAddress, BoundPort);
    }

    /// <summary>Closes the listener; with <paramref name="force"/> the connections it made are reset too.</summary>
    public void Stop(bool force)
    {
        if (_listener is not null)
        {
            _loop.Unregister(_token, _fd);
            _listener.Dispose();
            _listener = null;
            _token = -1;
            _fd = -1;
        }
        if (force) _tcp.ResetForward(_name);
    }

    public void OnPoll(uint events)
    {
        var listener = _listener;
        if (listener is null) return;
        for (int i = 0; i < AcceptBudget; i++)
        {
            Socket client;
            try
            {
                // Poll first so an empty backlog ends the loop without an exception.
                if (!listener.Poll(0, SelectMode.SelectRead)) return;
                client = listener.Accept();
            }
            catch (SocketException e)
            {
                // The client went away between readiness and accept (ECONNABORTED), or the backlog is empty.
                if (_logger.IsEnabled(LogLevel.Debug)) _logger.LogDebug("forward {Forward}: accept: {Error}", _name, e.SocketErrorCode);
                return;
            }
            TotalConnections++;
            if (!_tcp.OpenToGuest(client, _spec.GuestPort, _name))
            {
                if (_logger.IsEnabled(LogLevel.Warning)) _logger.LogWarning("forward {Forward}: connection table full; client reset", _name);
                try { client.LingerState = new LingerOption(true, 0); }
                catch (SocketException) { }
                client.Dispose();
            }
        }
    }

    /// <summary>The "in use" message, naming the process that holds the port when /proc tells (best effort).</summary>
    internal static string PortInUseMessage(IPAddress address, int port)
    {
        string text = $"Cannot listen on {address}:{port}: the address is already in use";
        try
        {
            var holder = FindListener(address, port);
            if (holder is { } h) return $"{text} by process {h.Pid} ({h.Comm}).";
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException or FormatException)
        {
        }
        return $"{text} (the process holding it could not be determined).";
    }

    /// <summary>Finds the listening socket's inode in /proc/net/tcp{,6}, then the process with a descriptor on it.</summary>
    private static (int Pid, string Comm)? FindListener(IPAddress address, int port)
    {
        var inodes = new HashSet<string>(StringComparer.Ordinal);
        foreach (var table in new[] { "/proc/net/tcp", "/proc/net/tcp6" })
        {
            if (!File.Exists(table)) continue;
            foreach (var line in File.ReadLines(table).Skip(1))
            {
                // sl local_address rem_address st tx_queue:rx_queue tr:tm->when retrnsmt uid timeout inode
                var f = line.Split(' ', StringSplitOptions.RemoveEmptyEntries);
                if (f.Length < 10 || f[3] != "0A") continue; // 0A = TCP_LISTEN
                int colon = f[1].LastIndexOf(':');
                if (colon < 0 || int.Parse(f[1][(colon + 1)..], NumberStyles.HexNumber, CultureInfo.InvariantCulture) != port) continue;
                if (!ListenerCovers(f[1][..colon], address)) continue;
                inodes.Add(f[9]);
            }
        }
        if (inodes.Count == 0) return null;
        foreach (var dir in Directory.EnumerateDirectories("/proc"))
        {
            string pidText = Path.GetFileName(dir);
            if (!int.TryParse(pidText, NumberStyles.None, CultureInfo.InvariantCulture, out int pid)) continue;
            IEnumerable<string> fds;
            try { fds = Directory.GetFiles(Path.Combine(dir, "fd")); }
            catch (Exception e) when (e is IOException or UnauthorizedAccessException) { continue; }
            foreach (var fd in fds)
            {
                string? target;
                try { target = new FileInfo(fd).LinkTarget; }
                catch (Exception e) when (e is IOException or UnauthorizedAccessException) { continue; }
                if (target is null || !target.StartsWith("socket:[", StringComparison.Ordinal)) continue;
                if (!inodes.Contains(target[8..^1])) continue;
                string comm;
                try { comm = File.ReadAllText(Path.Combine(dir, "comm")).Trim(); }
                catch (Exception e) when (e is IOException or UnauthorizedAccessException) { comm = "?"; }
                return (pid, comm);
            }
        }
        return null;
    }

    /// <summary>True when a listener bound to the hex address of /proc/net/tcp conflicts with <paramref name="wanted"/>.</summary>
    private static bool ListenerCovers(string hex, IPAddress wanted)
    {
        bool anyListener = hex.Trim('0').Length == 0;
        if (anyListener || wanted.Equals(IPAddress.Any)) return true;
        if (hex.Length == 8)
        {
            // /proc/net/tcp prints the address as the host-order value of the network-order word.
            uint raw = uint.Parse(hex, NumberStyles.HexNumber, CultureInfo.InvariantCulture);
            var bytes = BitConverter.GetBytes(raw);
            if (!BitConverter.IsLittleEndian) Array.Reverse(bytes);
            return new IPAddress(bytes).Equals(wanted);
        }
        // IPv6 listener: an IPv4-mapped address (::ffff:a.b.c.d) ends with the IPv4 word.
        return hex.Length == 32 && hex.StartsWith("0000000000000000FFFF0000", StringComparison.OrdinalIgnoreCase)
            && ListenerCovers(hex[24..], wanted);
    }
}
