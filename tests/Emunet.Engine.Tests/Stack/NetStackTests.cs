using Emunet.Engine.Diagnostics;
using Emunet.Engine.Stack;
using Emunet.Engine.Wire;

namespace Emunet.Engine.Tests.Stack;

public class NetStackTests
{
    [Fact]
    public void Nothing_is_sent_before_the_guest_mac_is_known()
    {
        using var h = new StackHarness();
        Assert.Null(h.Stack.GuestMac);
        var packet = h.Stack.BeginPacket(StackHarness.Gateway, StackHarness.GuestIp, IPv4Packet.ProtocolUdp, 100);
        Assert.True(packet.IsEmpty);
        Assert.True(packet.Payload.IsEmpty);
        Assert.Equal(1, h.Counters.Drops(DropReason.GuestMacUnknown));
    }

    [Fact]
    public void BeginPacket_and_CommitPacket_frame_the_payload()
    {
        using var h = new StackHarness();
        h.Stack.GuestMac = StackHarness.GuestMac;
        var packet = h.Stack.BeginPacket(StackHarness.Gateway, StackHarness.GuestIp, IPv4Packet.ProtocolUdp, h.Stack.MaxPayload);
        var span = packet.Payload;
        Assert.Equal(h.Config.Mtu - 20, span.Length);
        "hello"u8.CopyTo(span[8..]);
        int length = UdpDatagram.WriteHeader(span, StackHarness.Gateway, StackHarness.GuestIp, 7, 9, 5);
        packet.Commit(length);
        var udp = Oracle.Udp(h.Expect());
        Assert.Equal(7, udp.SourcePort);
        Assert.Equal("hello"u8.ToArray(), udp.PayloadData);
        Assert.Equal(1, h.Counters.FramesToGuest);
        Assert.Equal(14 + 20 + 13, h.Counters.BytesToGuest);
        Assert.Throws<InvalidOperationException>(() => default(OutboundPacket).Commit(1));
        Assert.Throws<ArgumentOutOfRangeException>(() => CommitTooMuch(h));
    }

    private static void CommitTooMuch(StackHarness h)
    {
        var packet = h.Stack.BeginPacket(StackHarness.Gateway, StackHarness.GuestIp, IPv4Packet.ProtocolUdp, 10);
        packet.Commit(11); // more than was lent
    }

    [Fact]
    public void Frames_are_counted_and_bad_ones_dropped_by_reason()
    {
        using var h = new StackHarness();

        h.Send(new byte[10]);                                                                  // runt
        h.Send(GuestFrames.Ethernet(h.GatewayMac, EthernetFrame.EtherTypeIPv6, new byte[40])); // IPv6
        h.Send(GuestFrames.Ethernet(h.GatewayMac, 0x88cc, new byte[40]));                       // LLDP
        h.Send(GuestFrames.Ethernet(MacAddress.Parse("02:00:00:00:00:01"), EthernetFrame.EtherTypeIPv4, new byte[40])); // another host's
        var badChecksum = GuestFrames.Echo(StackHarness.Gateway, 1, 1, new byte[4]);
        badChecksum[EthernetFrame.HeaderLength + IPv4Packet.Offsets.Ttl] ^= 1;
        h.Send(badChecksum);
        var badLength = GuestFrames.Echo(StackHarness.Gateway, 1, 1, new byte[4]);
        badLength[EthernetFrame.HeaderLength + IPv4Packet.Offsets.TotalLength + 1] += 1;   // one byte longer than the frame
        h.Send(badLength);
        var segment = GuestFrames.IPv4(StackHarness.GuestIp, new IPv4Address(127, 0, 0, 1), IPv4Packet.ProtocolTcp, new byte[20]);
        h.Send(segment);

        Assert.Equal(7, h.Counters.FramesFromGuest);
        Assert.Equal(1, h.Counters.Drops(DropReason.FrameTooShort));
        Assert.Equal(1, h.Counters.Drops(DropReason.IPv6Malformed));   // 40 zero bytes: version 0
        Assert.Equal(1, h.Counters.Drops(DropReason.UnknownEtherType));
        Assert.Equal(1, h.Counters.Drops(DropReason.NotForUs));
        Assert.Equal(1, h.Counters.Drops(DropReason.IPv4BadChecksum));
        Assert.Equal(1, h.Counters.Drops(DropReason.IPv4Malformed));
        // The TCP segment reached TCP, whose parser refused it (data offset 0) without an answer.
        Assert.Equal(1, h.Counters.Drops(DropReason.TcpMalformed));
        h.ExpectNone();

        h.Stack.OnTransmitReady();
        h.Stack.OnDeviceDisconnected();
        Assert.Null(h.Stack.GuestMac);
    }

    [Fact]
    public void Unknown_transport_gets_protocol_unreachable()
    {
        using var h = new StackHarness();
        h.Send(GuestFrames.IPv4(StackHarness.GuestIp, StackHarness.Gateway, 132, new byte[12]));   // SCTP
        var icmp = Oracle.Icmp(h.Expect());
        Assert.Equal(PacketDotNet.IcmpV4TypeCode.UnreachableProtocol, icmp.TypeCode);
    }

    [Fact]
    public void Snapshot_lists_nothing_when_idle()
    {
        using var h = new StackHarness();
        var list = new List<Emunet.Engine.Stack.Nat.ConnectionInfo>();
        h.Stack.Flows.Snapshot(list);
        Assert.Empty(list);
    }
}
