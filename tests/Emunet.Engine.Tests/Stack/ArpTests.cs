using Emunet.Engine.Diagnostics;
using Emunet.Engine.Stack;
using Emunet.Engine.Wire;

namespace Emunet.Engine.Tests.Stack;

public class ArpTests
{
    [Theory]
    [InlineData("10.0.2.2")]
    [InlineData("10.0.2.3")]
    [InlineData("10.0.2.77")]
    public void Requests_for_addresses_Emunet_claims_are_answered(string target)
    {
        using var h = new StackHarness();
        var targetIp = IPv4Address.Parse(target);
        h.Send(GuestFrames.Arp(ArpPacket.OperationRequest, StackHarness.GuestIp, targetIp));

        var eth = Oracle.Ethernet(h.Expect());
        Assert.Equal(PacketDotNet.EthernetType.Arp, eth.Type);
        Assert.Equal("525400123456", eth.DestinationHardwareAddress.ToString());
        var arp = Assert.IsType<PacketDotNet.ArpPacket>(eth.PayloadPacket);
        Assert.Equal(PacketDotNet.ArpOperation.Response, arp.Operation);
        Assert.Equal(target, arp.SenderProtocolAddress.ToString());
        Assert.Equal("52550A000202", arp.SenderHardwareAddress.ToString());
        Assert.Equal("10.0.2.15", arp.TargetProtocolAddress.ToString());
        Assert.Equal("525400123456", arp.TargetHardwareAddress.ToString());
        Assert.Equal(1, h.Counters.FramesToGuest);
        Assert.Equal(h.Stack.GuestMac, StackHarness.GuestMac);
    }

    [Theory]
    [InlineData("10.0.2.15")]     // the guest's own
    [InlineData("10.0.2.0")]      // the network
    [InlineData("10.0.2.255")]    // the broadcast address
    [InlineData("192.168.1.1")]   // off the subnet
    public void Requests_for_other_addresses_get_no_answer(string target)
    {
        using var h = new StackHarness();
        h.Send(GuestFrames.Arp(ArpPacket.OperationRequest, IPv4Address.Any, IPv4Address.Parse(target)));
        h.ExpectNone();
        Assert.Equal(1, h.Counters.Drops(DropReason.NotForUs));
    }

    [Fact]
    public void A_probe_for_the_guests_address_gets_no_answer_and_teaches_nothing()
    {
        using var h = new StackHarness();
        // RFC 5227 probe: sender 0.0.0.0.
        h.Send(GuestFrames.Arp(ArpPacket.OperationRequest, IPv4Address.Any, StackHarness.GuestIp));
        h.ExpectNone();
        Assert.Equal(StackHarness.GuestIp, h.Stack.GuestAddress);
    }

    [Fact]
    public void A_guest_with_another_address_is_learned_and_not_answered_for()
    {
        using var h = new StackHarness();
        var other = new IPv4Address(10, 0, 2, 16);
        h.Send(GuestFrames.Arp(ArpPacket.OperationRequest, other, StackHarness.Gateway));
        Assert.NotNull(h.Expect());
        Assert.Equal(other, h.Stack.GuestAddress);
        h.Send(GuestFrames.Arp(ArpPacket.OperationRequest, StackHarness.Gateway, other));
        h.ExpectNone();
    }

    [Fact]
    public void Gratuitous_announcements_are_not_answered()
    {
        using var h = new StackHarness();
        h.Send(GuestFrames.Arp(ArpPacket.OperationRequest, StackHarness.GuestIp, StackHarness.GuestIp));
        h.Send(GuestFrames.Arp(ArpPacket.OperationReply, StackHarness.GuestIp, StackHarness.Gateway));
        h.ExpectNone();
        Assert.Equal(0, h.Counters.TotalDrops);
    }

    [Fact]
    public void Malformed_arp_is_counted()
    {
        using var h = new StackHarness();
        var frame = GuestFrames.Arp(ArpPacket.OperationRequest, StackHarness.GuestIp, StackHarness.Gateway);
        h.Send(frame.AsSpan(0, frame.Length - 1).ToArray());
        frame[EthernetFrame.HeaderLength + ArpPacket.Offsets.ProtocolLength] = 16;
        h.Send(frame);
        h.ExpectNone();
        Assert.Equal(2, h.Counters.Drops(DropReason.ArpMalformed));
    }

    [Fact]
    public void A_full_device_counts_the_reply_as_dropped()
    {
        using var h = new StackHarness();
        h.Device.Full = true;
        h.Send(GuestFrames.Arp(ArpPacket.OperationRequest, StackHarness.GuestIp, StackHarness.Gateway));
        h.ExpectNone();
        Assert.Equal(1, h.Counters.Drops(DropReason.TransmitQueueFull));
    }
}
