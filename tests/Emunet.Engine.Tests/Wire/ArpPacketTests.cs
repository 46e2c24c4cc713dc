using Emunet.Engine.Wire;

namespace Emunet.Engine.Tests.Wire;

public class ArpPacketTests
{
    // Who has 10.0.2.2? Tell 10.0.2.15 (52:54:00:12:34:56).
    private static readonly byte[] Request =
    {
        0x00, 0x01, 0x08, 0x00, 0x06, 0x04, 0x00, 0x01,
        0x52, 0x54, 0x00, 0x12, 0x34, 0x56, 0x0a, 0x00, 0x02, 0x0f,
        0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x0a, 0x00, 0x02, 0x02,
    };

    [Fact]
    public void Deconstruct()
    {
        Assert.True(ArpPacket.TryParse(Request, out var arp));
        Assert.Equal(ArpPacket.OperationRequest, arp.Operation);
        Assert.Equal(MacAddress.Parse("52:54:00:12:34:56"), arp.SenderHardwareAddress);
        Assert.Equal(new IPv4Address(10, 0, 2, 15), arp.SenderProtocolAddress);
        Assert.Equal(MacAddress.Zero, arp.TargetHardwareAddress);
        Assert.Equal(new IPv4Address(10, 0, 2, 2), arp.TargetProtocolAddress);
    }

    [Fact]
    public void Construct()
    {
        var bytes = new byte[ArpPacket.Length];
        ArpPacket.Write(bytes, ArpPacket.OperationRequest, MacAddress.Parse("52:54:00:12:34:56"), new IPv4Address(10, 0, 2, 15),
            MacAddress.Zero, new IPv4Address(10, 0, 2, 2));
        Assert.Equal(Request, bytes);
        var oracle = new PacketDotNet.ArpPacket(new PacketDotNet.Utils.ByteArraySegment(bytes));
        Assert.Equal(PacketDotNet.ArpOperation.Request, oracle.Operation);
        Assert.Equal("10.0.2.2", oracle.TargetProtocolAddress.ToString());
        Assert.Equal("10.0.2.15", oracle.SenderProtocolAddress.ToString());
    }

    [Fact]
    public void Truncated()
    {
        Assert.False(ArpPacket.TryParse(Request.AsSpan(0, ArpPacket.Length - 1), out _));
        Assert.False(ArpPacket.TryParse(ReadOnlySpan<byte>.Empty, out _));
    }

    [Fact]
    public void Overlong_padding_is_cut_off()
    {
        var padded = new byte[46];
        Request.CopyTo(padded, 0);
        padded[45] = 0xff;
        Assert.True(ArpPacket.TryParse(padded, out var arp));
        Assert.Equal(ArpPacket.Length, arp.Bytes.Length);
    }

    [Theory]
    [InlineData(1, 0x06)]   // hardware type 6 (IEEE 802)
    [InlineData(3, 0xdd)]   // protocol 0x08dd
    [InlineData(4, 8)]      // hardware length 8
    [InlineData(5, 16)]     // protocol length 16 (IPv6)
    public void Other_address_kinds_are_refused(int index, byte value)
    {
        var bytes = (byte[])Request.Clone();
        bytes[index] = value;
        Assert.False(ArpPacket.TryParse(bytes, out _));
    }
}
