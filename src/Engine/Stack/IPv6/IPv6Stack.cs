using Emunet.Engine.Diagnostics;
using Emunet.Engine.Link;
using Emunet.Engine.Runtime;
using Emunet.Engine.Stack.Nat;
using Emunet.Engine.Wire;
using Microsoft.Extensions.Logging;

namespace Emunet.Engine.Stack.IPv6;

/// <summary>
/// Theory of operation: the IPv6 side of the guest link (RFC 8200). <see cref="NetStack"/> hands every IPv6 frame's
/// payload here. The fixed header is checked, the source must be the guest's (link-local, an address of the prefix,
/// or unspecified for duplicate address detection), the extension-header chain is walked with a bound
/// (<see cref="IPv6ExtensionHeaders"/>), fragments are reassembled (<see cref="IPv6Reassembly"/>), and the upper layer
/// goes to ICMPv6 (<see cref="Ndp"/> for Neighbor Discovery, <see cref="Icmpv6"/> for echo, its relay and errors), to
/// UDP (<see cref="Dhcpv6"/> on port 547, the DNS relay on fec0::3, else the NAT's <see cref="Udp"/>) or to TCP, the
/// last two through the flow table IPv4 uses; an IPv4-mapped destination is refused (<see cref="RefuseMapped"/>). Frames toward the guest are written whole here (Ethernet and IPv6 headers)
/// through <see cref="BeginPacket"/>; none is ever fragmented (RFC 8200 §5: the guest's link MTU is announced in the
/// router advertisement, and nothing larger is built). Owner thread only.
/// </summary>
internal sealed class IPv6Stack : IDisposable
{
    private const int EthernetAndIPv6Header = EthernetFrame.HeaderLength + IPv6Packet.HeaderLength;

    private readonly NetStack _stack;
    private readonly IFrameDevice _device;
    private readonly NetworkConfig _config;
    private readonly Counters _counters;

    public IPv6Stack(EventLoop loop, NetStack stack, IFrameDevice device, NetworkConfig config, Counters counters, ILogger logger)
    {
        _stack = stack;
        _device = device;
        _config = config;
        _counters = counters;
        Reassembly = new IPv6Reassembly(loop, counters);
        Icmpv6 = new Icmpv6(loop, this, stack.Icmp, config, counters);
        Ndp = new Ndp(loop, this, config, counters);
        Dhcpv6 = new Dhcpv6(this, config, counters, logger);
        loop.AddTimerClient(Reassembly);
        loop.AddTimerClient(Ndp);
    }

    public Ndp Ndp { get; }
    public Icmpv6 Icmpv6 { get; }
    public Dhcpv6 Dhcpv6 { get; }
    internal IPv6Reassembly Reassembly { get; }

    /// <summary>The guest's address in the prefix (learned from duplicate address detection or its packets); null until seen.</summary>
    public IPv6Address? GuestAddress { get; internal set; }

    /// <summary>The guest's link-local address; null until seen.</summary>
    public IPv6Address? GuestLinkLocal { get; internal set; }

    internal MacAddress? GuestMac => _stack.GuestMac;

    /// <summary>The IPv6 payload one packet to the guest can carry: the link MTU (at least 1280, RFC 8200 §5) less the header.</summary>
    public int MaxPayload => Math.Clamp(_config.Mtu, IPv6Packet.MinimumMtu, ushort.MaxValue) - IPv6Packet.HeaderLength;

    /// <summary>The MTU the router advertisement announces (RFC 4861 §4.6.4).</summary>
    public int LinkMtu => MaxPayload + IPv6Packet.HeaderLength;

    /// <summary>Takes an IPv6 packet from the guest (borrowed for the call: the Ethernet payload).</summary>
    public void OnPacket(ReadOnlySpan<byte> bytes)
    {
        if (IPv6Packet.TryParse(bytes, out var packet) != IPv6Packet.ParseError.None) { _counters.Drop(DropReason.IPv6Malformed); return; }
        var source = packet.Source;
        // Only the guest's own addresses source packets: link-local, the prefix, or :: for DAD (RFC 4862 §5.4.2),
        // which only Neighbor Discovery may use (checked there). Multicast is never a source (RFC 4291 §2.7).
        if (source.IsMulticast || !(source.IsUnspecified || source.IsLinkLocal || IsInPrefix(source)))
        {
            _counters.Drop(DropReason.SourceSpoofed);
            return;
        }
        var destination = packet.Destination;
        if (!IsForUs(destination)) { _counters.Drop(DropReason.NotForUs); return; }

        var walk = IPv6ExtensionHeaders.Walk(packet.NextHeader, packet.Payload, out var chain);
        if (walk != IPv6ExtensionHeaders.WalkError.None) { _counters.Drop(DropReason.IPv6ExtensionChainRefused); return; }
        if (chain.HasFragment)
        {
            // RFC 8200 §4.5: hold the fragments until the datagram is whole; an atomic fragment (offset 0, M clear,
            // RFC 6946) is whole already.
            if (chain.FragmentOffsetBytes != 0 || chain.MoreFragments)
            {
                if (!Reassembly.Add(in packet, in chain, out var whole)) return;
                if (IPv6Packet.TryParse(whole, out var reassembled) != IPv6Packet.ParseError.None
                    || IPv6ExtensionHeaders.Walk(reassembled.NextHeader, reassembled.Payload, out var wholeChain) != IPv6ExtensionHeaders.WalkError.None)
                {
                    _counters.Drop(DropReason.IPv6Malformed);
                    return;
                }
                Deliver(in reassembled, wholeChain.UpperLayer, reassembled.Payload[wholeChain.UpperLayerOffset..]);
                return;
            }
        }
        Deliver(in packet, chain.UpperLayer, packet.Payload[chain.UpperLayerOffset..]);
    }

    private void Deliver(in IPv6Packet packet, byte upperLayer, ReadOnlySpan<byte> upper)
    {
        var source = packet.Source;
        if (source.IsUnspecified && upperLayer != IPv6Packet.NextHeaderIcmpv6) { _counters.Drop(DropReason.SourceSpoofed); return; }
        Learn(source);
        switch (upperLayer)
        {
            case IPv6Packet.NextHeaderIcmpv6:
                if (!Icmpv6Packet.TryParse(upper, out var icmp) || !icmp.IsChecksumValid(source, packet.Destination))
                {
                    _counters.Drop(DropReason.Icmpv6Malformed);
                    return;
                }
                if (icmp.Type is >= Icmpv6Packet.TypeRouterSolicitation and <= Icmpv6Packet.TypeRedirect) Ndp.OnMessage(in packet, in icmp);
                else if (source.IsUnspecified) _counters.Drop(DropReason.SourceSpoofed);
                else Icmpv6.OnMessage(in packet, in icmp);
                break;
            case IPv6Packet.NextHeaderTcp:
                // RFC 9293 §3.10.7.2: no connection to or from a group; from :: was refused above.
                if (packet.Destination.IsMulticast) { _counters.Drop(DropReason.TcpMalformed); return; }
                if (IsIPv4Mapped(packet.Destination)) { RefuseMapped(in packet); return; }
                _stack.Tcp.OnSegment(FlowAddress.FromIPv6(source), FlowAddress.FromIPv6(packet.Destination), upper);
                break;
            case IPv6Packet.NextHeaderUdp:
                if (!UdpDatagram.TryParse(upper, out var udp)) { _counters.Drop(DropReason.UdpMalformed); return; }
                // RFC 8200 §8.1: the UDP checksum is mandatory over IPv6 (zero is not "none").
                if (IPv6Packet.UpperLayerChecksum(source, packet.Destination, IPv6Packet.NextHeaderUdp, udp.Bytes) != 0
                    || udp.Checksum == 0)
                {
                    _counters.Drop(DropReason.UdpBadChecksum);
                    return;
                }
                if (udp.DestinationPort == Dhcpv6Message.ServerPort) { Dhcpv6.OnDatagram(in packet, in udp); return; }
                // The DNS relay on fec0::3 (RFC 8106's RDNSS names it), relaying to upstreams of either family.
                if (udp.DestinationPort == 53 && packet.Destination == _config.IPv6Dns && !source.IsUnspecified)
                {
                    _stack.Dns.OnQuery(FlowAddress.FromIPv6(source), in udp);
                    return;
                }
                if (source.IsUnspecified) { _counters.Drop(DropReason.SourceSpoofed); return; }
                // The NAT: the same flows, limits and outbound policy as IPv4's datagrams (Udp.cs).
                _stack.Udp.OnDatagram(in packet, in udp);
                break;
            case IPv6Packet.NextHeaderNone:
                break;
            default:
                NotCarried(in packet);
                break;
        }
    }

    /// <summary>A transport Emunet does not carry over IPv6 yet: counted, and refused as the host would (RFC 4443 §3.1 code 1).</summary>
    private void NotCarried(in IPv6Packet packet)
    {
        _counters.Drop(DropReason.IPv6NotSupported);
        if (!packet.Destination.IsMulticast)
            Icmpv6.SendError(Icmpv6Packet.TypeDestinationUnreachable, Icmpv6Packet.CodeAdministrativelyProhibited, 0, in packet);
    }

    /// <summary>::ffff:a.b.c.d (RFC 4291 §2.5.5.2): an IPv4 node as a host's API names it; the flow table would take it for IPv4.</summary>
    internal static bool IsIPv4Mapped(IPv6Address destination) => FlowAddress.FromIPv6(destination).IsIPv4;

    /// <summary>
    /// An IPv4-mapped destination is never routed (RFC 4038 §4.2: such addresses stay inside a host): counted, and
    /// refused as a filtered destination (RFC 4443 §3.1 code 1), so the IPv4 policy cannot be walked around.
    /// </summary>
    private void RefuseMapped(in IPv6Packet packet)
    {
        _counters.Drop(DropReason.IPv6MappedDestination);
        Icmpv6.SendError(Icmpv6Packet.TypeDestinationUnreachable, Icmpv6Packet.CodeAdministrativelyProhibited, 0, in packet);
    }

    private void Learn(IPv6Address source)
    {
        if (source.IsLinkLocal) GuestLinkLocal = source;
        else if (IsInPrefix(source) && !_config.IsOwnAddress(source)) GuestAddress = source;
    }

    internal bool IsInPrefix(IPv6Address a) => a.InPrefix(_config.IPv6Prefix, _config.IPv6PrefixLength);

    /// <summary>
    /// Our unicast addresses; any other destination routed through us (not link-local: those stay on the link); and
    /// the multicast groups a router of this link is in (RFC 4291 §2.8).
    /// </summary>
    private bool IsForUs(IPv6Address destination)
    {
        if (_config.IsOwnAddress(destination)) return true;
        if (!destination.IsMulticast) return !destination.IsLinkLocal;
        if (destination == IPv6Address.AllNodes || destination == IPv6Address.AllRouters) return true;
        if (destination == Dhcpv6Message.AllServersAndRelays) return true;
        // Solicited-node groups: ours, and those of the guest's tentative addresses (its DAD probes, RFC 4862 §5.4.2).
        return (destination.High == 0xff02_0000_0000_0000UL && (destination.Low >> 24) == 0x0000_0001_ffUL);
    }

    public void OnGuestGone()
    {
        GuestAddress = null;
        GuestLinkLocal = null;
        Reassembly.Clear();
        Ndp.OnGuestGone();
    }

    // ---- toward the guest ----

    /// <summary>
    /// Lends room for an IPv6 packet of up to <paramref name="maxPayload"/> bytes to <paramref name="destination"/> (a
    /// multicast group, or the guest's MAC). Empty when the device cannot take a frame or the guest MAC is unknown.
    /// </summary>
    public IPv6Outbound BeginPacket(IPv6Address source, IPv6Address destination, byte nextHeader, int maxPayload, byte hopLimit = 64)
    {
        if ((uint)maxPayload > (uint)MaxPayload) throw new ArgumentOutOfRangeException(nameof(maxPayload));
        MacAddress mac;
        if (destination.IsMulticast) mac = destination.MulticastMac;
        else if (GuestMac is { } guest) mac = guest;
        else { _counters.Drop(DropReason.GuestMacUnknown); return default; }
        var lease = _device.BeginTransmit(EthernetAndIPv6Header + maxPayload);
        if (lease.IsEmpty || lease.Buffer.Length < EthernetAndIPv6Header + maxPayload) { _counters.Drop(DropReason.TransmitQueueFull); return default; }
        return new IPv6Outbound(this, lease, mac, source, destination, nextHeader, hopLimit, maxPayload);
    }

    internal void Commit(in IPv6Outbound packet, int payloadLength)
    {
        var frame = packet.Lease.Buffer;
        EthernetFrame.WriteHeader(frame, packet.DestinationMac, _config.GatewayMac, EthernetFrame.EtherTypeIPv6);
        IPv6Packet.WriteHeader(frame[EthernetFrame.HeaderLength..], packet.Source, packet.Destination, packet.NextHeader,
            payloadLength, packet.HopLimit);
        int length = EthernetAndIPv6Header + payloadLength;
        packet.Lease.Commit(length);
        _stack.CountSent(length);
    }

    public void Dispose() { }
}

/// <summary>One IPv6 packet on its way to the guest (<see cref="IPv6Stack.BeginPacket"/>): fill <see cref="Payload"/>, then <see cref="Commit"/>.</summary>
internal readonly ref struct IPv6Outbound
{
    private readonly IPv6Stack? _stack;

    public IPv6Outbound(IPv6Stack stack, TransmitLease lease, MacAddress destinationMac, IPv6Address source, IPv6Address destination,
        byte nextHeader, byte hopLimit, int maxPayload)
    {
        _stack = stack;
        Lease = lease;
        DestinationMac = destinationMac;
        Source = source;
        Destination = destination;
        NextHeader = nextHeader;
        HopLimit = hopLimit;
        Payload = lease.Buffer.Slice(EthernetFrame.HeaderLength + IPv6Packet.HeaderLength, maxPayload);
    }

    public TransmitLease Lease { get; }
    public MacAddress DestinationMac { get; }
    public IPv6Address Source { get; }
    public IPv6Address Destination { get; }
    public byte NextHeader { get; }
    public byte HopLimit { get; }
    public Span<byte> Payload { get; }
    public bool IsEmpty => _stack is null;

    public void Commit(int payloadLength)
    {
        if (_stack is null) throw new InvalidOperationException("Commit on an empty packet.");
        if ((uint)payloadLength > (uint)Payload.Length) throw new ArgumentOutOfRangeException(nameof(payloadLength));
        _stack.Commit(in this, payloadLength);
    }
}
