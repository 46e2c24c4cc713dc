using Emunet.Engine.Diagnostics;
using Emunet.Engine.Stack;
using Emunet.Engine.Wire;
using PacketDotNet;
using PacketDotNet.DhcpV4;

namespace Emunet.Engine.Tests.Stack;

public class DhcpTests
{
    private const uint Xid = 0x11223344;

    private delegate void WriteOptions(ref DhcpMessage.OptionWriter writer);

    private static byte[] ClientMessage(DhcpMessage.MessageType type, WriteOptions? options = null,
        IPv4Address? ciaddr = null, bool broadcast = true, IPv4Address? ipSource = null, IPv4Address? ipDestination = null,
        MacAddress? ethernetDestination = null)
    {
        var body = new byte[400];
        var w = DhcpMessage.WriteHeader(body, DhcpMessage.OpRequest, Xid, broadcast ? DhcpMessage.FlagBroadcast : (ushort)0,
            ciaddr ?? IPv4Address.Any, IPv4Address.Any, IPv4Address.Any, IPv4Address.Any, StackHarness.GuestMac);
        w.AddByte(DhcpMessage.OptionCode.MessageType, (byte)type);
        options?.Invoke(ref w);
        int length = w.End();
        return GuestFrames.Udp(ipSource ?? IPv4Address.Any, 68, ipDestination ?? IPv4Address.Broadcast, 67, body.AsSpan(0, length),
            to: ethernetDestination ?? MacAddress.Broadcast);
    }

    /// <summary>A client message of <paramref name="type"/> as a frame, for tests elsewhere.</summary>
    internal static byte[] ClientMessageForTests(DhcpMessage.MessageType type) => ClientMessage(type);

    private static (PacketDotNet.IPv4Packet Ip, DhcpV4Packet Dhcp, List<DhcpV4Option> Options) Reply(byte[] frame)
    {
        var udp = Oracle.Udp(frame);
        Assert.Equal(67, udp.SourcePort);
        Assert.Equal(68, udp.DestinationPort);
        var ip = (PacketDotNet.IPv4Packet)udp.ParentPacket;
        Assert.Equal("10.0.2.2", ip.SourceAddress.ToString());
        var dhcp = Assert.IsType<DhcpV4Packet>(udp.PayloadPacket);
        Assert.Equal(DhcpV4Operation.BootReply, dhcp.Operation);
        Assert.Equal(Xid, dhcp.TransactionId);
        Assert.Equal("525400123456", dhcp.ClientHardwareAddress.ToString());
        return (ip, dhcp, dhcp.GetOptions());
    }

    private static byte[] OptionData(List<DhcpV4Option> options, int code)
    {
        var o = options.Single(o => (int)o.OptionType == code);
        return o.Data.Length == o.Length ? o.Data : o.Data[^o.Length..];
    }

    [Fact]
    public void Full_exchange_discover_offer_request_ack()
    {
        var config = new NetworkConfig { Mtu = 4000, DnsUpstream = new[] { new System.Net.IPEndPoint(System.Net.IPAddress.Loopback, 9) } };
        using var h = new StackHarness(config);

        h.Send(ClientMessage(DhcpMessage.MessageType.Discover));
        var (ip, offer, options) = Reply(h.Expect());
        Assert.Equal(DhcpV4MessageType.Offer, offer.MessageType);
        Assert.Equal("255.255.255.255", ip.DestinationAddress.ToString());
        Assert.Equal("10.0.2.15", offer.YourAddress.ToString());
        Assert.Equal(new byte[] { 10, 0, 2, 2 }, OptionData(options, 54));
        Assert.Equal(new byte[] { 255, 255, 255, 0 }, OptionData(options, 1));
        Assert.Equal(new byte[] { 10, 0, 2, 2 }, OptionData(options, 3));
        Assert.Equal(new byte[] { 10, 0, 2, 3 }, OptionData(options, 6));
        Assert.Equal(new byte[] { 0x0f, 0xa0 }, OptionData(options, 26));
        Assert.Equal(new byte[] { 10, 0, 2, 255 }, OptionData(options, 28));
        Assert.Equal(new byte[] { 0, 1, 0x51, 0x80 }, OptionData(options, 51));

        h.Send(ClientMessage(DhcpMessage.MessageType.Request, (ref DhcpMessage.OptionWriter w) =>
        {
            w.AddAddress(DhcpMessage.OptionCode.RequestedAddress, StackHarness.GuestIp);
            w.AddAddress(DhcpMessage.OptionCode.ServerIdentifier, StackHarness.Gateway);
        }));
        var (_, ack, ackOptions) = Reply(h.Expect());
        Assert.Equal(DhcpV4MessageType.Ack, ack.MessageType);
        Assert.Equal("10.0.2.15", ack.YourAddress.ToString());
        Assert.Equal(new byte[] { 0, 0, 0xa8, 0xc0 }, OptionData(ackOptions, 58));
        Assert.True(h.Stack.Dhcp.IsLeased);

        h.Send(ClientMessage(DhcpMessage.MessageType.Release, ciaddr: StackHarness.GuestIp, broadcast: false,
            ipSource: StackHarness.GuestIp, ipDestination: StackHarness.Gateway));
        h.ExpectNone();
        Assert.False(h.Stack.Dhcp.IsLeased);
        Assert.Equal(0, h.Counters.TotalDrops);
    }

    [Fact]
    public void Request_for_a_wrong_address_is_refused_with_a_broadcast_nak()
    {
        using var h = new StackHarness();
        h.Send(ClientMessage(DhcpMessage.MessageType.Request, (ref DhcpMessage.OptionWriter w) => w.AddAddress(DhcpMessage.OptionCode.RequestedAddress, new IPv4Address(10, 0, 2, 99)),
            broadcast: false));
        var (ip, nak, options) = Reply(h.Expect());
        Assert.Equal(DhcpV4MessageType.Nak, nak.MessageType);
        Assert.Equal("255.255.255.255", ip.DestinationAddress.ToString());
        Assert.Equal("0.0.0.0", nak.YourAddress.ToString());
        Assert.DoesNotContain(options, o => (int)o.OptionType == 51);
        Assert.False(h.Stack.Dhcp.IsLeased);
    }

    [Fact]
    public void Request_for_another_server_is_ignored()
    {
        using var h = new StackHarness();
        h.Send(ClientMessage(DhcpMessage.MessageType.Request, (ref DhcpMessage.OptionWriter w) =>
        {
            w.AddAddress(DhcpMessage.OptionCode.RequestedAddress, StackHarness.GuestIp);
            w.AddAddress(DhcpMessage.OptionCode.ServerIdentifier, new IPv4Address(10, 0, 2, 4));
        }));
        h.ExpectNone();
    }

    [Fact]
    public void Renewal_is_unicast_to_ciaddr()
    {
        using var h = new StackHarness();
        h.Send(ClientMessage(DhcpMessage.MessageType.Request, ciaddr: StackHarness.GuestIp, broadcast: false,
            ipSource: StackHarness.GuestIp, ipDestination: StackHarness.Gateway));
        var (ip, ack, _) = Reply(h.Expect());
        Assert.Equal(DhcpV4MessageType.Ack, ack.MessageType);
        Assert.Equal("10.0.2.15", ip.DestinationAddress.ToString());
        Assert.Equal("10.0.2.15", ack.ClientAddress.ToString());
    }

    /// <summary>
    /// An engine restarted under a running guest: the guest keeps the lease an earlier engine gave and renews it
    /// (RFC 2131 §4.3.2 RENEWING: ciaddr set, no requested-address or server-identifier option, unicast to the server,
    /// at the Ethernet level to the gateway's MAC it has cached). This engine never saw a DISCOVER from it, yet acks the
    /// configured address with a full lease, unicast to ciaddr (§4.1) and to the MAC the request came from.
    /// </summary>
    [Fact]
    public void A_renewal_from_a_guest_this_engine_never_saw_is_acked_with_a_full_lease()
    {
        using var h = new StackHarness();
        Assert.False(h.Stack.Dhcp.IsLeased);
        h.Send(ClientMessage(DhcpMessage.MessageType.Request, ciaddr: StackHarness.GuestIp, broadcast: false,
            ipSource: StackHarness.GuestIp, ipDestination: StackHarness.Gateway, ethernetDestination: h.GatewayMac));
        var frame = h.Expect();
        var (ip, ack, options) = Reply(frame);
        Assert.Equal(DhcpV4MessageType.Ack, ack.MessageType);
        Assert.Equal("10.0.2.15", ip.DestinationAddress.ToString());
        Assert.Equal("10.0.2.15", ack.ClientAddress.ToString());
        Assert.Equal("10.0.2.15", ack.YourAddress.ToString());
        Assert.Equal(new byte[] { 0, 1, 0x51, 0x80 }, OptionData(options, 51));
        Assert.Equal(new byte[] { 0, 0, 0xa8, 0xc0 }, OptionData(options, 58));
        Assert.Equal(new byte[] { 10, 0, 2, 2 }, OptionData(options, 54));
        Assert.Equal(new byte[] { 10, 0, 2, 2 }, OptionData(options, 3));
        Assert.Equal(StackHarness.GuestMac.ToString().Replace(":", "").ToUpperInvariant(), Oracle.Ethernet(frame).DestinationHardwareAddress.ToString());
        Assert.True(h.Stack.Dhcp.IsLeased);
        Assert.Equal(0, h.Counters.TotalDrops);
    }

    /// <summary>RFC 2131 §4.3.2 REBINDING: the same request broadcast (T2 passed with no answer); still acked to ciaddr.</summary>
    [Fact]
    public void A_rebinding_broadcast_from_a_guest_this_engine_never_saw_is_acked_to_ciaddr()
    {
        using var h = new StackHarness();
        h.Send(ClientMessage(DhcpMessage.MessageType.Request, ciaddr: StackHarness.GuestIp, broadcast: false,
            ipSource: StackHarness.GuestIp, ipDestination: IPv4Address.Broadcast));
        var (ip, ack, _) = Reply(h.Expect());
        Assert.Equal(DhcpV4MessageType.Ack, ack.MessageType);
        Assert.Equal("10.0.2.15", ip.DestinationAddress.ToString());
        Assert.Equal("10.0.2.15", ack.YourAddress.ToString());
        Assert.True(h.Stack.Dhcp.IsLeased);
    }

    /// <summary>A renewal of an address this engine does not give (another plan before the restart) is refused: NAK.</summary>
    [Fact]
    public void A_renewal_of_another_address_is_refused_so_the_guest_starts_over()
    {
        using var h = new StackHarness();
        var other = new IPv4Address(10, 0, 2, 99);
        h.Send(ClientMessage(DhcpMessage.MessageType.Request, ciaddr: other, broadcast: false,
            ipSource: StackHarness.GuestIp, ipDestination: StackHarness.Gateway, ethernetDestination: h.GatewayMac));
        var (ip, nak, _) = Reply(h.Expect());
        Assert.Equal(DhcpV4MessageType.Nak, nak.MessageType);
        Assert.Equal("255.255.255.255", ip.DestinationAddress.ToString());
        Assert.False(h.Stack.Dhcp.IsLeased);
    }

    [Fact]
    public void Discover_without_the_broadcast_flag_is_unicast_to_the_offered_address()
    {
        using var h = new StackHarness();
        h.Send(ClientMessage(DhcpMessage.MessageType.Discover, broadcast: false));
        var (ip, offer, _) = Reply(h.Expect());
        Assert.Equal(DhcpV4MessageType.Offer, offer.MessageType);
        Assert.Equal("10.0.2.15", ip.DestinationAddress.ToString());
    }

    [Fact]
    public void Inform_gets_configuration_without_a_lease()
    {
        using var h = new StackHarness();
        h.Send(ClientMessage(DhcpMessage.MessageType.Inform, ciaddr: StackHarness.GuestIp, broadcast: false,
            ipSource: StackHarness.GuestIp, ipDestination: StackHarness.Gateway));
        var (ip, ack, options) = Reply(h.Expect());
        Assert.Equal(DhcpV4MessageType.Ack, ack.MessageType);
        Assert.Equal("0.0.0.0", ack.YourAddress.ToString());
        Assert.Equal("10.0.2.15", ip.DestinationAddress.ToString());
        Assert.DoesNotContain(options, o => (int)o.OptionType == 51);
        Assert.Contains(options, o => (int)o.OptionType == 3);
    }

    [Fact]
    public void Malformed_messages_are_counted()
    {
        using var h = new StackHarness();
        // Too short for BOOTP.
        h.Send(GuestFrames.Udp(IPv4Address.Any, 68, IPv4Address.Broadcast, 67, new byte[100], to: MacAddress.Broadcast));
        // A reply op from the client side.
        var frame = ClientMessage(DhcpMessage.MessageType.Discover);
        var udpStart = EthernetFrame.HeaderLength + Emunet.Engine.Wire.IPv4Packet.MinHeaderLength;
        var body = frame.AsSpan(udpStart + UdpDatagram.HeaderLength).ToArray();
        body[0] = DhcpMessage.OpReply;
        h.Send(GuestFrames.Udp(IPv4Address.Any, 68, IPv4Address.Broadcast, 67, body, to: MacAddress.Broadcast));
        h.ExpectNone();
        Assert.Equal(2, h.Counters.Drops(DropReason.DhcpMalformed));
    }
}
