using Emunet.Engine.Diagnostics;
using Emunet.Engine.Wire;
using static Emunet.Engine.Tests.Stack.IPv6.GuestFrames6;
using IPv6Packet = Emunet.Engine.Wire.IPv6Packet;

namespace Emunet.Engine.Tests.Stack.IPv6;

public class Dhcpv6Tests
{
    private static byte[] Request(byte type, uint xid, bool withClientId = true)
    {
        var body = new byte[256];
        int at = Dhcpv6Message.WriteHeader(body, type, xid);
        if (withClientId) at += Dhcpv6Message.WriteOption(body.AsSpan(at), Dhcpv6Message.OptionClientId, Convert.FromHexString("00030001525400123456"));
        at += Dhcpv6Message.WriteOption(body.AsSpan(at), Dhcpv6Message.OptionOptionRequest, new byte[] { 0, 23 });
        var udp = new byte[8 + at];
        body.AsSpan(0, at).CopyTo(udp.AsSpan(8));
        IPv6Packet.WriteUdpHeader(udp, GuestLinkLocal, Dhcpv6Message.AllServersAndRelays, Dhcpv6Message.ClientPort, Dhcpv6Message.ServerPort, udp.Length);
        return Frame(GuestLinkLocal, Dhcpv6Message.AllServersAndRelays, IPv6Packet.NextHeaderUdp, udp);
    }

    [Fact]
    public void Information_request_is_answered_with_the_dns_relay()
    {
        using var h = new StackHarness();
        h.Send(Request(Dhcpv6Message.TypeInformationRequest, 0xabcdef));
        var (ip, packet) = Parse(h.Expect());
        Assert.Equal(GuestLinkLocal.ToIPAddress(), ip.DestinationAddress);
        var udp = Assert.IsType<PacketDotNet.UdpPacket>(ip.PayloadPacket);
        Assert.Equal(Dhcpv6Message.ServerPort, udp.SourcePort);
        Assert.Equal(Dhcpv6Message.ClientPort, udp.DestinationPort);
        Assert.True(udp.ValidUdpChecksum);
        Assert.True(Dhcpv6Message.TryParse(udp.PayloadData, out var reply));
        Assert.Equal(Dhcpv6Message.TypeReply, reply.MessageType);
        Assert.Equal(0xabcdefu, reply.TransactionId);
        Assert.True(reply.TryGetOption(Dhcpv6Message.OptionDnsServers, out var dns));
        Assert.Equal(Dns, IPv6Address.Read(dns));
        Assert.True(reply.TryGetOption(Dhcpv6Message.OptionClientId, out var client));
        Assert.Equal(Convert.FromHexString("00030001525400123456"), client.ToArray());
        Assert.True(reply.TryGetOption(Dhcpv6Message.OptionServerId, out var server));
        Assert.Equal(Convert.FromHexString("0003000152550a000202"), server.ToArray());
        _ = packet;
    }

    [Fact]
    public void Solicit_is_not_answered_addresses_come_from_slaac()
    {
        using var h = new StackHarness();
        h.Send(Request(Dhcpv6Message.TypeSolicit, 1));
        h.ExpectNone();
    }

    [Fact]
    public void Malformed_and_bad_checksum_are_counted()
    {
        using var h = new StackHarness();
        var bad = Request(Dhcpv6Message.TypeInformationRequest, 2);
        bad[^1] ^= 0x55;                                             // breaks the UDP checksum
        h.Send(bad);
        var body = new byte[8 + 6];
        body[8] = Dhcpv6Message.TypeInformationRequest;
        body[12] = 0; body[13] = 1;                                   // a 2-byte option header: truncated
        IPv6Packet.WriteUdpHeader(body, GuestLinkLocal, Dhcpv6Message.AllServersAndRelays, 546, 547, body.Length);
        h.Send(Frame(GuestLinkLocal, Dhcpv6Message.AllServersAndRelays, IPv6Packet.NextHeaderUdp, body));
        h.ExpectNone();
        Assert.Equal(1, h.Counters.Drops(DropReason.UdpBadChecksum));
        Assert.Equal(1, h.Counters.Drops(DropReason.Dhcpv6Malformed));
    }
}
