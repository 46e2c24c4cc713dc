using Emunet.Engine.Link;
using Emunet.Engine.Diagnostics;
using Emunet.Engine.Runtime;
using Emunet.Engine.Stack.Nat;
using Emunet.Engine.Stack.Tcp;
using Emunet.Engine.Wire;
using Microsoft.Extensions.Logging;

namespace Emunet.Engine.Stack;

/// <summary>
/// The guest's side of the engine: Ethernet in, ARP or IPv4, then ICMP / UDP (DHCP, DNS relay, NAT) / TCP; and the
/// way every protocol sends back (<see cref="IPacketSender"/>). See README.md in this folder. Owner thread only.
/// </summary>
internal sealed class NetStack : IFrameHandler, IPacketSender, IDisposable
{
    private const int EthernetAndIPv4Header = EthernetFrame.HeaderLength + IPv4Packet.MinHeaderLength;

    private readonly EventLoop _loop;
    private readonly IFrameDevice _device;
    private readonly NetworkConfig _config;
    private readonly Counters _counters;
    private readonly ILogger _logger;
    private readonly IPv4Reassembly _reassembly;

    private ushort _nextIdentification;

    /// <summary>
    /// Builds the stack over <paramref name="device"/>: the flow table, then each protocol, every one given what it
    /// needs here (the packet sender is this object's transmit side; nothing is set after construction). For an engine
    /// of several links: <c>flows</c> is the engine's one flow table (each link a stack of its own, all sharing the
    /// table, its limits and its buffer budget; null for a table of this stack's own), <c>link</c> this stack's index
    /// (flows it opens carry it), <c>links</c> every link's stack (ARP never adopts another link's guest address).
    /// </summary>
    public NetStack(EventLoop loop, IFrameDevice device, NetworkConfig config, AddressMap map, Counters counters, ILoggerFactory loggers,
        FlowTable? flows = null, int link = 0, LinkSet? links = null)
    {
        Link = link;
        _links = links;
        _loop = loop;
        _device = device;
        _config = config;
        _counters = counters;
        _logger = loggers.CreateLogger("Emunet.Stack");
        GuestAddress = config.Guest;
        Flows = flows ?? new FlowTable(loop, counters, new BufferBudget(config.ConnectionBufferBudget));
        Arp = new Arp(this, device, config, counters);
        _reassembly = new IPv4Reassembly(loop, counters);
        Icmp = new Icmp(loop, this, Flows, config, map, counters, _logger);
        Dns = new DnsRelay(loop, this, config, map.DnsUpstream, counters, _logger);
        // IPv6 (Stack/IPv6): its own receive path and frame writer; null when the configuration turns it off. Built
        // before UDP, which reports errors to IPv6 guests through its ICMPv6.
        if (config.IPv6Enabled) IPv6 = new IPv6.IPv6Stack(loop, this, device, config, counters, _logger);
        Udp = new Udp(loop, this, Flows, Icmp, IPv6?.Icmpv6, Dns, config, map, counters, _logger);
        Dhcp = new Dhcp(this, config, counters, _logger);
        Tcp = new TcpStack(loop, this, Flows, config, map, counters, loggers.CreateLogger("Emunet.Tcp"));
        loop.AddTimerClient(_reassembly);
        loop.AddTimerClient(Dns);
    }

    private readonly LinkSet? _links;

    /// <summary>This stack's guest link (0 for the first).</summary>
    public int Link { get; }

    /// <summary>The address the guest of this link is leased and forwards reach by name (10.0.2.15 for the first link).</summary>
    public IPv4Address ConfiguredGuest => _config.Guest;

    /// <summary>True when <paramref name="address"/> is another link's guest (configured or announced): this link's guest may not take it.</summary>
    internal bool IsOtherLinksGuest(IPv4Address address) => _links is not null && _links.IsClaimedByOther(this, address);

    /// <summary>Every flow of every protocol (the NAT table).</summary>
    public FlowTable Flows { get; }

    public TcpStack Tcp { get; }

    /// <summary>The guest's MAC address, learned from the source of its frames; null until the first frame.</summary>
    public MacAddress? GuestMac { get; internal set; }

    /// <summary>The guest's IPv4 address: the configured one, or what it announced in ARP. Forwards deliver to it.</summary>
    public IPv4Address GuestAddress { get; internal set; }

    public Arp Arp { get; }
    public Icmp Icmp { get; }
    public Udp Udp { get; }
    public DnsRelay Dns { get; }
    public Dhcp Dhcp { get; }
    internal IPv4Reassembly Reassembly => _reassembly;
    /// <summary>The IPv6 side (NDP, router advertisements, ICMPv6, DHCPv6); null when IPv6 is off.</summary>
    public IPv6.IPv6Stack? IPv6 { get; }

    // ---- IFrameHandler ----

    public void OnFrame(ReadOnlySpan<byte> frame)
    {
        _loop.AssertOwner();
        // A fault in handling one frame drops that frame (counted and logged by the loop's reporter); it must not
        // tear the device's receive loop, which has the frames after it.
        try { Receive(frame); }
        catch (Exception e) when (e is not OutOfMemoryException) { _loop.Fault(this, e); }
    }

    private void Receive(ReadOnlySpan<byte> frame)
    {
        _counters.FramesFromGuest++;
        _counters.BytesFromGuest += frame.Length;
        if (!EthernetFrame.TryParse(frame, out var ethernet)) { _counters.Drop(DropReason.FrameTooShort); return; }
        var source = ethernet.Source;
        var destination = ethernet.Destination;
        // IEEE 802.3: a group address is never a source; such a frame is not from a real interface.
        if (source.IsMulticast || source == MacAddress.Zero) { _counters.Drop(DropReason.NotForUs); return; }
        if (destination != _config.GatewayMac && !destination.IsMulticast) { _counters.Drop(DropReason.NotForUs); return; }
        GuestMac = source;
        switch (ethernet.EtherType)
        {
            case EthernetFrame.EtherTypeArp: Arp.OnPacket(ethernet.Payload); break;
            case EthernetFrame.EtherTypeIPv4: OnIPv4(ethernet.Payload); break;
            case EthernetFrame.EtherTypeIPv6:
                if (IPv6 is null) _counters.Drop(DropReason.IPv6NotSupported);
                else IPv6.OnPacket(ethernet.Payload);
                break;
            default: _counters.Drop(DropReason.UnknownEtherType); break;
        }
    }

    public void OnDeviceConnected()
    {
        // A new emulator connection may be a different guest: forget what was learned.
        GuestMac = null;
        GuestAddress = _config.Guest;
    }

    public void OnDeviceDisconnected()
    {
        GuestMac = null;
        GuestAddress = _config.Guest;
        _reassembly.Clear();
        Udp.OnGuestGone();
        Dns.OnGuestGone();
        Icmp.OnGuestGone();
        Tcp.OnGuestGone();
        IPv6?.OnGuestGone();
    }

    public void OnTransmitReady() => Tcp.OnTransmitReady();

    private void OnIPv4(ReadOnlySpan<byte> bytes)
    {
        var error = IPv4Packet.TryParse(bytes, out var packet);
        if (error != IPv4Packet.ParseError.None)
        {
            _counters.Drop(error == IPv4Packet.ParseError.BadChecksum ? DropReason.IPv4BadChecksum : DropReason.IPv4Malformed);
            return;
        }
        if (packet.IsFragment)
        {
            // RFC 791 §3.2 / RFC 815: hold fragments until the datagram is whole, then deliver it like any other.
            if (!_reassembly.Add(in packet, out var whole)) return;
            if (IPv4Packet.TryParse(whole, out var reassembled) != IPv4Packet.ParseError.None)
            {
                _counters.Drop(DropReason.IPv4Malformed);
                return;
            }
            Deliver(in reassembled);
            return;
        }
        Deliver(in packet);
    }

    private void Deliver(in IPv4Packet packet)
    {
        // Only the guest's own address may source packets (a spoofed SYN flood, or another host bridged onto the
        // link, is dropped here); 0.0.0.0 only for UDP, where DHCP needs it (RFC 2131 §4.1) and OnUdp checks.
        var source = packet.Source;
        if (source != GuestAddress && !(source == IPv4Address.Any && packet.Protocol == IPv4Packet.ProtocolUdp))
        {
            _counters.Drop(DropReason.SourceSpoofed);
            return;
        }
        switch (packet.Protocol)
        {
            case IPv4Packet.ProtocolIcmp:
                Icmp.OnPacket(in packet);
                break;
            case IPv4Packet.ProtocolUdp:
                OnUdp(in packet);
                break;
            case IPv4Packet.ProtocolTcp:
                Tcp.OnSegment(in packet);
                break;
            default:
                // RFC 1122 §3.2.2.1: protocol unreachable for a transport the stack does not carry.
                _counters.Drop(DropReason.NotForUs);
                Icmp.SendDestinationUnreachable(IcmpPacket.CodeProtocolUnreachable, in packet);
                break;
        }
    }

    private void OnUdp(in IPv4Packet packet)
    {
        if (!UdpDatagram.TryParse(packet.Payload, out var datagram)) { _counters.Drop(DropReason.UdpMalformed); return; }
        if (!datagram.IsChecksumValid(packet.Source, packet.Destination)) { _counters.Drop(DropReason.UdpBadChecksum); return; }
        var destination = packet.Destination;
        if (datagram.DestinationPort == Dhcp.ServerPort && (destination.IsBroadcast || destination == _config.Gateway))
        {
            Dhcp.OnRequest(in packet, in datagram);
            return;
        }
        if (packet.Source == IPv4Address.Any) { _counters.Drop(DropReason.SourceSpoofed); return; }
        Udp.OnDatagram(in packet, in datagram);
    }

    // ---- IPacketSender ----

    public int TransmitSpace => _device.TransmitSpace;

    public bool GuestReachable => _device.IsConnected && GuestMac is not null;

    /// <summary>The guest MTU less the IPv4 header; an MTU above 65535 cannot be used (RFC 791 total length).</summary>
    public int MaxPayload => Math.Clamp(_config.Mtu, 68, ushort.MaxValue) - IPv4Packet.MinHeaderLength;

    public OutboundPacket BeginPacket(IPv4Address source, IPv4Address destination, byte protocol, int maxPayload)
    {
        _loop.AssertOwner();
        if (GuestMac is null) { _counters.Drop(DropReason.GuestMacUnknown); return default; }
        // RFC 791: the total length field is 16 bits.
        if (maxPayload < 0 || maxPayload > ushort.MaxValue - IPv4Packet.MinHeaderLength)
            throw new ArgumentOutOfRangeException(nameof(maxPayload));
        var lease = _device.BeginTransmit(EthernetAndIPv4Header + maxPayload);
        if (lease.IsEmpty || lease.Buffer.Length < EthernetAndIPv4Header + maxPayload) return default;
        return new OutboundPacket(this, lease.Buffer, EthernetAndIPv4Header, maxPayload, lease.Token, source, destination, protocol);
    }

    public LinkOffloads Offloads => _device.Offloads;

    /// <summary>IPv6 packets of the spliced transports (TCP, UDP) go out here; the IPv4 overload stays the IPv4 path.</summary>
    public OutboundPacket BeginFlowPacket(FlowAddress source, FlowAddress destination, byte protocol, int maxPayload)
    {
        if (source.IsIPv4 && destination.IsIPv4) return BeginPacket(source.IPv4, destination.IPv4, protocol, maxPayload);
        _loop.AssertOwner();
        if (GuestMac is null) { _counters.Drop(DropReason.GuestMacUnknown); return default; }
        const int header = EthernetFrame.HeaderLength + IPv6Packet.HeaderLength;
        if (maxPayload < 0 || maxPayload > ushort.MaxValue) throw new ArgumentOutOfRangeException(nameof(maxPayload));
        var lease = _device.BeginTransmit(header + maxPayload);
        if (lease.IsEmpty || lease.Buffer.Length < header + maxPayload) return default;
        return new OutboundPacket(this, lease.Buffer, header, maxPayload, lease.Token, source, destination, protocol);
    }

    public void CommitPacket(in OutboundPacket packet, int payloadLength, in TransmitOffload offload)
    {
        var frame = packet.Frame;
        if (!packet.SourceAddress.IsIPv4)
        {
            EthernetFrame.WriteHeader(frame, GuestMac ?? MacAddress.Broadcast, _config.GatewayMac, EthernetFrame.EtherTypeIPv6);
            IPv6Packet.WriteHeader(frame[EthernetFrame.HeaderLength..], packet.SourceAddress.IPv6, packet.DestinationAddress.IPv6,
                packet.Protocol, payloadLength);
            int length6 = EthernetFrame.HeaderLength + IPv6Packet.HeaderLength + payloadLength;
            _device.CommitTransmit(packet.Token, length6);
            CountSent(length6);
            return;
        }
        var mac = GuestMac ?? MacAddress.Broadcast;
        EthernetFrame.WriteHeader(frame, mac, _config.GatewayMac, EthernetFrame.EtherTypeIPv4);
        IPv4Packet.WriteHeader(frame[EthernetFrame.HeaderLength..], packet.Source, packet.Destination, packet.Protocol,
            IPv4Packet.MinHeaderLength + payloadLength, _nextIdentification++);
        int length = EthernetAndIPv4Header + payloadLength;
        if (offload == default) _device.CommitTransmit(packet.Token, length);
        else _device.CommitTransmit(packet.Token, length, DeviceOffload(in offload));
        CountSent(length);
    }

    /// <summary>The most header bytes <see cref="TrySendDirect"/> puts in front of a payload: Ethernet, IPv4, the largest TCP header.</summary>
    private const int MaxDirectHeader = EthernetAndIPv4Header + TcpSegment.MaxHeaderLength;

    public bool TrySendDirect(FlowAddress source, FlowAddress destination, byte protocol, ReadOnlySpan<byte> transportHeader,
        ReadOnlySpan<byte> body, ReadOnlySpan<byte> tail, in TransmitOffload offload)
    {
        _loop.AssertOwner();
        if (!source.IsIPv4 || !destination.IsIPv4 || GuestMac is not { } mac || transportHeader.Length > TcpSegment.MaxHeaderLength) return false;
        int payloadLength = transportHeader.Length + body.Length + tail.Length;
        if (payloadLength > ushort.MaxValue - IPv4Packet.MinHeaderLength) throw new ArgumentOutOfRangeException(nameof(body));
        Span<byte> head = stackalloc byte[MaxDirectHeader];
        head = head[..(EthernetAndIPv4Header + transportHeader.Length)];
        EthernetFrame.WriteHeader(head, mac, _config.GatewayMac, EthernetFrame.EtherTypeIPv4);
        IPv4Packet.WriteHeader(head[EthernetFrame.HeaderLength..], source.IPv4, destination.IPv4, protocol,
            IPv4Packet.MinHeaderLength + payloadLength, _nextIdentification);
        transportHeader.CopyTo(head[EthernetAndIPv4Header..]);
        var deviceOffload = offload == default ? offload : DeviceOffload(in offload);
        if (!_device.TryTransmitDirect(new FramePieces(head, body, tail), in deviceOffload)) return false;
        _nextIdentification++;
        CountSent(EthernetAndIPv4Header + payloadLength); // FramesToGuestDirect is the device's count
        return true;
    }

    /// <summary>An IPv4 packet's offload as the device counts it: the protocol counted from its own header, the device from the start of the frame.</summary>
    private static TransmitOffload DeviceOffload(in TransmitOffload offload) => offload with
    {
        ChecksumStart = EthernetAndIPv4Header + offload.ChecksumStart,
        HeaderLength = offload.SegmentSize > 0 ? EthernetAndIPv4Header + offload.HeaderLength : 0,
    };

    /// <summary>Counts a frame sent to the guest (here, and by a part that writes its own Ethernet header: ARP).</summary>
    internal void CountSent(int length)
    {
        _counters.FramesToGuest++;
        _counters.BytesToGuest += length;
    }

    public void Dispose()
    {
        Tcp.OnGuestGone();
        Udp.Dispose();
        Dns.Dispose();
        Icmp.Dispose();
    }
}
