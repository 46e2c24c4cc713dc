using System.Net;
using System.Net.Sockets;
using Emunet.Engine.Interop;
using Emunet.Engine.Runtime;
using Emunet.Engine.Stack.Nat;
using Emunet.Engine.Wire;
using Microsoft.Extensions.Logging;

namespace Emunet.Engine.Forwarding;

/// <summary>
/// A forward, whatever its protocol: a non-blocking host socket bound to the spec's address and port, whose clients
/// become flows into the guest (no adb in the path). This base owns what both protocols share: binding (one error
/// for a port in use, naming its holder), the bound port (a spec asking for port 0 is known by the port it got), the
/// target rule (<see cref="Target"/>), the counts (kept by the flow table through <see cref="Binding"/>), the
/// snapshot and stopping. Owner thread only.
/// </summary>
internal abstract class Forwarder : IPollable
{
    private const int SolSocket = 1;
    private const int SoReuseAddr = 2;

    private readonly EventLoop _loop;
    private readonly Func<IPv4Address> _target;
    private Socket? _socket;
    private int _token = -1;
    private int _fd = -1;

    /// <summary><paramref name="target"/> gives the guest address flows go to, asked at each new client (see <see cref="ForwardTable"/>).</summary>
    protected Forwarder(EventLoop loop, Func<IPv4Address> target, ForwardSpec spec, ILogger logger)
    {
        _loop = loop;
        _target = target;
        Spec = spec;
        RequestedHostPort = spec.HostPort;
        Logger = logger;
        Binding = new ForwardBinding(spec.ToString());
    }

    public ForwardSpec Spec { get; private set; }

    /// <summary>What the flow table counts this forward's flows by.</summary>
    public ForwardBinding Binding { get; }

    /// <summary>The host port asked for (0: any free one).</summary>
    public int RequestedHostPort { get; }

    /// <summary>The port bound (the spec's, or the one the kernel chose for port 0).</summary>
    public int BoundPort { get; private set; }

    public DateTimeOffset Created { get; } = DateTimeOffset.UtcNow;

    protected ILogger Logger { get; }

    /// <summary>The guest address a new client's flow goes to (the same rule for TCP and UDP: see <see cref="ForwardTable"/>).</summary>
    protected IPv4Address Target => _target();

    /// <summary>A snapshot for the control API.</summary>
    public ForwardInfo Info => new()
    {
        Spec = Spec,
        BoundPort = BoundPort,
        RequestedHostPort = RequestedHostPort,
        ActiveConnections = Binding.ActiveFlows,
        TotalConnections = Binding.TotalFlows,
        Created = Created,
    };

    /// <summary>
    /// Binds (owner thread: it registers with the loop). Throws <see cref="InvalidOperationException"/> naming the
    /// address and, when /proc tells, the process holding it when the port is in use; and naming the open-file limit
    /// and <c>ulimit -n</c> when its socket would take a descriptor from the headroom (<see cref="DescriptorHeadroom"/>).
    /// </summary>
    public void Start()
    {
        if (_socket is not null) return;
        Socket socket;
        try
        {
            socket = Spec.Protocol == ForwardProtocol.Tcp
                ? new Socket(Spec.HostAddress.AddressFamily, SocketType.Stream, ProtocolType.Tcp)
                : new Socket(Spec.HostAddress.AddressFamily, SocketType.Dgram, ProtocolType.Udp);
        }
        catch (SocketException e) when (e.SocketErrorCode == SocketError.TooManyOpenSockets)
        {
            throw new InvalidOperationException(AtHeadroomMessage(), e);
        }
        if (_loop.Headroom.IsAtHeadroom(socket))
        {
            // A forward holds its descriptor for good: one taken from the headroom would leave the emulator's
            // connection and the control socket without one.
            socket.Dispose();
            throw new InvalidOperationException(AtHeadroomMessage());
        }
        try
        {
            if (Spec.Protocol == ForwardProtocol.Tcp)
            {
                // SO_REUSEADDR alone (as servers do, for restarts over TIME-WAIT); .NET's ReuseAddress would add
                // SO_REUSEPORT on Linux and let two listeners share the port silently.
                socket.SetRawSocketOption(SolSocket, SoReuseAddr, BitConverter.GetBytes(1));
            }
            socket.Bind(new IPEndPoint(Spec.HostAddress, Spec.HostPort));
            if (Spec.Protocol == ForwardProtocol.Tcp) socket.Listen(512);
            socket.Blocking = false;
        }
        catch (SocketException e) when (e.SocketErrorCode == SocketError.AddressAlreadyInUse)
        {
            socket.Dispose();
            throw new InvalidOperationException(PortHolder.InUseMessage(Spec.Protocol, Spec.HostAddress, Spec.HostPort), e);
        }
        catch (SocketException e)
        {
            socket.Dispose();
            throw new InvalidOperationException($"Cannot listen on {new IPEndPoint(Spec.HostAddress, Spec.HostPort)} for the forward {Spec}: {e.Message}", e);
        }
        _socket = socket;
        BoundPort = ((IPEndPoint)socket.LocalEndPoint!).Port;
        Spec = Spec with { HostPort = BoundPort };
        Binding.Name = Spec.ToString();
        OnBound(socket);
        _fd = (int)socket.Handle;
        _token = _loop.Register(_fd, Libc.EPOLLIN, this);
        if (Logger.IsEnabled(LogLevel.Information))
            Logger.LogInformation("forward {Forward}: listening on {EndPoint}", Spec, new IPEndPoint(Spec.HostAddress, BoundPort));
    }

    /// <summary>
    /// Closes the host socket. The flows it made end with it where they need it (UDP replies leave through it);
    /// TCP connections stay unless <paramref name="resetConnections"/> resets them.
    /// </summary>
    public void Stop(bool resetConnections)
    {
        if (_socket is not null)
        {
            if (_token >= 0) _loop.Unregister(_token, _fd);
            OnStopping(resetConnections);
            _socket.Dispose();
            _socket = null;
            _token = -1;
            _fd = -1;
        }
    }

    private string AtHeadroomMessage() =>
        $"Cannot add the forward {Spec}: the engine is at its descriptor headroom ({_loop.Headroom.Advice}).";

    /// <summary>The socket is bound and about to be polled.</summary>
    protected virtual void OnBound(Socket socket) { }

    /// <summary>The socket is about to close.</summary>
    protected abstract void OnStopping(bool resetConnections);

    /// <summary>The socket is readable (a client to accept, a datagram to take).</summary>
    public abstract void OnPoll(uint events);

    protected Socket? Socket => _socket;

    private readonly AcceptBackoff _backoff = new();

    /// <summary>Until when (loop ms) the socket is out of the loop, after the process ran out of descriptors; 0 when not paused.</summary>
    public long PausedUntil => _backoff.PausedUntil;

    /// <summary>Pauses since a client was last accepted (0: accepting); an episode is logged once, when it starts.</summary>
    public long PausesThisEpisode => _backoff.PausesThisEpisode;

    /// <summary>
    /// True when the next descriptor would be in the headroom (or none is left): a client accepted now would take
    /// one the emulator and the control socket need.
    /// </summary>
    protected bool NextIsAtHeadroom() => _fd >= 0 && _loop.Headroom.MustProbe(_lastAccepted) && _loop.Headroom.NextIsAtHeadroom(_fd);

    /// <summary>The descriptor of the client accepted last (-1: none yet), for <see cref="DescriptorHeadroom.MustProbe"/>.</summary>
    private long _lastAccepted = -1;

    /// <summary>
    /// Takes note of the client just accepted: its descriptor decides whether the next accept needs the probe
    /// (<see cref="DescriptorHeadroom.MustProbe"/>), so a client that landed in the headroom brings the probe back.
    /// True when it did land there.
    /// </summary>
    protected bool AcceptedIntoHeadroom(Socket client)
    {
        _lastAccepted = (long)client.Handle;
        return _loop.Headroom.IsAtHeadroom(client);
    }

    /// <summary>
    /// No descriptor to accept with (the next one is in the headroom, or EMFILE/ENFILE): the waiting client stays in
    /// the backlog, and the listener leaves the loop for an <see cref="AcceptBackoff"/> pause; <see cref="ForwardTable"/>
    /// puts it back. Logged once per episode (until a client is accepted again).
    /// </summary>
    protected void PauseForDescriptors()
    {
        if (_socket is null || _backoff.PausedUntil != 0) return;
        bool first = _backoff.Pause(_loop.NowMs);
        _loop.Unregister(_token, _fd);
        _token = -1;
        _loop.WakeAt(_backoff.PausedUntil);
        if (first && Logger.IsEnabled(LogLevel.Warning))
            Logger.LogWarning("forward {Forward}: not accepting clients for want of file descriptors, retrying every {Min} to {Max} ms ({Advice}).",
                Spec, AcceptBackoff.FirstPauseMs, AcceptBackoff.MaxPauseMs, _loop.Headroom.Advice);
    }

    /// <summary>The pause is over: back in the loop (the back-off resets once a client is accepted again).</summary>
    public void Resume()
    {
        if (_backoff.PausedUntil == 0 || _socket is null) return;
        _backoff.EndPause();
        _token = _loop.Register(_fd, Libc.EPOLLIN, this);
    }

    /// <summary>A client was accepted: descriptors are available again, and an episode of pauses is over.</summary>
    protected void Accepted()
    {
        long pauses = _backoff.Accepted();
        if (pauses > 0 && Logger.IsEnabled(LogLevel.Information))
            Logger.LogInformation("forward {Forward}: accepting clients again, after {Count} pauses for want of file descriptors.", Spec, pauses);
    }
}
