using System.Net;
using Emunet.Engine.Wire;
using PacketDotNet;
using PacketDotNet.Utils;
using IPv6Packet = Emunet.Engine.Wire.IPv6Packet;

namespace Emunet.Engine.Tests.Wire;

public class IPv6PacketTests
{
    // fe80::1 -> ff02::1, ICMPv6 echo request id 0x1234 seq 1 "abcd", hop limit 64, traffic class 0, flow label 0.
    private static readonly byte[] EchoPacket = Convert.FromHexString(
        "6000000000 0c3a40".Replace(" ", "") +
        "fe800000000000000000000000000001" +
        "ff020000000000000000000000000001" +
        "8000" + "0000" + "12340001" + "61626364");

    private static byte[] Fixture()
    {
        var bytes = (byte[])EchoPacket.Clone();
        // The fixture's checksum, as the oracle computes it, so the bytes are a real packet.
        Icmpv6Packet.FinishChecksum(bytes.AsSpan(40), IPv6Address.Parse("fe80::1"), IPv6Address.AllNodes);
        return bytes;
    }

    [Fact]
    public void Deconstruct()
    {
        var bytes = Fixture();
        Assert.Equal(IPv6Packet.ParseError.None, IPv6Packet.TryParse(bytes, out var packet));
        Assert.Equal(12, packet.PayloadLength);
        Assert.Equal(IPv6Packet.NextHeaderIcmpv6, packet.NextHeader);
        Assert.Equal(64, packet.HopLimit);
        Assert.Equal(IPv6Address.Parse("fe80::1"), packet.Source);
        Assert.Equal(IPv6Address.AllNodes, packet.Destination);
        var oracle = new PacketDotNet.IPv6Packet(new ByteArraySegment(bytes));
        Assert.Equal(oracle.PayloadLength, packet.PayloadLength);
        Assert.Equal(oracle.SourceAddress, packet.Source.ToIPAddress());
        Assert.Equal(oracle.DestinationAddress, packet.Destination.ToIPAddress());
        Assert.Equal(oracle.HopLimit, packet.HopLimit);
        Assert.Equal(ProtocolType.IcmpV6, oracle.NextHeader);
        var icmp = new IcmpV6Packet(new ByteArraySegment(bytes, 40, 12));
        Assert.Equal(icmp.Checksum, BitConverter.ToUInt16(new[] { bytes[43], bytes[42] }));
    }

    [Fact]
    public void Construct_matches_the_fixture()
    {
        var bytes = new byte[EchoPacket.Length];
        "abcd"u8.CopyTo(bytes.AsSpan(48));
        IPv6Packet.WriteHeader(bytes, IPv6Address.Parse("fe80::1"), IPv6Address.AllNodes, IPv6Packet.NextHeaderIcmpv6, 12);
        Icmpv6Packet.WriteHeader(bytes.AsSpan(40), Icmpv6Packet.TypeEchoRequest, 0, 0x1234_0001, IPv6Address.Parse("fe80::1"), IPv6Address.AllNodes);
        Assert.Equal(Fixture(), bytes);
    }

    [Fact]
    public void Checksum_agrees_with_the_oracle()
    {
        var bytes = Fixture();
        var oracle = new PacketDotNet.IPv6Packet(new ByteArraySegment(bytes));
        var icmp = oracle.Extract<IcmpV6Packet>();
        Assert.NotNull(icmp);
        Assert.Equal(IcmpV6Type.EchoRequest, icmp.Type);
        Assert.True(icmp.ValidIcmpChecksum);
        Assert.True(Icmpv6Packet.TryParse(bytes.AsSpan(40), out var ours));
        Assert.True(ours.IsChecksumValid(IPv6Address.Parse("fe80::1"), IPv6Address.AllNodes));
        bytes[^1] ^= 1;
        Assert.True(Icmpv6Packet.TryParse(bytes.AsSpan(40), out ours));
        Assert.False(ours.IsChecksumValid(IPv6Address.Parse("fe80::1"), IPv6Address.AllNodes));
    }

    [Fact]
    public void Truncated_is_refused()
    {
        var bytes = Fixture();
        Assert.Equal(IPv6Packet.ParseError.Truncated, IPv6Packet.TryParse(bytes.AsSpan(0, 39), out _));
        Assert.Equal(IPv6Packet.ParseError.BadPayloadLength, IPv6Packet.TryParse(bytes.AsSpan(0, bytes.Length - 1), out _));
    }

    [Fact]
    public void Overlong_is_cut_to_the_payload_length()
    {
        var bytes = Fixture().Concat(new byte[10]).ToArray();
        Assert.Equal(IPv6Packet.ParseError.None, IPv6Packet.TryParse(bytes, out var packet));
        Assert.Equal(12, packet.Payload.Length);
    }

    [Fact]
    public void Wrong_version_is_refused()
    {
        var bytes = Fixture();
        bytes[0] = 0x45;
        Assert.Equal(IPv6Packet.ParseError.BadVersion, IPv6Packet.TryParse(bytes, out _));
    }

    [Theory]
    [InlineData("fec0::15", "fec0::", 64, true)]
    [InlineData("fec0:0:0:1::15", "fec0::", 64, false)]
    [InlineData("fe80::1", "fe80::", 10, true)]
    [InlineData("2001:db8::1", "2001:db8::", 32, true)]
    [InlineData("2001:db8::1", "2001:db8::1", 128, true)]
    [InlineData("2001:db8::2", "2001:db8::1", 127, false)]
    public void Prefix_match(string address, string prefix, int length, bool expected) =>
        Assert.Equal(expected, IPv6Address.Parse(address).InPrefix(IPv6Address.Parse(prefix), length));

    [Fact]
    public void Solicited_node_and_multicast_mac()
    {
        var a = IPv6Address.Parse("fec0::5054:ff:fe12:3456");
        Assert.Equal(IPAddress.Parse("ff02::1:ff12:3456"), a.SolicitedNode.ToIPAddress());
        Assert.Equal("33:33:ff:12:34:56", a.SolicitedNode.MulticastMac.ToString());
        Assert.True(IPv6Address.Parse("fe80::1").IsLinkLocal);
        Assert.False(IPv6Address.Parse("fec0::1").IsLinkLocal);
        Assert.True(IPv6Address.AllNodes.IsMulticast);
    }
}
