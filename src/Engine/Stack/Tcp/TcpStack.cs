using Emunet.Engine.Diagnostics;
using System.Net;
using System.Net.Sockets;
using Emunet.Engine.Interop;
using Emunet.Engine.Runtime;
using Emunet.Engine.Stack.Nat;
using Emunet.Engine.Wire;
using Microsoft.Extensions.Logging;

namespace Emunet.Engine.Stack.Tcp;

/// <summary>
/// TCP terminated in Emunet and spliced onto host sockets. See README.md in this folder for the theory of operation.
/// The class is split by concern: this file holds the table, the public entry points and the timers;
/// <c>TcpStack.Open.cs</c> opening; <c>TcpStack.Receive.cs</c> the segments from the guest; <c>TcpStack.Send.cs</c> the segments to the guest;
/// <c>TcpStack.Host.cs</c> the host sockets. Owner thread only.
/// </summary>
internal sealed partial class TcpStack : ITcpHandler, IEndOfBatch
{
    /// <summary>Bytes buffered per connection and direction: four 64 KiB segments, enough to keep a loopback peer busy.</summary>
    public const int DefaultBufferSize = 256 * 1024;
    /// <summary>RFC 9293 §3.7.1: the MSS assumed when the SYN carries none.</summary>
    public const int DefaultGuestMss = 536;
    /// <summary>Smallest MSS accepted from the guest (Linux's TCP_MIN_MSS): a tiny MSS would only multiply segments.</summary>
    public const int MinMss = 88;
    /// <summary>Outbound connections whose host connect is pending, at once (a SYN flood to dead ends stops here).</summary>
    public const int MaxHalfOpen = 256;
    /// <summary>TCP slots only forwards may take, so a guest flooding outbound cannot lock the user out of the guest.</summary>
    public const int ReservedForForwards = 256;
    /// <summary>New outbound connections per second the guest may open (a token bucket; a burst of as many).</summary>
    public const int OutboundConnectsPerSecond = 4096;
    private const int FirstEphemeralPort = 49152;
    private const int EphemeralPortCount = 65536 - FirstEphemeralPort;

    private readonly EventLoop _loop;
    private readonly IPacketSender _sender;
    private readonly NetworkConfig _config;
    private readonly AddressMap _map;
    private readonly Counters _counters;
    private readonly ILogger _logger;
    private readonly FlowTable _flows;
    private List<TcpConnection> _txWaiters = new();
    private List<TcpConnection> _txSpare = new();
    /// <summary>Connections that took data this loop turn without acknowledging it yet (each at most once).</summary>
    private readonly List<TcpConnection> _ackDeferred = new();
    /// <summary>The rings' arrays, reused from one connection to the next.</summary>
    private readonly RingArrayPool _ringPool = new();
    private int _nextEphemeral;
    private int _halfOpen;
    private int _outbound;
    private double _connectTokens = OutboundConnectsPerSecond;
    private long _connectTokensAt;
    /// <summary>Set when the device refused a packet; cleared by <see cref="OnTransmitReady"/>.</summary>
    private bool _transmitBlocked;

    /// <summary>Connections live in <paramref name="flows"/>, whose timer scan drives theirs.</summary>
    public TcpStack(EventLoop loop, IPacketSender sender, FlowTable flows, NetworkConfig config, AddressMap map, Counters counters, ILogger logger)
    {
        _loop = loop;
        _sender = sender;
        _flows = flows;
        _config = config;
        _map = map;
        _counters = counters;
        _logger = logger;
        _nextEphemeral = Random.Shared.Next(EphemeralPortCount);
        loop.AddProducer(this);
    }

    // Tunables. Defaults follow the RFCs; tests shorten the timers.
    /// <summary>The flow table's TCP limit (<see cref="FlowTable.MaxTcpFlows"/> by default).</summary>
    public int ConnectionLimit
    {
        get => _flows.LimitOf(FlowProtocol.Tcp);
        set => _flows.SetLimit(FlowProtocol.Tcp, value);
    }
    /// <summary>Host→guest bytes held per connection (in flight to the guest plus read ahead). 1 MiB keeps a TCG guest's
    /// round trip of about a millisecond from capping throughput near 2 Gbit/s, as 256 KiB did.</summary>
    public int SendBufferSize { get; set; } = 4 * DefaultBufferSize;
    public int ReceiveBufferSize { get; set; } = DefaultBufferSize;
    /// <summary>RFC 6298 (2.1): 1 s before the first RTT sample.</summary>
    public int InitialRtoMs { get; set; } = 1000;
    /// <summary>Linux's TCP_RTO_MIN (RFC 6298 (2.4) asks 1 s; a virtual link has microsecond RTTs).</summary>
    public int MinRtoMs { get; set; } = 200;
    /// <summary>RFC 6298 (2.5): an upper bound of at least 60 s.</summary>
    public int MaxRtoMs { get; set; } = 60_000;
    /// <summary>Retransmissions of one segment before both sides are reset (RFC 9293 §3.8.3 R2).</summary>
    public int MaxRetransmissions { get; set; } = 10;
    /// <summary>SYN retransmissions into the guest before a forwarded connection is reset (RFC 9293 §3.8.3 R2 for SYN).</summary>
    public int MaxSynRetransmissions { get; set; } = 5;
    /// <summary>
    /// How long a lone segment's ACK may wait for data to ride on or a second segment to share it (RFC 1122 §4.2.3.2
    /// allows 500 ms, Linux waits at least 40). Short, because a guest sender held by Nagle waits this long; 0 ACKs
    /// every loop turn.
    /// </summary>
    public int DelayedAckMs { get; set; } = DefaultDelayedAckMs;
    /// <summary>The default of <see cref="DelayedAckMs"/>: a TCG guest's next segment of a burst comes well within it.</summary>
    public const int DefaultDelayedAckMs = 4;
    /// <summary>How long a host connect may take before the guest gets a RST (BSD's 75 s connection-establishment timer).</summary>
    public int ConnectTimeoutMs { get; set; } = 75_000;

    public int ConnectionCount => _flows.CountOf(FlowProtocol.Tcp);

    /// <summary>A guest is attached and known: a forwarded connection can be opened into it now.</summary>
    public bool GuestReachable => _sender.GuestReachable;

    /// <summary>Outbound connections with their host connect pending (at most <see cref="HalfOpenLimit"/>).</summary>
    public int HalfOpenCount => _halfOpen;

    /// <summary><see cref="MaxHalfOpen"/> by default (tests lower it).</summary>
    public int HalfOpenLimit { get; set; } = MaxHalfOpen;

    /// <summary>Slots of <see cref="ConnectionLimit"/> only forwards may take: <see cref="ReservedForForwards"/>, or a sixteenth of a smaller limit.</summary>
    public int ForwardReserve => Math.Min(ReservedForForwards, ConnectionLimit / 16);

    /// <summary>
    /// Whether the guest may open one more outbound connection now: the half-open limit, the slots kept for forwards,
    /// and the connect rate (RFC 4987 §3: bound what a SYN flood can hold). Counts the refusal.
    /// </summary>
    private bool AdmitOutbound()
    {
        if (_halfOpen >= HalfOpenLimit) { _counters.Drop(DropReason.TcpHalfOpenLimit); return false; }
        if (_outbound >= ConnectionLimit - ForwardReserve || !_flows.HasRoom(FlowProtocol.Tcp))
        {
            _counters.Drop(DropReason.TcpFlowTableFull);
            return false;
        }
        long now = _loop.NowMs;
        _connectTokens = Math.Min(OutboundConnectsPerSecond, _connectTokens + (now - _connectTokensAt) * (OutboundConnectsPerSecond / 1000.0));
        _connectTokensAt = now;
        if (_connectTokens < 1) { _counters.Drop(DropReason.TcpConnectRateLimited); return false; }
        _connectTokens--;
        return true;
    }

    /// <summary>The MSS Emunet advertises: what one packet to the device carries, minus the TCP header.</summary>
    private int LocalMssFor(FlowAddress guest) => Math.Clamp(_sender.MaxPayloadFor(guest) - TcpSegment.MinHeaderLength, MinMss, ushort.MaxValue);

    /// <summary>RFC 7323 §2.3: the smallest shift whose largest window covers the receive buffer.</summary>
    private int LocalWindowScale
    {
        get
        {
            int s = 0;
            while (s < 14 && ((long)ushort.MaxValue << s) < ReceiveBufferSize) s++;
            return s;
        }
    }

    public void OnSegment(in IPv4Packet packet)
    {
        var source = packet.Source;
        var destination = packet.Destination;
        // RFC 9293 §3.10.7.2: segments to or from broadcast/multicast are not answered.
        if (source.IsBroadcast || source.IsMulticast || destination.IsBroadcast || destination.IsMulticast)
        {
            _counters.Drop(DropReason.TcpMalformed);
            return;
        }
        OnSegment(FlowAddress.FromIPv4(source), FlowAddress.FromIPv4(destination), packet.Payload);
    }

    /// <summary>
    /// A segment of either family (IPv6 from <c>IPv6Stack</c>, whose addresses were checked unicast), checksummed
    /// here over its family's pseudo-header. Borrows <paramref name="bytes"/> for the call.
    /// </summary>
    public void OnSegment(FlowAddress source, FlowAddress destination, ReadOnlySpan<byte> bytes)
    {
        var error = TcpSegment.TryParse(bytes, FlowAddress.PseudoHeaderBase(source, destination, IPv4Packet.ProtocolTcp), out var segment);
        if (error != TcpSegment.ParseError.None)
        {
            _counters.Drop(error == TcpSegment.ParseError.BadChecksum ? DropReason.TcpBadChecksum : DropReason.TcpMalformed);
            return;
        }
        var key = new FlowKey(FlowProtocol.Tcp, source, segment.SourcePort, destination, segment.DestinationPort);
        if (_flows.TryGet(key, out var flow)) OnConnectionSegment((TcpConnection)flow, segment);
        else OnNoConnection(source, destination, segment);
    }

    public void OnTransmitReady()
    {
        _transmitBlocked = false;
        var list = _txWaiters;
        _txWaiters = _txSpare;
        for (int i = 0; i < list.Count; i++)
        {
            var c = list[i];
            c.WaitingTransmit = false;
            if (c.State == TcpState.Closed) continue;
            if (_transmitBlocked) { QueueTransmit(c); continue; }
            if (c.State == TcpState.SynReceived) SendSynAck(c);
            else if (c.State == TcpState.SynSent) SendSyn(c);
            else Output(c, ackNow: false); // sends the owed ACK if no data carries it
        }
        list.Clear();
        _txSpare = list;
    }

    public void OnGuestGone()
    {
        for (int i = _flows.Count - 1; i >= 0; i--)
        {
            if (i >= _flows.Count || _flows[i] is not TcpConnection c || c.Link != _sender.Link) continue;
            CloseHost(c, abort: true);
            Free(c);
        }
        _txWaiters.Clear();
    }

    /// <summary>
    /// Opens a connection from the gateway (10.0.2.2, an ephemeral port) to <paramref name="guest"/>:<paramref name="guestPort"/>
    /// for a client accepted on a forward's listener, and splices the two once the guest answers. Takes ownership of
    /// <paramref name="acceptedHostSocket"/> on success; on false (table full, no port left) the caller keeps it.
    /// The listener sets TCP_NODELAY, which the accepted socket inherits.
    /// </summary>
    public bool OpenToGuest(Socket acceptedHostSocket, IPv4Address guest, int guestPort, ForwardBinding forward) =>
        OpenFlowToGuest(acceptedHostSocket, FlowAddress.FromIPv4(guest), guestPort, forward);

    /// <summary>As the IPv4 overload, for a guest address of either family: an IPv6 one is reached from the IPv6 host alias.</summary>
    public bool OpenFlowToGuest(Socket acceptedHostSocket, FlowAddress guest, int guestPort, ForwardBinding forward)
    {
        if (!_flows.HasRoom(FlowProtocol.Tcp))
        {
            _counters.Drop(DropReason.TcpFlowTableFull);
            return false;
        }
        var gateway = guest.IsIPv4 ? FlowAddress.FromIPv4(_config.Gateway) : FlowAddress.FromIPv6(_config.IPv6Gateway);
        ushort port = 0;
        for (int attempt = 0; attempt < EphemeralPortCount; attempt++)
        {
            _nextEphemeral = (_nextEphemeral + 1) % EphemeralPortCount;
            var candidate = (ushort)(FirstEphemeralPort + _nextEphemeral);
            if (!_flows.Contains(new FlowKey(FlowProtocol.Tcp, guest, (ushort)guestPort, gateway, candidate))) { port = candidate; break; }
        }
        if (port == 0)
        {
            _counters.Drop(DropReason.TcpFlowTableFull);
            return false;
        }
        IPEndPoint? remote;
        try
        {
            // TCP_NODELAY is the listener's (Linux copies it to the sockets it accepts: one setsockopt per forward, not
            // per client); O_NONBLOCK is not inherited. The remote address is the one accept(2) returned, held already;
            // the local one is asked for only by a snapshot.
            acceptedHostSocket.Blocking = false;
            remote = acceptedHostSocket.RemoteEndPoint as IPEndPoint;
        }
        catch (SocketException)
        {
            return false; // the client is already gone
        }
        var c = NewConnection(guest, (ushort)guestPort, gateway, port, FlowDirection.Forwarded, forward);
        c.HostSocket = acceptedHostSocket;
        c.HostFd = (int)acceptedHostSocket.Handle;
        c.HostRemote = remote;
        c.State = TcpState.SynSent;
        c.Mss = Math.Min(DefaultGuestMss, LocalMssFor(guest));
        c.RcvScale = LocalWindowScale;
        if (!Insert(c))
        {
            c.HostSocket = null; // the caller keeps the socket
            Free(c);
            return false;
        }
        UpdateHostInterest(c);
        SendSyn(c);
        c.SndNxt = Seq.Add(c.Iss, 1);
        c.SndMax = c.SndNxt;
        Arm(ref c.RtoDeadline, _loop.NowMs + c.RtoMs);
        if (_logger.IsEnabled(LogLevel.Debug))
            _logger.LogDebug("tcp {Id}: forward {Forward} client {Client} -> guest port {Port}", c.Id, forward.Name, c.HostRemote, guestPort);
        return true;
    }

    /// <summary>Resets (both sides) every connection made by <paramref name="forward"/>.</summary>
    public void ResetForward(ForwardBinding forward)
    {
        for (int i = _flows.Count - 1; i >= 0; i--)
        {
            if (i >= _flows.Count) continue;
            if (_flows[i] is TcpConnection c && c.Forward == forward) Reset(c, resetGuest: true, resetHost: true);
        }
    }

    /// <summary>The state of the connection with this key, for tests; null when there is none.</summary>
    internal TcpState? StateOf(IPv4Address guest, int guestPort, IPv4Address peer, int peerPort) =>
        Find(guest, guestPort, peer, peerPort)?.State;

    /// <summary>Bytes the connection with this key holds in its send (host→guest) and receive rings, for tests.</summary>
    internal (int Send, int Receive)? RingsOf(IPv4Address guest, int guestPort, IPv4Address peer, int peerPort) =>
        Find(guest, guestPort, peer, peerPort) is { } c ? (c.SendRing.Count, c.ReceiveRing.Count) : null;

    /// <summary>The IPv4 connection with this key, for the test views above; null when there is none.</summary>
    private TcpConnection? Find(IPv4Address guest, int guestPort, IPv4Address peer, int peerPort) =>
        _flows.TryGet(FlowKey.IPv4(FlowProtocol.Tcp, guest, (ushort)guestPort, peer, (ushort)peerPort), out var f) ? f as TcpConnection : null;

    // ---- Timers -------------------------------------------------------------------------------------------------

    /// <summary>The flow table's timer scan reached <paramref name="c"/>: run its due timers, return its next deadline.</summary>
    internal long OnConnectionTimer(TcpConnection c, long nowMs)
    {
        if (c.RtoDeadline <= nowMs) OnRetransmissionTimeout(c, nowMs);
        if (c.State != TcpState.Closed && c.PersistDeadline <= nowMs) OnPersistTimeout(c, nowMs);
        if (c.State != TcpState.Closed && c.AckDeadline <= nowMs)
        {
            // RFC 1122 §4.2.3.2: the delayed ACK is due; nothing carried it meanwhile.
            c.AckDeadline = long.MaxValue;
            if (c.IsSynchronized && c.RcvAcked != c.RcvNxt) SendAck(c);
        }
        if (c.State == TcpState.Closed) return long.MaxValue;
        return Math.Min(Math.Min(c.RtoDeadline, c.PersistDeadline), c.AckDeadline);
    }

    private void Arm(ref long deadline, long at)
    {
        deadline = at;
        _loop.WakeAt(at);
    }

    /// <summary>RFC 6298 (5.4)-(5.7) and RFC 5681 §3.1: back off, shrink the window to one segment, go back N.</summary>
    private void OnRetransmissionTimeout(TcpConnection c, long now)
    {
        c.RtoDeadline = long.MaxValue;
        if (c.State == TcpState.Connecting)
        {
            if (_logger.IsEnabled(LogLevel.Debug)) _logger.LogDebug("tcp {Id}: host connect to {Remote} timed out", c.Id, c.HostRemote);
            Reset(c, resetGuest: true, resetHost: true);
            return;
        }
        c.Retries++;
        int limit = c.State is TcpState.SynSent or TcpState.SynReceived ? MaxSynRetransmissions : MaxRetransmissions;
        if (c.Retries > limit)
        {
            if (_logger.IsEnabled(LogLevel.Debug)) _logger.LogDebug("tcp {Id}: guest stopped answering after {N} retransmissions; resetting", c.Id, c.Retries - 1);
            Reset(c, resetGuest: c.State != TcpState.SynSent, resetHost: true);
            return;
        }
        c.RtoMs = Math.Min(c.RtoMs * 2, MaxRtoMs);
        c.RttTiming = false; // Karn: no sample from a retransmitted segment.
        if (c.State == TcpState.SynSent) { SendSyn(c); Arm(ref c.RtoDeadline, now + c.RtoMs); return; }
        if (c.State == TcpState.SynReceived) { SendSynAck(c); Arm(ref c.RtoDeadline, now + c.RtoMs); return; }
        int flight = Seq.Diff(c.SndMax, c.SndUna);
        c.Ssthresh = Math.Max(flight / 2, 2 * c.Mss);
        c.Cwnd = c.Mss;
        c.InRecovery = false;
        c.DupAcks = 0;
        c.SndNxt = c.SndUna;
        // The resent segment re-arms the timer; when the window is closed nothing is resent and the persist timer
        // takes over, so a guest that keeps answering with a zero window is never given up on (RFC 9293 §3.8.6.1).
        Output(c, ackNow: false);
    }

    /// <summary>RFC 9293 §3.8.6.1: probe a zero window; the guest answers with its current window.</summary>
    private void OnPersistTimeout(TcpConnection c, long now)
    {
        c.PersistDeadline = long.MaxValue;
        if (!c.IsSynchronized || c.SndWnd != 0 || c.SndUna != c.SndNxt || UnsentBytes(c) <= 0) { c.PersistBackoff = 0; return; }
        // An already-acknowledged sequence number with no data: the guest must answer with an ACK (Linux's probe).
        EmitSegment(c, unchecked(c.SndUna - 1), 0, TcpFlags.Ack, synOptions: false);
        c.PersistBackoff = Math.Min(c.PersistBackoff + 1, 16);
        long delay = Math.Min((long)c.RtoMs << c.PersistBackoff, MaxRtoMs);
        Arm(ref c.PersistDeadline, now + delay);
    }

    // ---- Table --------------------------------------------------------------------------------------------------

    private TcpConnection NewConnection(FlowAddress guest, ushort guestPort, FlowAddress peer, ushort peerPort,
        FlowDirection direction, ForwardBinding? forward)
    {
        var c = new TcpConnection(this, SendBufferSize, ReceiveBufferSize, _flows.Budget, _ringPool)
        {
            Key = new FlowKey(FlowProtocol.Tcp, guest, guestPort, peer, peerPort),
            GuestAddress = guest,
            GuestPort = guestPort,
            PeerAddress = peer,
            PeerPort = peerPort,
            Direction = direction,
            Forward = forward,
            Iss = (uint)Random.Shared.NextInt64(0, 1L << 32), // RFC 9293 §3.4.1 / RFC 6528: unpredictable ISN
            RtoMs = InitialRtoMs,
            RcvMss = LocalMssFor(guest),
            Link = _sender.Link,
        };
        c.SndUna = c.Iss;
        c.SndNxt = c.Iss;
        c.SndMax = c.Iss;
        c.RingSeq = Seq.Add(c.Iss, 1);
        c.Ssthresh = int.MaxValue;
        return c;
    }

    /// <summary>Admits the connection to the flow table; false (counted there) when TCP is at its limit.</summary>
    private bool Insert(TcpConnection c)
    {
        if (!_flows.TryAdd(c)) return false;
        if (c.Direction == FlowDirection.Outbound) _outbound++;
        if (c.State == TcpState.Connecting) { c.HalfOpen = true; _halfOpen++; }
        return true;
    }

    /// <summary>The host connect is over (accepted, refused or abandoned): the connection no longer counts as half-open.</summary>
    private void EndHalfOpen(TcpConnection c)
    {
        if (!c.HalfOpen) return;
        c.HalfOpen = false;
        _halfOpen--;
    }

    /// <summary>Drops the connection from the table and returns its buffers. The host socket must be closed already.</summary>
    private void Free(TcpConnection c)
    {
        if (c.State == TcpState.Closed && !c.InTable) return;
        c.State = TcpState.Closed;
        EndHalfOpen(c);
        if (c.InTable && c.Direction == FlowDirection.Outbound) _outbound--;
        _flows.Remove(c);
        c.RtoDeadline = long.MaxValue;
        c.PersistDeadline = long.MaxValue;
        c.AckDeadline = long.MaxValue;
        c.Release();
    }

    /// <summary>
    /// Drops a connection whose handling threw: both sides reset as far as that still works, the entry freed whatever
    /// happens, so the table never keeps a half-torn connection.
    /// </summary>
    internal void Abort(TcpConnection c)
    {
        try { Reset(c, resetGuest: true, resetHost: true); }
        catch (Exception e) when (e is not OutOfMemoryException)
        {
            try { CloseHost(c, abort: true); } catch (Exception inner) when (inner is not OutOfMemoryException) { }
            if (c.InTable) _flows.Remove(c);
            c.State = TcpState.Closed;
            c.Release();
        }
    }

    /// <summary>Aborts a connection: RST to the guest if asked and it can be told, RST to the host peer (linger 0) if asked.</summary>
    private void Reset(TcpConnection c, bool resetGuest, bool resetHost)
    {
        if (c.State == TcpState.Closed) return;
        if (resetGuest) SendReset(c);
        CloseHost(c, abort: resetHost);
        Free(c);
    }
}
