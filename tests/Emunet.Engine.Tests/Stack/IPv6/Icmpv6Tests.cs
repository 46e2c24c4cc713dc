using Emunet.Engine.Diagnostics;
using Emunet.Engine.Stack.IPv6;
using Emunet.Engine.Wire;
using PacketDotNet;
using PacketDotNet.Utils;
using static Emunet.Engine.Tests.Stack.IPv6.GuestFrames6;
using IPv6Packet = Emunet.Engine.Wire.IPv6Packet;

namespace Emunet.Engine.Tests.Stack.IPv6;

public class Icmpv6Tests
{
    [Theory]
    [InlineData("fec0::2")]
    [InlineData("fec0::3")]
    [InlineData("fe80::2")]
    public void Echo_to_our_addresses_is_answered(string address)
    {
        using var h = new StackHarness();
        var to = IPv6Address.Parse(address);
        var source = to.IsLinkLocal ? GuestLinkLocal : GuestGlobal;
        h.Send(EchoRequest(source, to, 0x1234, 7, "ping6 data"u8));
        var (ip, icmp) = NdpTests.ExpectIcmp(h, out _);
        Assert.Equal(to.ToIPAddress(), ip.SourceAddress);
        Assert.Equal(source.ToIPAddress(), ip.DestinationAddress);
        var oracle = new IcmpV6Packet(new ByteArraySegment(icmp));
        Assert.Equal(IcmpV6Type.EchoReply, oracle.Type);
        Assert.True(Icmpv6Packet.TryParse(icmp, out var reply));
        Assert.Equal(0x1234, reply.Identifier);
        Assert.Equal(7, reply.Sequence);
        Assert.Equal("ping6 data"u8.ToArray(), reply.Body.ToArray());
    }

    [Fact]
    public void A_transport_not_carried_is_refused_with_destination_unreachable_quoting_the_packet()
    {
        using var h = new StackHarness();
        h.Send(Frame(GuestGlobal, IPv6Address.Parse("2001:db8::1"), 132 /* SCTP */, new byte[16]));
        var (ip, icmp) = NdpTests.ExpectIcmp(h, out _);
        Assert.Equal(GuestGlobal.ToIPAddress(), ip.DestinationAddress);
        Assert.Equal(Icmpv6Packet.TypeDestinationUnreachable, icmp[0]);
        // RFC 4443 §3.1: the invoking packet follows the 8-byte header.
        Assert.Equal(0x60, icmp[8] & 0xf0);
        Assert.Equal(IPv6Packet.HeaderLength + 16, icmp.Length - 8);
        Assert.Equal(1, h.Counters.Drops(DropReason.IPv6NotSupported));
    }

    [Fact]
    public void Errors_are_rate_limited()
    {
        using var h = new StackHarness();
        int sent = Icmpv6.ErrorBurst + 5;
        for (int i = 0; i < sent; i++) h.Send(Frame(GuestGlobal, IPv6Address.Parse("2001:db8::1"), 132, new byte[16]));
        // The burst goes out at once; the rest wait for tokens (RFC 4443 §2.4 (f)). A slow machine may refill one or two.
        Assert.InRange(h.Device.Frames.Count, Icmpv6.ErrorBurst, Icmpv6.ErrorBurst + 3);
        Assert.Equal(sent - h.Device.Frames.Count, h.Counters.Drops(DropReason.Icmpv6ErrorRateLimited));
    }

    [Fact]
    public void No_error_about_an_error_or_to_a_multicast_destination()
    {
        using var h = new StackHarness();
        var error = new byte[8 + 48];
        error[0] = Icmpv6Packet.TypeDestinationUnreachable;
        h.Send(Icmp(GuestGlobal, IPv6Address.Parse("2001:db8::1"), error));
        h.Send(Frame(GuestGlobal, IPv6Address.Parse("ff05::1"), 132, new byte[16]));
        h.ExpectNone();
    }
}
