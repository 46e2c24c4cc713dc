using System.Net;
using System.Net.Sockets;
using Emunet.Engine.Diagnostics;
using Emunet.Engine.Interop;
using Emunet.Engine.Runtime;
using Emunet.Engine.Stack.Nat;
using Emunet.Engine.Wire;
using Microsoft.Extensions.Logging;

namespace Emunet.Engine.Stack;

/// <summary>
/// UDP NAT, IPv4 and IPv6. Theory of operation: a guest datagram is matched to a flow of the <see cref="FlowTable"/>
/// by (guest address, guest port, destination, destination port); keys of both families share the table, its limits
/// and its expiry. A new flow gets one non-blocking host UDP socket of the family <see cref="AddressMap"/> maps the
/// destination to (10.0.2.2 to 127.0.0.1, fec0::2 to ::1, anything allowed to itself), connected there, so the kernel
/// filters replies and reports ICMP errors as ECONNREFUSED, which goes back to the guest as port unreachable (ICMP or
/// ICMPv6, by the guest's family). Replies are received straight into the packet lent by the device (no copy) and
/// leave with the flow's destination as their source. Queries to 10.0.2.3:53 and fec0::3:53 go to the
/// <see cref="DnsRelay"/>, which has a table of its own. Forwarded flows (<c>Udp.Forwarded.cs</c>) enter the same
/// table from a forward's socket. Flows expire when idle. Owner thread only.
/// </summary>
internal sealed partial class Udp : IDisposable
{
    /// <summary>RFC 4787 REQ-5: a UDP mapping lives at least two minutes; 60 s is the Linux conntrack default for unreplied flows and slirp's.</summary>
    public const int IdleTimeoutMs = 60_000;
    /// <summary>Datagrams handled per readiness event, so one busy socket cannot starve the loop.</summary>
    public const int DatagramsPerPoll = 64;
    public const ushort DnsPort = 53;

    private readonly EventLoop _loop;
    private readonly IPacketSender _sender;
    private readonly FlowTable _flows;
    private readonly Icmp _icmp;
    private readonly IPv6.Icmpv6? _icmp6;
    private readonly DnsRelay _dns;
    private readonly NetworkConfig _config;
    private readonly AddressMap _map;
    private readonly Counters _counters;
    private readonly ILogger _logger;
    private readonly List<UdpFlow> _closing = new();
    private readonly byte[] _scratch = new byte[65536];

    /// <summary>The IPv6 guests' errors go through <c>icmp6</c> (null when IPv6 is off: no IPv6 datagram arrives then).</summary>
    public Udp(EventLoop loop, IPacketSender sender, FlowTable flows, Icmp icmp, IPv6.Icmpv6? icmp6, DnsRelay dns, NetworkConfig config,
        AddressMap map, Counters counters, ILogger logger)
    {
        _icmp6 = icmp6;
        _dns = dns;
        _loop = loop;
        _sender = sender;
        _flows = flows;
        _icmp = icmp;
        _config = config;
        _map = map;
        _counters = counters;
        _logger = logger;
    }

    public int FlowCount => _flows.CountOf(FlowProtocol.Udp);

    /// <summary>One UDP flow: outbound (its own connected socket) or forwarded (its forward's socket and a client address).</summary>
    private sealed class UdpFlow(Udp owner) : Flow
    {
        /// <summary>The guest's address: IPv4-mapped, or IPv6.</summary>
        public FlowAddress Guest;
        public ushort GuestPort;
        /// <summary>The address and port the guest sees as the other end (the same family as <see cref="Guest"/>).</summary>
        public FlowAddress Peer;
        public ushort PeerPort;
        /// <summary>Forwarded flows: the forward's socket sends to <see cref="Client"/>.</summary>
        public UdpForwardPort? Port;
        public SocketAddress? Client;

        public override string StateName => "open";

        public override void OnPoll(uint events) => owner.OnFlowReadable(this);

        protected override void OnIdle() => owner.Close(this);

        protected override void Abort() => owner.Close(this);
    }

    // ---- guest -> host ----

    /// <summary>What became of a guest datagram, for the caller to report in its family's ICMP.</summary>
    private enum Outcome
    {
        /// <summary>Sent, or dropped and counted: nothing to tell the guest.</summary>
        Done,
        /// <summary>A previous datagram of the flow drew ICMP port unreachable (RFC 1122 §4.1.3.3); pass it on.</summary>
        PortUnreachable,
        /// <summary>The outbound policy refused the destination (RFC 1812 §5.2.7.1, RFC 4443 §3.1 code 1).</summary>
        Prohibited,
        /// <summary>The host has no route there.</summary>
        NoRoute,
    }

    /// <summary>A datagram from the guest (not DHCP) with a checked header and checksum; both borrowed for the call.</summary>
    public void OnDatagram(in IPv4Packet packet, in UdpDatagram datagram)
    {
        var destination = packet.Destination;
        if (destination.IsBroadcast || destination.IsMulticast || destination == _config.BroadcastAddress)
        {
            _counters.Drop(DropReason.NotForUs);
            return;
        }
        if (destination == _config.Dns && datagram.DestinationPort == DnsPort)
        {
            _dns.OnQuery(in packet, in datagram);
            return;
        }
        switch (Send(FlowAddress.FromIPv4(packet.Source), FlowAddress.FromIPv4(destination), in datagram))
        {
            case Outcome.PortUnreachable: _icmp.SendDestinationUnreachable(IcmpPacket.CodePortUnreachable, in packet); break;
            case Outcome.Prohibited: _icmp.SendDestinationUnreachable(IcmpPacket.CodeAdministrativelyProhibited, in packet); break;
            case Outcome.NoRoute: _icmp.SendDestinationUnreachable(IcmpPacket.CodeNetUnreachable, in packet); break;
        }
    }

    /// <summary>
    /// A datagram from an IPv6 guest (not DHCPv6 or the DNS relay) to a unicast destination, its checksum checked by
    /// <c>IPv6Stack</c>; both borrowed for the call.
    /// </summary>
    public void OnDatagram(in IPv6Packet packet, in UdpDatagram datagram)
    {
        var destination = packet.Destination;
        if (destination.IsMulticast) { _counters.Drop(DropReason.NotForUs); return; }
        var peer = FlowAddress.FromIPv6(destination);
        if (peer.IsIPv4)
        {
            // ::ffff:a.b.c.d (RFC 4291 §2.5.5.2) names an IPv4 node inside a host's own API, never on the wire
            // (RFC 4038 §4.2); it would reach the IPv4 side past its policy, so it is refused.
            _counters.Drop(DropReason.IPv6MappedDestination);
            SendError6(Icmpv6Packet.CodeAdministrativelyProhibited, in packet);
            return;
        }
        switch (Send(FlowAddress.FromIPv6(packet.Source), peer, in datagram))
        {
            case Outcome.PortUnreachable: SendError6(Icmpv6Packet.CodePortUnreachable, in packet); break;
            case Outcome.Prohibited: SendError6(Icmpv6Packet.CodeAdministrativelyProhibited, in packet); break;
            case Outcome.NoRoute: SendError6(Icmpv6Packet.CodeNoRoute, in packet); break;
        }
    }

    private void SendError6(byte code, in IPv6Packet packet) =>
        _icmp6?.SendError(Icmpv6Packet.TypeDestinationUnreachable, code, 0, in packet);

    /// <summary>Sends the datagram through its flow (opened on the first datagram); the same path for both families.</summary>
    private Outcome Send(FlowAddress guest, FlowAddress destination, in UdpDatagram datagram)
    {
        var payload = datagram.Payload;
        var key = new FlowKey(FlowProtocol.Udp, guest, datagram.SourcePort, destination, datagram.DestinationPort);
        UdpFlow? flow;
        if (_flows.TryGet(key, out var found)) flow = (UdpFlow)found;
        else
        {
            var opened = OpenOutbound(key, out flow);
            if (flow is null) return opened;
        }
        flow.LastActive = _loop.NowMs;
        if (flow.Port is not null)
        {
            if (!flow.Port.SendToClient(payload, flow.Client!)) { _counters.Drop(DropReason.UdpSendFailed); return Outcome.Done; }
        }
        else
        {
            flow.HostSocket!.Send(payload, SocketFlags.None, out var error);
            if (error == SocketError.ConnectionRefused) return Outcome.PortUnreachable;
            if (error != SocketError.Success)
            {
                _counters.Drop(error == SocketError.MessageSize ? DropReason.UdpDatagramTooLarge : DropReason.UdpSendFailed);
                return Outcome.Done;
            }
        }
        flow.BytesFromGuest += payload.Length;
        return Outcome.Done;
    }

    private Outcome OpenOutbound(FlowKey key, out UdpFlow? flow)
    {
        flow = null;
        var verdict = _map.MapOutbound(RemapProtocol.Udp, key.Peer, key.PeerPort, out var host, out int hostPort);
        if (verdict == OutboundVerdict.Denied)
        {
            _counters.Drop(DropReason.PolicyDenied);
            return Outcome.Prohibited;
        }
        if (verdict != OutboundVerdict.Mapped)
        {
            _counters.Drop(DropReason.UdpNoRoute);
            return Outcome.Done;
        }
        if (!_flows.HasRoom(FlowProtocol.Udp)) { _counters.Drop(DropReason.UdpFlowTableFull); return Outcome.Done; }
        var remote = new IPEndPoint(host, hostPort);
        Socket? socket = null;
        try
        {
            // Creation fails when the process is out of file descriptors (EMFILE); that is a drop, not a crash. The
            // socket is of the host address's family (a guest's IPv6 flow may reach an IPv4 upstream, and back).
            socket = new Socket(host.AddressFamily, SocketType.Dgram, ProtocolType.Udp) { Blocking = false };
            socket.Connect(remote);
        }
        catch (SocketException e)
        {
            socket?.Dispose();
            if (e.SocketErrorCode == SocketError.TooManyOpenSockets) { _flows.OutOfDescriptors(); return Outcome.Done; }
            _counters.Drop(DropReason.UdpSendFailed);
            return e.SocketErrorCode is SocketError.NetworkUnreachable or SocketError.HostUnreachable ? Outcome.NoRoute : Outcome.Done;
        }
        if (_flows.AtHeadroom(socket))
        {
            socket.Dispose(); // the last descriptors are kept for the emulator and the control socket
            return Outcome.Done; // counted by the flow table
        }
        var opened = new UdpFlow(this)
        {
            Key = key, Direction = FlowDirection.Outbound, Guest = key.Guest, GuestPort = key.GuestPort, Peer = key.Peer,
            PeerPort = key.PeerPort, HostSocket = socket, HostFd = (int)socket.Handle, HostRemote = remote,
            HostLocal = socket.LocalEndPoint as IPEndPoint, LastActive = _loop.NowMs, IdleTimeoutMs = IdleTimeoutMs,
            Link = _sender.Link,
        };
        if (!_flows.TryAdd(opened))
        {
            socket.Dispose();
            return Outcome.Done;
        }
        opened.HostToken = _loop.Register(opened.HostFd, Libc.EPOLLIN, opened);
        if (_logger.IsEnabled(LogLevel.Debug))
            _logger.LogDebug("UDP flow {Guest}:{GuestPort} -> {Peer}:{PeerPort} via {Remote}", key.Guest, key.GuestPort, key.Peer, key.PeerPort, remote);
        flow = opened;
        return Outcome.Done;
    }

    // ---- host -> guest ----

    private void OnFlowReadable(UdpFlow flow)
    {
        var socket = flow.HostSocket!;
        for (int budget = 0; budget < DatagramsPerPoll; budget++)
        {
            var packet = _sender.BeginFlowPacket(flow.Peer, flow.Guest, IPv4Packet.ProtocolUdp, _sender.MaxPayloadFor(flow.Guest));
            if (packet.IsEmpty)
            {
                // The guest cannot take it now; UDP may lose it, but the socket must be drained.
                socket.Receive(_scratch, SocketFlags.None, out var e);
                if (e == SocketError.WouldBlock) return;
                if (e == SocketError.Success) _counters.Drop(DropReason.TransmitQueueFull);
                continue;
            }
            var room = packet.Payload[UdpDatagram.HeaderLength..];
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
            Deliver(flow, in packet, n);
        }
    }

    private void Deliver(UdpFlow flow, in OutboundPacket packet, int payloadLength)
    {
        int length;
        if (flow.Guest.IsIPv4)
            length = UdpDatagram.WriteHeader(packet.Payload, flow.Peer.IPv4, flow.Guest.IPv4, flow.PeerPort, flow.GuestPort, payloadLength);
        else
        {
            // RFC 8200 §8.1: the checksum is mandatory over IPv6, over its own pseudo-header.
            length = UdpDatagram.HeaderLength + payloadLength;
            IPv6Packet.WriteUdpHeader(packet.Payload, flow.Peer.IPv6, flow.Guest.IPv6, flow.PeerPort, flow.GuestPort, length);
        }
        packet.Commit(length);
        flow.LastActive = _loop.NowMs;
        flow.BytesToGuest += payloadLength;
    }

    private void SendPortUnreachable(UdpFlow flow)
    {
        // The datagram that drew the error is gone; rebuild its headers (RFC 792: IP header + 8 bytes is enough for
        // the guest to find its socket; RFC 4443 §3.1 quotes as much as fits, and the headers are what there is).
        if (!flow.Guest.IsIPv4)
        {
            Span<byte> original6 = stackalloc byte[IPv6Packet.HeaderLength + UdpDatagram.HeaderLength];
            IPv6Packet.WriteHeader(original6, flow.Guest.IPv6, flow.Peer.IPv6, IPv6Packet.NextHeaderUdp, UdpDatagram.HeaderLength);
            IPv6Packet.WriteUdpHeader(original6[IPv6Packet.HeaderLength..], flow.Guest.IPv6, flow.Peer.IPv6, flow.GuestPort, flow.PeerPort,
                UdpDatagram.HeaderLength);
            if (IPv6Packet.TryParse(original6, out var packet6) == IPv6Packet.ParseError.None)
                SendError6(Icmpv6Packet.CodePortUnreachable, in packet6);
            return;
        }
        Span<byte> original = stackalloc byte[IPv4Packet.MinHeaderLength + UdpDatagram.HeaderLength];
        IPv4Packet.WriteHeader(original, flow.Guest.IPv4, flow.Peer.IPv4, IPv4Packet.ProtocolUdp, original.Length);
        UdpDatagram.WriteHeader(original[IPv4Packet.MinHeaderLength..], flow.Guest.IPv4, flow.Peer.IPv4, flow.GuestPort, flow.PeerPort, 0);
        if (IPv4Packet.TryParse(original, out var packet) == IPv4Packet.ParseError.None)
            _icmp.SendDestinationUnreachable(IcmpPacket.CodePortUnreachable, in packet);
    }

    // ---- teardown ----

    /// <summary>The guest went away: every UDP flow ends; forward sockets stay.</summary>
    public void OnGuestGone() => _flows.AbortAll(FlowProtocol.Udp, _sender.Link);

    private void Close(UdpFlow flow)
    {
        _flows.Remove(flow);
        if (flow.Port is not null && flow.Client is not null) flow.Port.Clients.Remove(flow.Client);
        if (flow.HostSocket is not null)
        {
            _loop.Unregister(flow.HostToken, flow.HostFd);
            flow.HostSocket.Dispose();
            flow.HostSocket = null;
        }
    }

    public void Dispose() => OnGuestGone();
}
