using Emunet.Engine.Wire;
using PacketDotNet;
using PacketDotNet.Ndp;
using PacketDotNet.Utils;

namespace Emunet.Engine.Tests.Wire;

public class NdpMessageTests
{
    private static readonly IPv6Address Router = IPv6Address.Parse("fe80::2");
    private static readonly MacAddress RouterMac = MacAddress.Parse("52:55:0a:00:02:02");

    private static byte[] RouterAdvertisement()
    {
        var message = new byte[16 + 8 + 32 + 8 + 8 + 16];
        NdpMessage.WriteRouterAdvertisement(message, 64, NdpMessage.RaFlagOther, 1800, 0, 0);
        int at = 16;
        at += NdpOptionReader.WriteLinkLayerAddress(message.AsSpan(at), NdpOptionReader.TypeSourceLinkLayerAddress, RouterMac);
        at += NdpOptionReader.WritePrefixInformation(message.AsSpan(at), IPv6Address.Parse("fec0::"), 64,
            NdpOptionReader.PrefixFlagOnLink | NdpOptionReader.PrefixFlagAutonomous, 86400, 14400);
        at += NdpOptionReader.WriteMtu(message.AsSpan(at), 65520);
        at += NdpOptionReader.WriteRecursiveDnsServers(message.AsSpan(at), 1800, new[] { IPv6Address.Parse("fec0::3") });
        Assert.Equal(message.Length, at);
        Icmpv6Packet.FinishChecksum(message, Router, IPv6Address.AllNodes);
        return message;
    }

    [Fact]
    public void Router_advertisement_construct_parses_in_the_oracle()
    {
        var message = RouterAdvertisement();
        var icmp = new IcmpV6Packet(new ByteArraySegment(message));
        Assert.Equal(IcmpV6Type.RouterAdvertisement, icmp.Type);
        var ra = new NdpRouterAdvertisementPacket(new ByteArraySegment(message));
        Assert.Equal(64, ra.CurrentHopLimit);
        Assert.Equal(1800, ra.RouterLifetime);
        Assert.True(ra.OtherConfiguration);
        Assert.False(ra.ManagedAddressConfiguration);
        var prefix = Assert.Single(ra.OptionsCollection.OfType<NdpLinkPrefixInformationOption>());
        Assert.Equal(System.Net.IPAddress.Parse("fec0::"), prefix.Prefix);
        Assert.Equal(64, prefix.PrefixLength);
        Assert.True(prefix.AutonomousAddressConfiguration);
        Assert.True(prefix.OnLink);
        Assert.Equal(65520u, Assert.Single(ra.OptionsCollection.OfType<NdpMtuOption>()).Mtu);
        var lla = Assert.Single(ra.OptionsCollection.OfType<NdpLinkLayerAddressOption>());
        Assert.Equal("52550A000202", lla.LinkLayerAddress.ToString());
    }

    [Fact]
    public void Router_advertisement_options_deconstruct()
    {
        var message = RouterAdvertisement();
        Assert.True(Icmpv6Packet.TryParse(message, out var icmp));
        Assert.True(icmp.IsChecksumValid(Router, IPv6Address.AllNodes));
        var reader = new NdpOptionReader(NdpMessage.OptionsOf(in icmp));
        var types = new List<byte>();
        byte[] rdnss = Array.Empty<byte>();
        while (reader.TryNext(out var type, out var option))
        {
            types.Add(type);
            if (type == NdpOptionReader.TypeRecursiveDnsServer) rdnss = option.ToArray();
        }
        Assert.False(reader.Malformed);
        Assert.Equal(new byte[] { 1, 3, 5, 25 }, types);
        // RFC 8106 §5.1: length 3 for one address, lifetime, then the address.
        Assert.Equal(Convert.FromHexString("19030000" + "00000708" + "fec00000000000000000000000000003"), rdnss);
    }

    [Fact]
    public void Neighbor_advertisement_construct_parses_in_the_oracle()
    {
        var message = new byte[24 + 8];
        var target = IPv6Address.Parse("fec0::2");
        NdpMessage.WriteNeighborAdvertisement(message, NdpMessage.NaFlagRouter | NdpMessage.NaFlagSolicited | NdpMessage.NaFlagOverride, target);
        NdpOptionReader.WriteLinkLayerAddress(message.AsSpan(24), NdpOptionReader.TypeTargetLinkLayerAddress, RouterMac);
        var guest = IPv6Address.Parse("fec0::15");
        Icmpv6Packet.FinishChecksum(message, target, guest);
        var na = new NdpNeighborAdvertisementPacket(new ByteArraySegment(message));
        Assert.Equal(target.ToIPAddress(), na.TargetAddress);
        Assert.True(na.Router);
        Assert.True(na.Solicited);
        Assert.True(na.Override);
        Assert.True(Icmpv6Packet.TryParse(message, out var ours));
        Assert.True(ours.IsChecksumValid(target, guest));
        Assert.Equal(target, NdpMessage.Target(in ours));
    }

    [Fact]
    public void Neighbor_solicitation_fixture_deconstructs()
    {
        // From the guest: who has fec0::2, tell 52:54:00:12:34:56 (options: source link-layer address).
        var message = Convert.FromHexString("87000000" + "00000000" + "fec00000000000000000000000000002" + "0101525400123456");
        var source = IPv6Address.Parse("fec0::15");
        var destination = IPv6Address.Parse("fec0::2").SolicitedNode;
        Icmpv6Packet.FinishChecksum(message, source, destination);
        var oracle = new NdpNeighborSolicitationPacket(new ByteArraySegment(message));
        Assert.True(Icmpv6Packet.TryParse(message, out var ns));
        Assert.Equal(Icmpv6Packet.TypeNeighborSolicitation, ns.Type);
        Assert.Equal(oracle.TargetAddress, NdpMessage.Target(in ns).ToIPAddress());
        var reader = new NdpOptionReader(NdpMessage.OptionsOf(in ns));
        Assert.True(reader.TryNext(out var type, out var option));
        Assert.Equal(NdpOptionReader.TypeSourceLinkLayerAddress, type);
        Assert.True(NdpOptionReader.TryReadLinkLayerAddress(option, out var mac));
        Assert.Equal(MacAddress.Parse("52:54:00:12:34:56"), mac);
        Assert.False(reader.TryNext(out _, out _));
        Assert.False(reader.Malformed);
    }

    [Theory]
    [InlineData("0100")]             // RFC 4861 §4.6: length zero
    [InlineData("0102525400123456")] // length 2 (16 bytes) past the end
    [InlineData("01")]               // a lone byte
    public void Malformed_options_are_reported(string hex)
    {
        var reader = new NdpOptionReader(Convert.FromHexString(hex));
        Assert.False(reader.TryNext(out _, out _));
        Assert.True(reader.Malformed);
    }

    [Fact]
    public void Truncated_neighbor_message_has_no_options()
    {
        Assert.True(Icmpv6Packet.TryParse(Convert.FromHexString("8700000000000000fec0"), out var ns));
        Assert.True(NdpMessage.OptionsOf(in ns).IsEmpty);
    }
}
