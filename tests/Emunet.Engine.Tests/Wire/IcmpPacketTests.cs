using Emunet.Engine.Wire;

namespace Emunet.Engine.Tests.Wire;

public class IcmpPacketTests
{
    // Echo request, identifier 0x1234, sequence 1, data "abcd".
    private static readonly byte[] Echo = { 0x08, 0x00, 0x21, 0x04, 0x12, 0x34, 0x00, 0x01, 0x61, 0x62, 0x63, 0x64 };

    [Fact]
    public void Deconstruct()
    {
        Assert.True(IcmpPacket.TryParse(Echo, out var icmp));
        Assert.Equal(IcmpPacket.TypeEchoRequest, icmp.Type);
        Assert.Equal(0, icmp.Code);
        Assert.Equal(0x2104, icmp.Checksum);
        Assert.Equal(0x1234, icmp.Identifier);
        Assert.Equal(1, icmp.Sequence);
        Assert.Equal("abcd"u8.ToArray(), icmp.Data.ToArray());
        Assert.True(icmp.IsChecksumValid);
        Assert.False(icmp.IsError);
    }

    [Fact]
    public void Construct()
    {
        var bytes = new byte[Echo.Length];
        "abcd"u8.CopyTo(bytes.AsSpan(8));
        IcmpPacket.WriteHeader(bytes, IcmpPacket.TypeEchoRequest, 0, 0x1234, 1);
        Assert.Equal(Echo, bytes);
        var oracle = new PacketDotNet.IcmpV4Packet(new PacketDotNet.Utils.ByteArraySegment(bytes));
        Assert.True(oracle.ValidIcmpChecksum);
        Assert.Equal(PacketDotNet.IcmpV4TypeCode.EchoRequest, oracle.TypeCode);
    }

    [Fact]
    public void Rewriting_the_identifier_keeps_the_checksum_valid()
    {
        var bytes = (byte[])Echo.Clone();
        IcmpPacket.RewriteIdentifier(bytes, 0xbeef);
        Assert.True(IcmpPacket.TryParse(bytes, out var icmp));
        Assert.Equal(0xbeef, icmp.Identifier);
        Assert.True(icmp.IsChecksumValid);
    }

    [Fact]
    public void Truncated()
    {
        Assert.False(IcmpPacket.TryParse(Echo.AsSpan(0, 7), out _));
    }

    [Fact]
    public void Overlong_bytes_are_data_and_break_the_checksum()
    {
        var longer = new byte[Echo.Length + 2];
        Echo.CopyTo(longer, 0);
        longer[^1] = 1;
        Assert.True(IcmpPacket.TryParse(longer, out var icmp));
        Assert.Equal(6, icmp.Data.Length);
        Assert.False(icmp.IsChecksumValid);
    }
}
