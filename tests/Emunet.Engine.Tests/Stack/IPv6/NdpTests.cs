using Emunet.Engine.Diagnostics;
using Emunet.Engine.Stack;
using Emunet.Engine.Wire;
using PacketDotNet;
using PacketDotNet.Ndp;
using PacketDotNet.Utils;
using static Emunet.Engine.Tests.Stack.IPv6.GuestFrames6;
using IPv6Packet = Emunet.Engine.Wire.IPv6Packet;

namespace Emunet.Engine.Tests.Stack.IPv6;

public class NdpTests
{
    private static (PacketDotNet.IPv6Packet Ip, byte[] Icmp) ExpectIcmp(StackHarness h) => ExpectIcmp(h, out _);

    internal static (PacketDotNet.IPv6Packet Ip, byte[] Icmp) ExpectIcmp(StackHarness h, out byte[] frame)
    {
        frame = h.Expect();
        var (ip, packet) = Parse(frame);
        Assert.Equal(ProtocolType.IcmpV6, ip.NextHeader);
        var icmp = packet.AsSpan(IPv6Packet.HeaderLength).ToArray();
        Assert.True(Icmpv6Packet.TryParse(icmp, out var ours));
        Assert.True(ours.IsChecksumValid(IPv6Address.From(ip.SourceAddress), IPv6Address.From(ip.DestinationAddress)));
        return (ip, icmp);
    }

    [Fact]
    public void Router_solicitation_gets_an_advertisement_with_prefix_mtu_and_rdnss()
    {
        using var h = new StackHarness();
        h.Send(RouterSolicitation(GuestLinkLocal));
        var (ip, icmp) = ExpectIcmp(h);
        // RFC 4861 §6.1.2: from the router's link-local address, hop limit 255, to all nodes.
        Assert.Equal(Router.ToIPAddress(), ip.SourceAddress);
        Assert.Equal(IPv6Address.AllNodes.ToIPAddress(), ip.DestinationAddress);
        Assert.Equal(255, ip.HopLimit);
        var ra = new NdpRouterAdvertisementPacket(new ByteArraySegment(icmp));
        Assert.True(ra.RouterLifetime > 0);
        var prefix = Assert.Single(ra.OptionsCollection.OfType<NdpLinkPrefixInformationOption>());
        Assert.Equal(System.Net.IPAddress.Parse("fec0::"), prefix.Prefix);
        Assert.Equal(64, prefix.PrefixLength);
        Assert.True(prefix.AutonomousAddressConfiguration);
        Assert.Equal((uint)h.Config.Mtu, Assert.Single(ra.OptionsCollection.OfType<NdpMtuOption>()).Mtu);
        Assert.Equal("52550A000202", Assert.Single(ra.OptionsCollection.OfType<NdpLinkLayerAddressOption>()).LinkLayerAddress.ToString());
        // RDNSS (RFC 8106), which the oracle does not know: read it with ours.
        Assert.True(Icmpv6Packet.TryParse(icmp, out var message));
        var reader = new NdpOptionReader(NdpMessage.OptionsOf(in message));
        byte[]? rdnss = null;
        while (reader.TryNext(out var type, out var option)) if (type == NdpOptionReader.TypeRecursiveDnsServer) rdnss = option.ToArray();
        Assert.NotNull(rdnss);
        Assert.Equal(Dns, IPv6Address.Read(rdnss.AsSpan(8)));
    }

    [Fact]
    public void A_burst_of_solicitations_gets_one_advertisement_then_one_more_after_the_minimum_delay()
    {
        using var h = new StackHarness();
        h.Start();
        for (int i = 0; i < 5; i++) h.Send(RouterSolicitation(GuestLinkLocal));
        ExpectIcmp(h);
        // RFC 4861 §6.2.6: the rest wait for MIN_DELAY_BETWEEN_RAS; one more arrives then, not four.
        var (_, second) = ExpectIcmp(h);
        Assert.Equal(Icmpv6Packet.TypeRouterAdvertisement, second[0]);
        Assert.Equal(2, h.Invoke(() => h.Stack.IPv6!.Ndp.AdvertisementsSent));
        h.ExpectNone();
    }

    [Theory]
    [InlineData("fe80::2")]
    [InlineData("fec0::2")]
    [InlineData("fec0::3")]
    public void Neighbor_solicitation_for_our_addresses_is_answered(string target)
    {
        using var h = new StackHarness();
        var t = IPv6Address.Parse(target);
        h.Send(NeighborSolicitation(GuestGlobal, t));
        var (ip, icmp) = ExpectIcmp(h, out var frame);
        Assert.Equal(GuestGlobal.ToIPAddress(), ip.DestinationAddress);
        Assert.Equal(StackHarness.GuestMac, MacAddress.Read(frame));
        Assert.Equal(255, ip.HopLimit);
        var na = new NdpNeighborAdvertisementPacket(new ByteArraySegment(icmp));
        Assert.Equal(t.ToIPAddress(), na.TargetAddress);
        Assert.True(na.Solicited);
        Assert.True(na.Router);
        Assert.Equal("52550A000202", Assert.Single(na.OptionsCollection.OfType<NdpLinkLayerAddressOption>()).LinkLayerAddress.ToString());
    }

    [Fact]
    public void Neighbor_solicitation_for_another_address_is_not_answered()
    {
        using var h = new StackHarness();
        h.Send(NeighborSolicitation(GuestGlobal, IPv6Address.Parse("fec0::99")));
        h.ExpectNone();
    }

    [Fact]
    public void Duplicate_address_detection_teaches_the_guest_address()
    {
        using var h = new StackHarness();
        // RFC 4862 §5.4.2: from ::, to the tentative address's solicited-node group, no source link-layer option.
        h.Send(NeighborSolicitation(IPv6Address.Unspecified, GuestGlobal, withSourceMac: false));
        h.Send(NeighborSolicitation(IPv6Address.Unspecified, GuestLinkLocal, withSourceMac: false));
        h.ExpectNone();
        Assert.Equal(GuestGlobal, h.Stack.IPv6!.GuestAddress);
        Assert.Equal(GuestLinkLocal, h.Stack.IPv6!.GuestLinkLocal);
    }

    [Fact]
    public void Duplicate_address_detection_of_our_address_is_defended()
    {
        using var h = new StackHarness();
        h.Send(NeighborSolicitation(IPv6Address.Unspecified, HostAlias, withSourceMac: false));
        var (ip, icmp) = ExpectIcmp(h);
        Assert.Equal(IPv6Address.AllNodes.ToIPAddress(), ip.DestinationAddress);
        var na = new NdpNeighborAdvertisementPacket(new ByteArraySegment(icmp));
        Assert.False(na.Solicited);
        Assert.Null(h.Stack.IPv6!.GuestAddress);
    }

    [Fact]
    public void Hostile_neighbor_discovery_is_dropped_and_counted()
    {
        using var h = new StackHarness();
        h.Send(RouterSolicitation(GuestLinkLocal, hopLimit: 64));                          // crossed a router (§6.1.1)
        h.Send(NeighborSolicitation(GuestGlobal, HostAlias, hopLimit: 1));                 // likewise (§7.1.1)
        h.Send(NeighborSolicitation(IPv6Address.Unspecified, HostAlias, withSourceMac: true)); // DAD with a source MAC
        var zeroLength = new byte[16];
        zeroLength[0] = Icmpv6Packet.TypeRouterSolicitation;
        zeroLength[8] = NdpOptionReader.TypeSourceLinkLayerAddress;                       // option length 0 (§4.6)
        h.Send(Icmp(GuestLinkLocal, IPv6Address.AllRouters, zeroLength, 255));
        var multicastTarget = new byte[24];
        multicastTarget[0] = Icmpv6Packet.TypeNeighborSolicitation;
        IPv6Address.AllNodes.Write(multicastTarget.AsSpan(8));
        h.Send(Icmp(GuestGlobal, IPv6Address.AllNodes, multicastTarget, 255));
        h.ExpectNone();
        Assert.Equal(5, h.Counters.Drops(DropReason.NdpInvalid));
    }

    [Fact]
    public void A_bad_checksum_is_dropped()
    {
        using var h = new StackHarness();
        var frame = RouterSolicitation(GuestLinkLocal);
        frame[^1] ^= 0xff;
        h.Send(frame);
        h.ExpectNone();
        Assert.Equal(1, h.Counters.Drops(DropReason.Icmpv6Malformed));
    }

    [Fact]
    public void A_source_outside_the_prefix_is_refused()
    {
        using var h = new StackHarness();
        h.Send(EchoRequest(IPv6Address.Parse("2001:db8::1"), HostAlias, 1, 1, new byte[4]));
        h.Send(EchoRequest(IPv6Address.AllNodes, HostAlias, 1, 1, new byte[4]));
        h.ExpectNone();
        Assert.Equal(2, h.Counters.Drops(DropReason.SourceSpoofed));
    }

    [Fact]
    public void IPv6_off_drops_every_frame()
    {
        using var h = new StackHarness(new NetworkConfig { IPv6Enabled = false, DnsUpstream = new[] { new System.Net.IPEndPoint(System.Net.IPAddress.Loopback, 9) } });
        h.Send(RouterSolicitation(GuestLinkLocal));
        h.ExpectNone();
        Assert.Equal(1, h.Counters.Drops(DropReason.IPv6NotSupported));
    }
}
