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
/// UDP NAT. Theory of operation: a guest datagram is matched to a flow of the <see cref="FlowTable"/> by (guest
/// address, guest port, destination, destination port). A new flow gets one non-blocking host UDP socket, connected
/// to where <see cref="AddressMap"/> maps the destination (10.0.2.2 to 127.0.0.1, anything allowed to itself), so the
/// kernel filters replies and reports ICMP errors as ECONNREFUSED, which goes back to the guest as port unreachable.
/// Replies are received straight into the packet lent by the device (no copy) and leave with the flow's destination
/// as their source. Queries to 10.0.2.3:53 go to the <see cref="DnsRelay"/>, which has a table of its own.
/// Forwarded flows (<c>Udp.Forwarded.cs</c>) enter the same table from a forward's socket. Flows expire when idle.
/// Owner thread only.
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
    private readonly DnsRelay _dns;
    private readonly NetworkConfig _config;
    private readonly AddressMap _map;
    private readonly Counters _counters;
    private readonly ILogger _logger;
    private readonly List<UdpFlow> _closing = new();
    private readonly byte[] _scratch = new byte[65536];

    public Udp(EventLoop loop, IPacketSender sender, FlowTable flows, Icmp icmp, DnsRelay dns, NetworkConfig config, AddressMap map,
        Counters counters, ILogger logger)
    {
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
        public IPv4Address Guest;
        public ushort GuestPort;
        /// <summary>The address and port the guest sees as the other end.</summary>
        public IPv4Address Peer;
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
        var payload = datagram.Payload;
        var key = FlowKey.IPv4(FlowProtocol.Udp, packet.Source, datagram.SourcePort, destination, datagram.DestinationPort);
        UdpFlow? flow;
        if (_flows.TryGet(key, out var found)) flow = (UdpFlow)found;
        else
        {
            flow = OpenOutbound(in packet, key, datagram.SourcePort, datagram.DestinationPort);
            if (flow is null) return;
        }
        flow.LastActive = _loop.NowMs;
        if (flow.Port is not null)
        {
            if (!flow.Port.SendToClient(payload, flow.Client!)) { _counters.Drop(DropReason.UdpSendFailed); return; }
        }
        else
        {
            flow.HostSocket!.Send(payload, SocketFlags.None, out var error);
            if (error == SocketError.ConnectionRefused)
            {
                // A previous datagram drew ICMP port unreachable (RFC 1122 §4.1.3.3); pass it on.
                _icmp.SendDestinationUnreachable(IcmpPacket.CodePortUnreachable, in packet);
                return;
            }
            if (error != SocketError.Success)
            {
                _counters.Drop(error == SocketError.MessageSize ? DropReason.UdpDatagramTooLarge : DropReason.UdpSendFailed);
                return;
            }
        }
        flow.BytesFromGuest += payload.Length;
    }

    private UdpFlow? OpenOutbound(in IPv4Packet packet, FlowKey key, ushort guestPort, ushort peerPort)
    {
        var destination = packet.Destination;
        var verdict = _map.MapOutbound(RemapProtocol.Udp, FlowAddress.FromIPv4(destination), peerPort, out var host, out int hostPort);
        if (verdict == OutboundVerdict.Denied)
        {
            // RFC 1812 §5.2.7.1: a filtered destination may be reported as administratively prohibited.
            _counters.Drop(DropReason.PolicyDenied);
            _icmp.SendDestinationUnreachable(IcmpPacket.CodeAdministrativelyProhibited, in packet);
            return null;
        }
        if (verdict != OutboundVerdict.Mapped)
        {
            _counters.Drop(DropReason.UdpNoRoute);
            return null;
        }
        if (!_flows.HasRoom(FlowProtocol.Udp)) { _counters.Drop(DropReason.UdpFlowTableFull); return null; }
        var remote = new IPEndPoint(host, hostPort);
        Socket? socket = null;
        try
        {
            // Creation fails when the process is out of file descriptors (EMFILE); that is a counted drop, not a crash.
            socket = new Socket(AddressFamily.InterNetwork, SocketType.Dgram, ProtocolType.Udp) { Blocking = false };
            socket.Connect(remote);
        }
        catch (SocketException e)
        {
            socket?.Dispose();
            if (e.SocketErrorCode == SocketError.TooManyOpenSockets) { _flows.OutOfDescriptors(); return null; }
            _counters.Drop(DropReason.UdpSendFailed);
            if (e.SocketErrorCode is SocketError.NetworkUnreachable or SocketError.HostUnreachable)
                _icmp.SendDestinationUnreachable(IcmpPacket.CodeNetUnreachable, in packet);
            return null;
        }
        if (_flows.AtHeadroom(socket))
        {
            socket.Dispose(); // the last descriptors are kept for the emulator and the control socket
            return null;
        }
        var flow = new UdpFlow(this)
        {
            Key = key, Direction = FlowDirection.Outbound, Guest = packet.Source, GuestPort = guestPort, Peer = destination,
            PeerPort = peerPort, HostSocket = socket, HostFd = (int)socket.Handle, HostRemote = remote,
            HostLocal = socket.LocalEndPoint as IPEndPoint, LastActive = _loop.NowMs, IdleTimeoutMs = IdleTimeoutMs,
            Link = _sender.Link,
        };
        if (!_flows.TryAdd(flow))
        {
            socket.Dispose();
            return null;
        }
        flow.HostToken = _loop.Register(flow.HostFd, Libc.EPOLLIN, flow);
        if (_logger.IsEnabled(LogLevel.Debug))
            _logger.LogDebug("UDP flow {Guest}:{GuestPort} -> {Peer}:{PeerPort} via {Remote}", flow.Guest, guestPort, destination, peerPort, remote);
        return flow;
    }

    // ---- host -> guest ----

    private void OnFlowReadable(UdpFlow flow)
    {
        var socket = flow.HostSocket!;
        for (int budget = 0; budget < DatagramsPerPoll; budget++)
        {
            var packet = _sender.BeginPacket(flow.Peer, flow.Guest, IPv4Packet.ProtocolUdp, _sender.MaxPayload);
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
        int length = UdpDatagram.WriteHeader(packet.Payload, flow.Peer, flow.Guest, flow.PeerPort, flow.GuestPort, payloadLength);
        packet.Commit(length);
        flow.LastActive = _loop.NowMs;
        flow.BytesToGuest += payloadLength;
    }

    private void SendPortUnreachable(UdpFlow flow)
    {
        // The datagram that drew the error is gone; rebuild its headers (RFC 792: IP header + 8 bytes is enough for
        // the guest to find its socket).
        Span<byte> original = stackalloc byte[IPv4Packet.MinHeaderLength + UdpDatagram.HeaderLength];
        IPv4Packet.WriteHeader(original, flow.Guest, flow.Peer, IPv4Packet.ProtocolUdp, original.Length);
        UdpDatagram.WriteHeader(original[IPv4Packet.MinHeaderLength..], flow.Guest, flow.Peer, flow.GuestPort, flow.PeerPort, 0);
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
