using System.Buffers.Binary;
using Emunet.Engine.Wire;

namespace Emunet.Engine.Tests.Wire;

public class DhcpMessageTests
{
    private static readonly MacAddress Client = MacAddress.Parse("52:54:00:12:34:56");

    /// <summary>A DHCPREQUEST for 10.0.2.15 with a parameter request list, laid out byte by byte.</summary>
    private static byte[] RequestFixture()
    {
        var b = new byte[300];
        b[0] = 1; b[1] = 1; b[2] = 6; b[3] = 0;
        b[4] = 0xde; b[5] = 0xad; b[6] = 0xbe; b[7] = 0xef;
        b[10] = 0x80; // broadcast
        b[28] = 0x52; b[29] = 0x54; b[30] = 0x00; b[31] = 0x12; b[32] = 0x34; b[33] = 0x56;
        b[236] = 99; b[237] = 130; b[238] = 83; b[239] = 99;
        byte[] options = { 53, 1, 3, 0, 50, 4, 10, 0, 2, 15, 55, 3, 1, 3, 6, 255 };
        options.CopyTo(b, 240);
        return b;
    }

    [Fact]
    public void Deconstruct()
    {
        Assert.True(DhcpMessage.TryParse(RequestFixture(), out var m));
        Assert.Equal(DhcpMessage.OpRequest, m.Op);
        Assert.Equal(1, m.HardwareType);
        Assert.Equal(6, m.HardwareLength);
        Assert.Equal(0xdeadbeefu, m.TransactionId);
        Assert.True(m.BroadcastRequested);
        Assert.Equal(IPv4Address.Any, m.ClientAddress);
        Assert.Equal(Client, m.ClientHardwareAddress);
        Assert.Equal(DhcpMessage.MessageType.Request, m.Type);
        Assert.True(m.TryGetAddressOption(DhcpMessage.OptionCode.RequestedAddress, out var requested));
        Assert.Equal(new IPv4Address(10, 0, 2, 15), requested);
        Assert.True(m.TryGetOption(DhcpMessage.OptionCode.ParameterRequestList, out var list));
        Assert.Equal(new byte[] { 1, 3, 6 }, list.ToArray());
        Assert.False(m.TryGetOption(DhcpMessage.OptionCode.ServerIdentifier, out _));

        var codes = new List<byte>();
        foreach (var option in m.Options) codes.Add(option.Code);
        Assert.Equal(new byte[] { 53, 50, 55 }, codes);   // the pad is skipped, the walk stops at End
    }

    [Fact]
    public void Construct_is_read_back_by_PacketDotNet()
    {
        var body = new byte[400];
        var writer = DhcpMessage.WriteHeader(body, DhcpMessage.OpReply, 0xdeadbeef, DhcpMessage.FlagBroadcast, IPv4Address.Any,
            new IPv4Address(10, 0, 2, 15), new IPv4Address(10, 0, 2, 2), IPv4Address.Any, Client);
        writer.AddByte(DhcpMessage.OptionCode.MessageType, (byte)DhcpMessage.MessageType.Offer);
        writer.AddAddress(DhcpMessage.OptionCode.SubnetMask, new IPv4Address(255, 255, 255, 0));
        writer.AddUInt16(DhcpMessage.OptionCode.InterfaceMtu, 1500);
        writer.AddUInt32(DhcpMessage.OptionCode.LeaseTime, 86400);
        int length = writer.End();
        Assert.Equal(DhcpMessage.MinReplyLength, length);

        Assert.True(DhcpMessage.TryParse(body.AsSpan(0, length), out var m));
        Assert.Equal(DhcpMessage.MessageType.Offer, m.Type);

        // PacketDotNet reads it inside a UDP datagram.
        var udp = new PacketDotNet.UdpPacket(67, 68) { PayloadData = body.AsSpan(0, length).ToArray() };
        var dhcp = new PacketDotNet.DhcpV4Packet(new PacketDotNet.Utils.ByteArraySegment(udp.PayloadData), udp);
        Assert.Equal(PacketDotNet.DhcpV4MessageType.Offer, dhcp.MessageType);
        Assert.Equal(0xdeadbeefu, dhcp.TransactionId);
        Assert.Equal("10.0.2.15", dhcp.YourAddress.ToString());
        Assert.Equal("525400123456", dhcp.ClientHardwareAddress.ToString());
        var options = dhcp.GetOptions();
        // PacketDotNet keeps option 26 as raw data.
        Assert.Contains(options, o => o.OptionType == PacketDotNet.DhcpV4OptionType.MTUInterface && o.Data[^2] == 0x05 && o.Data[^1] == 0xdc);
        Assert.Contains(options, o => o is PacketDotNet.DhcpV4.SubnetMaskOption s && s.SubnetMask.ToString() == "255.255.255.0");
        Assert.Contains(options, o => o is PacketDotNet.DhcpV4.AddressTimeOption t && t.AddressTime == TimeSpan.FromSeconds(86400));
    }

    [Fact]
    public void Truncated()
    {
        var b = RequestFixture();
        Assert.False(DhcpMessage.TryParse(b.AsSpan(0, DhcpMessage.MinLength - 1), out _));
        // An option whose length runs past the end.
        Assert.False(DhcpMessage.TryParse(b.AsSpan(0, 240 + 8), out _));
        // An option code with no length byte.
        Assert.False(DhcpMessage.TryParse(b.AsSpan(0, 240 + 5), out _));
    }

    [Fact]
    public void Bad_magic_cookie_is_refused()
    {
        var b = RequestFixture();
        b[239] = 98;
        Assert.False(DhcpMessage.TryParse(b, out _));
    }

    [Fact]
    public void Overlong_bytes_after_End_are_ignored()
    {
        var b = new byte[600];
        RequestFixture().CopyTo(b, 0);
        b[599] = 0x35;  // would be a truncated option if the walk went past End
        Assert.True(DhcpMessage.TryParse(b, out var m));
        Assert.Equal(DhcpMessage.MessageType.Request, m.Type);
    }

    [Fact]
    public void Without_End_the_options_run_to_the_end_of_the_message()
    {
        var b = RequestFixture().AsSpan(0, 240 + 3).ToArray();
        Assert.True(DhcpMessage.TryParse(b, out var m));
        Assert.Equal(DhcpMessage.MessageType.Request, m.Type);
        Assert.Equal(0u, BinaryPrimitives.ReadUInt32BigEndian(b.AsSpan(12)));
    }
}
