using Emunet.Engine.Diagnostics;
using System.Net;
using System.Net.Sockets;
using Emunet.Engine.Forwarding;
using Emunet.Engine.Interop;
using Emunet.Engine.Runtime;
using Emunet.Engine.Stack.Nat;
using Emunet.Engine.Wire;
using Microsoft.Extensions.Logging;

namespace Emunet.Engine.Stack;

/// <summary>
/// UDP NAT. Theory of operation: a guest datagram is matched to a flow by (guest address, guest port, destination,
/// destination port). A new flow gets one non-blocking host UDP socket, connected to where <see cref="AddressMap"/>
/// maps the destination (10.0.2.2 to 127.0.0.1, 10.0.2.3:53 to the upstream resolver, anything else to itself), so
/// the kernel filters replies and reports ICMP errors as ECONNREFUSED, which goes back to the guest as port
/// unreachable. Replies are received straight into the frame borrowed from the device (no copy) and leave with
/// the flow's destination as their source, which makes the DNS relay just another flow. Inbound forwards bind a
/// host socket; each host client gets a flow that reaches guest:GuestPort from 10.0.2.2:(a port chosen per
/// client), and the guest's replies to that port go back to the client. Flows expire when idle. Owner thread only.
/// </summary>
internal sealed class Udp : ITimerClient, IDisposable
{
    /// <summary>Flows (outbound and forwarded clients) at once; passt uses a similar order of magnitude.</summary>
    public const int MaxFlows = 1024;
    /// <summary>Forward listeners at once.</summary>
    public const int MaxForwards = 64;
    /// <summary>RFC 4787 REQ-5: a UDP mapping lives at least two minutes; 60 s is the Linux conntrack default for unreplied flows and slirp's.</summary>
    public const int IdleTimeoutMs = 60_000;
    /// <summary>A DNS exchange is one query and one answer.</summary>
    public const int DnsIdleTimeoutMs = 10_000;
    /// <summary>Datagrams handled per readiness event, so one busy socket cannot starve the loop.</summary>
    public const int DatagramsPerPoll = 64;
    /// <summary>Ports the gateway side of forwarded flows are taken from (IANA dynamic range, RFC 6335 §6).</summary>
    public const int ForwardPortFirst = 49152;
    public const int ForwardPortLast = 65535;
    public const ushort DnsPort = 53;

    private readonly EventLoop _loop;
    private readonly IPacketSender _sender;
    private readonly Icmp _icmp;
    private readonly NetworkConfig _config;
    private readonly AddressMap _map;
    private readonly Counters _counters;
    private readonly ILogger _logger;
    private readonly Dictionary<FlowKey, Flow> _flows = new();
    private readonly List<Listener> _listeners = new();
    private readonly List<Flow> _expired = new();
    private readonly byte[] _scratch = new byte[65536];
    private readonly SocketAddress _receiveAddress = new(AddressFamily.InterNetwork);
    private int _nextForwardPort = ForwardPortFirst;
    private long _nextFlowId = 1;

    public Udp(EventLoop loop, IPacketSender sender, Icmp icmp, NetworkConfig config, AddressMap map, Counters counters, ILogger logger)
    {
        _loop = loop;
        _sender = sender;
        _icmp = icmp;
        _config = config;
        _map = map;
        _counters = counters;
        _logger = logger;
        GuestAddress = config.Guest;
    }

    /// <summary>Where forwarded datagrams go: the guest's address as the stack knows it.</summary>
    public IPv4Address GuestAddress { get; set; }

    public int FlowCount => _flows.Count;
    public int ForwardCount => _listeners.Count;

    private readonly record struct FlowKey(uint Guest, ushort GuestPort, uint Peer, ushort PeerPort);

    private sealed class Flow : IPollable
    {
        public required Udp Owner;
        public required FlowKey Key;
        public required IPv4Address Guest;
        public required ushort GuestPort;
        /// <summary>The address and port the guest sees as the other end.</summary>
        public required IPv4Address Peer;
        public required ushort PeerPort;
        /// <summary>Outbound flows own a connected socket; forwarded flows send through their listener's.</summary>
        public Socket? Socket;
        public int Fd = -1;
        public int Token = -1;
        public Listener? Listener;
        public SocketAddress? Client;
        public IPEndPoint? HostRemote;
        public bool IsDns;
        public long LastActive;
        public long Id;
        public long BytesFromGuest;
        public long BytesToGuest;
        public DateTimeOffset Started;

        public int TimeoutMs => IsDns ? DnsIdleTimeoutMs : IdleTimeoutMs;

        public void OnPoll(uint events) => Owner.OnFlowReadable(this);
    }

    private sealed class Listener : IPollable
    {
        public required Udp Owner;
        public required ForwardSpec Spec;
        public required Socket Socket;
        public required int Fd;
        public int Token;
        public required int BoundPort;
        public readonly Dictionary<SocketAddress, Flow> Clients = new();
        public long TotalClients;
        public DateTimeOffset Created = DateTimeOffset.UtcNow;

        public void OnPoll(uint events) => Owner.OnListenerReadable(this);
    }

    // ---- guest -> host ----

    /// <summary>A datagram from the guest (not DHCP) with a checked header and checksum; both borrowed for the call.</summary>
    public void OnDatagram(in IPv4Packet packet, in UdpDatagram datagram)
    {
        var destination = packet.Destination;
        if (destination.IsBroadcast || destination.IsMulticast || destination == _config.BroadcastAddress)
        {
            _counters.Drop(DropReason.NotForUs);
            return;
        }
        var payload = datagram.Payload;
        var key = new FlowKey(packet.Source.Value, datagram.SourcePort, destination.Value, datagram.DestinationPort);
        bool isDns = destination == _config.Dns && datagram.DestinationPort == DnsPort;
        // RFC 1035 §4.1.1: anything shorter than a header is not DNS; the relay does not pass it upstream.
        if (isDns && !DnsMessage.TryParse(payload, out _)) { _counters.Drop(DropReason.DnsMalformed); return; }
        if (!_flows.TryGetValue(key, out var flow))
        {
            flow = OpenOutbound(in packet, key, datagram.SourcePort, datagram.DestinationPort, isDns);
            if (flow is null) return;
        }
        long now = _loop.NowMs;
        flow.LastActive = now;
        if (flow.Listener is not null)
        {
            try
            {
                flow.Listener.Socket.SendTo(payload, SocketFlags.None, flow.Client!);
            }
            catch (SocketException)
            {
                _counters.Drop(DropReason.UdpSendFailed);
                return;
            }
        }
        else
        {
            flow.Socket!.Send(payload, SocketFlags.None, out var error);
            if (error == SocketError.ConnectionRefused)
            {
                // A previous datagram drew ICMP port unreachable (RFC 1122 §4.1.3.3); pass it on.
                _icmp.SendDestinationUnreachable(IcmpPacket.CodePortUnreachable, in packet);
                return;
            }
            if (error != SocketError.Success)
            {
                if (error == SocketError.MessageSize) _counters.Drop(DropReason.UdpDatagramTooLarge);
                else _counters.Drop(DropReason.UdpSendFailed);
                return;
            }
        }
        flow.BytesFromGuest += payload.Length;
    }

    private Flow? OpenOutbound(in IPv4Packet packet, FlowKey key, ushort guestPort, ushort peerPort, bool isDns)
    {
        var destination = packet.Destination;
        if (!_map.TryMapOutbound(destination, peerPort, out var host, out int hostPort))
        {
            _counters.Drop(isDns ? DropReason.DnsUpstreamFailed : DropReason.UdpNoRoute);
            return null;
        }
        if (_flows.Count >= MaxFlows) { _counters.Drop(DropReason.UdpFlowTableFull); return null; }
        var remote = new IPEndPoint(host, hostPort);
        Socket? socket = null;
        try
        {
            // Creation fails when the process is out of file descriptors (EMFILE); that is a drop, not a crash.
            socket = new Socket(AddressFamily.InterNetwork, SocketType.Dgram, ProtocolType.Udp) { Blocking = false };
            socket.Connect(remote);
        }
        catch (SocketException e)
        {
            socket?.Dispose();
            _counters.Drop(isDns ? DropReason.DnsUpstreamFailed : DropReason.UdpSendFailed);
            if (e.SocketErrorCode is SocketError.NetworkUnreachable or SocketError.HostUnreachable)
                _icmp.SendDestinationUnreachable(IcmpPacket.CodeNetUnreachable, in packet);
            return null;
        }
        var flow = new Flow
        {
            Owner = this, Key = key, Guest = packet.Source, GuestPort = guestPort, Peer = destination, PeerPort = peerPort,
            Socket = socket, Fd = (int)socket.Handle, HostRemote = remote, IsDns = isDns, LastActive = _loop.NowMs,
            Id = _nextFlowId++, Started = DateTimeOffset.UtcNow,
        };
        flow.Token = _loop.Register(flow.Fd, Libc.EPOLLIN, flow);
        _flows.Add(key, flow);
        _loop.WakeAt(flow.LastActive + flow.TimeoutMs);
        if (_logger.IsEnabled(LogLevel.Debug))
            _logger.LogDebug("UDP flow {Guest}:{GuestPort} -> {Peer}:{PeerPort} via {Remote}", flow.Guest, guestPort, destination, peerPort, remote);
        return flow;
    }

    // ---- host -> guest ----

    private void OnFlowReadable(Flow flow)
    {
        var socket = flow.Socket!;
        for (int budget = 0; budget < DatagramsPerPoll; budget++)
        {
            var packet = _sender.BeginPacket(flow.Peer, flow.Guest, IPv4Packet.ProtocolUdp, _sender.MaxPayload);
            var span = packet.Payload;
            if (span.IsEmpty)
            {
                // The guest cannot take it now; UDP may lose it, but the socket must be drained.
                socket.Receive(_scratch, SocketFlags.None, out var e);
                if (e == SocketError.WouldBlock) return;
                if (e == SocketError.Success) _counters.Drop(DropReason.TransmitQueueFull);
                continue;
            }
            var room = span[UdpDatagram.HeaderLength..];
            // MSG_TRUNC: the kernel returns the datagram's real length, so an oversize one is seen, not cut.
            int n = socket.Receive(room, SocketFlags.Truncated, out var error);
            if (error == SocketError.WouldBlock) return;
            if (error == SocketError.ConnectionRefused)
            {
                SendPortUnreachable(flow);
                continue;
            }
            if (error != SocketError.Success) { _counters.Drop(DropReason.UdpSendFailed); return; }
            if (n > room.Length) { _counters.Drop(DropReason.UdpDatagramTooLarge); continue; }
            if (flow.IsDns && !DnsMessage.TryParse(room[..n], out _)) { _counters.Drop(DropReason.DnsMalformed); continue; }
            Deliver(flow, in packet, n);
        }
    }

    private void OnListenerReadable(Listener listener)
    {
        // One datagram per readiness event: epoll is level-triggered, so the loop comes back while more wait, and
        // ReceiveFrom with a SocketAddress has no error-code overload to ask "would block" without an exception.
        var guest = GuestAddress;
        var packet = _sender.BeginPacket(_config.Gateway, guest, IPv4Packet.ProtocolUdp, _sender.MaxPayload);
        var span = packet.Payload;
        bool drop = span.IsEmpty;
        var room = drop ? _scratch.AsSpan() : span[UdpDatagram.HeaderLength..];
        int n;
        try
        {
            n = listener.Socket.ReceiveFrom(room, SocketFlags.Truncated, _receiveAddress);
        }
        catch (SocketException)
        {
            return;
        }
        if (drop) { _counters.Drop(DropReason.TransmitQueueFull); return; }
        if (n > room.Length) { _counters.Drop(DropReason.UdpDatagramTooLarge); return; }
        if (!listener.Clients.TryGetValue(_receiveAddress, out var flow))
        {
            flow = OpenForwarded(listener, guest);
            if (flow is null) return;
        }
        // The borrowed frame may have been reused by nothing in between: OpenForwarded sends no packet.
        Deliver(flow, in packet, n);
    }

    private Flow? OpenForwarded(Listener listener, IPv4Address guest)
    {
        if (_flows.Count >= MaxFlows) { _counters.Drop(DropReason.UdpFlowTableFull); return null; }
        ushort guestPort = (ushort)listener.Spec.GuestPort;
        // At most MaxFlows ports are taken, so MaxFlows + 1 tries find a free one.
        FlowKey key = default;
        ushort port = 0;
        for (int i = 0; i <= MaxFlows; i++)
        {
            port = (ushort)_nextForwardPort;
            _nextForwardPort = _nextForwardPort == ForwardPortLast ? ForwardPortFirst : _nextForwardPort + 1;
            key = new FlowKey(guest.Value, guestPort, _config.Gateway.Value, port);
            if (!_flows.ContainsKey(key)) break;
        }
        var client = new SocketAddress(_receiveAddress.Family, _receiveAddress.Size);
        _receiveAddress.Buffer.Span[.._receiveAddress.Size].CopyTo(client.Buffer.Span);
        IPEndPoint? remote = null;
        try { remote = (IPEndPoint)new IPEndPoint(IPAddress.Any, 0).Create(client); } catch (ArgumentException) { }
        var flow = new Flow
        {
            Owner = this, Key = key, Guest = guest, GuestPort = guestPort, Peer = _config.Gateway, PeerPort = port,
            Listener = listener, Client = client, HostRemote = remote, LastActive = _loop.NowMs, Id = _nextFlowId++,
            Started = DateTimeOffset.UtcNow,
        };
        _flows.Add(key, flow);
        listener.Clients.Add(client, flow);
        listener.TotalClients++;
        _loop.WakeAt(flow.LastActive + flow.TimeoutMs);
        return flow;
    }

    private void Deliver(Flow flow, in OutboundPacket packet, int payloadLength)
    {
        int length = UdpDatagram.WriteHeader(packet.Payload, flow.Peer, flow.Guest, flow.PeerPort, flow.GuestPort, payloadLength);
        packet.Commit(length);
        flow.LastActive = _loop.NowMs;
        flow.BytesToGuest += payloadLength;
    }

    private void SendPortUnreachable(Flow flow)
    {
        // The datagram that drew the error is gone; rebuild its headers (RFC 792: IP header + 8 bytes is enough for
        // the guest to find its socket).
        Span<byte> original = stackalloc byte[IPv4Packet.MinHeaderLength + UdpDatagram.HeaderLength];
        IPv4Packet.WriteHeader(original, flow.Guest, flow.Peer, IPv4Packet.ProtocolUdp, original.Length);
        UdpDatagram.WriteHeader(original[IPv4Packet.MinHeaderLength..], flow.Guest, flow.Peer, flow.GuestPort, flow.PeerPort, 0);
        if (IPv4Packet.TryParse(original, out var packet) == IPv4Packet.ParseError.None)
            _icmp.SendDestinationUnreachable(IcmpPacket.CodePortUnreachable, in packet);
    }

    // ---- forwards ----

    /// <summary>
    /// Binds a host UDP socket for <paramref name="spec"/> and returns the port bound (the spec's, or the one the
    /// kernel chose for port 0). Owner thread only.
    /// </summary>
    /// <exception cref="InvalidOperationException">The address and port are in use, or too many forwards exist.</exception>
    public int AddForward(ForwardSpec spec)
    {
        if (spec.Protocol != ForwardProtocol.Udp) throw new ArgumentException($"'{spec}' is not a UDP forward.", nameof(spec));
        if (_listeners.Count >= MaxForwards)
            throw new InvalidOperationException($"Cannot add UDP forward {spec}: at most {MaxForwards} UDP forwards can exist.");
        var socket = new Socket(AddressFamily.InterNetwork, SocketType.Dgram, ProtocolType.Udp);
        try
        {
            socket.Bind(new IPEndPoint(spec.HostAddress, spec.HostPort));
            socket.Blocking = false;
        }
        catch (SocketException e)
        {
            socket.Dispose();
            if (e.SocketErrorCode == SocketError.AddressAlreadyInUse)
                throw new InvalidOperationException($"Cannot add UDP forward {spec}: UDP port {spec.HostPort} on {spec.HostAddress} is already in use.", e);
            throw new InvalidOperationException($"Cannot add UDP forward {spec}: binding UDP port {spec.HostPort} on {spec.HostAddress} failed ({e.SocketErrorCode}).", e);
        }
        int bound = ((IPEndPoint)socket.LocalEndPoint!).Port;
        // A forward asked for port 0 is known by the port it got (as TCP forwards are).
        spec = spec with { HostPort = bound };
        var listener = new Listener { Owner = this, Spec = spec, Socket = socket, Fd = (int)socket.Handle, BoundPort = bound };
        listener.Token = _loop.Register(listener.Fd, Libc.EPOLLIN, listener);
        _listeners.Add(listener);
        if (_logger.IsEnabled(LogLevel.Information))
            _logger.LogInformation("UDP forward {Spec} listening on {Address}:{Port}", spec, spec.HostAddress, bound);
        return bound;
    }

    /// <summary>
    /// Closes the forward for <paramref name="spec"/> (matched by spec, or by host address and bound port) and its
    /// client flows. Returns false when there is none. Owner thread only.
    /// </summary>
    public bool RemoveForward(ForwardSpec spec)
    {
        for (int i = 0; i < _listeners.Count; i++)
        {
            var l = _listeners[i];
            if (l.Spec == spec || (l.Spec.HostAddress.Equals(spec.HostAddress) && l.BoundPort == spec.HostPort))
            {
                _listeners.RemoveAt(i);
                _expired.Clear();
                _expired.AddRange(l.Clients.Values);
                foreach (var f in _expired) Close(f);
                _expired.Clear();
                _loop.Unregister(l.Token, l.Fd);
                l.Socket.Dispose();
                return true;
            }
        }
        return false;
    }

    /// <summary>The forwards as the control API shows them.</summary>
    public void ListForwards(List<ForwardInfo> into)
    {
        foreach (var l in _listeners)
            into.Add(new ForwardInfo
            {
                Spec = l.Spec, BoundPort = l.BoundPort, ActiveConnections = l.Clients.Count, TotalConnections = l.TotalClients,
                Created = l.Created,
            });
    }

    // ---- timers and teardown ----

    public long OnTimer(long nowMs)
    {
        long next = long.MaxValue;
        _expired.Clear();
        foreach (var flow in _flows.Values)
        {
            long due = flow.LastActive + flow.TimeoutMs;
            if (due <= nowMs) _expired.Add(flow);
            else if (due < next) next = due;
        }
        foreach (var flow in _expired) Close(flow);
        _expired.Clear();
        return next;
    }

    /// <summary>The guest went away: every flow ends; forward listeners stay.</summary>
    public void OnGuestGone()
    {
        _expired.Clear();
        _expired.AddRange(_flows.Values);
        foreach (var flow in _expired) Close(flow);
        _expired.Clear();
    }

    public void Snapshot(List<ConnectionInfo> into)
    {
        foreach (var f in _flows.Values)
        {
            IPEndPoint? local = null;
            if (f.Socket is not null) local = f.Socket.LocalEndPoint as IPEndPoint;
            else if (f.Listener is not null) local = new IPEndPoint(f.Listener.Spec.HostAddress, f.Listener.BoundPort);
            into.Add(new ConnectionInfo
            {
                Id = f.Id, Protocol = FlowProtocol.Udp,
                Direction = f.Listener is null ? FlowDirection.Outbound : FlowDirection.Forwarded,
                GuestEndPoint = new IPEndPoint(f.Guest.ToIPAddress(), f.GuestPort),
                GuestPeerEndPoint = new IPEndPoint(f.Peer.ToIPAddress(), f.PeerPort),
                HostLocalEndPoint = local, HostRemoteEndPoint = f.HostRemote,
                State = f.IsDns ? "dns" : "open", BytesFromGuest = f.BytesFromGuest, BytesToGuest = f.BytesToGuest,
                Started = f.Started, Forward = f.Listener?.Spec.ToString(),
            });
        }
    }

    private void Close(Flow flow)
    {
        _flows.Remove(flow.Key);
        if (flow.Listener is not null && flow.Client is not null) flow.Listener.Clients.Remove(flow.Client);
        if (flow.Socket is not null)
        {
            _loop.Unregister(flow.Token, flow.Fd);
            flow.Socket.Dispose();
        }
    }

    public void Dispose()
    {
        OnGuestGone();
        foreach (var l in _listeners)
        {
            _loop.Unregister(l.Token, l.Fd);
            l.Socket.Dispose();
        }
        _listeners.Clear();
    }
}
