using System.Net;
using Emunet.Engine.Diagnostics;
using Emunet.Engine.Stack;
using Emunet.Engine.Wire;
using PacketDotNet;
using static Emunet.Engine.Tests.Stack.IPv6.GuestFrames6;
using IPv6Packet = Emunet.Engine.Wire.IPv6Packet;
using TcpFields = Emunet.Engine.Wire.TcpFields;

namespace Emunet.Engine.Tests.Stack.IPv6;

public class TcpIPv6Tests
{
    private static byte[] Syn(IPv6Address destination, ushort port)
    {
        var tcp = new byte[TcpSegment.MinHeaderLength];
        var f = new TcpFields { SourcePort = 40000, DestinationPort = port, SequenceNumber = 1000, Flags = TcpFlags.Syn, Window = 65535, WindowScale = -1 };
        f.Emit(tcp, IPv6Packet.PseudoHeader(GuestGlobal, destination, IPv6Packet.NextHeaderTcp, 0), 0);
        return Frame(GuestGlobal, destination, IPv6Packet.NextHeaderTcp, tcp);
    }

    [Theory]
    [InlineData("fec0::99", nameof(DropReason.TcpUnreachable))]   // another address of the prefix: nothing there
    [InlineData("::1", nameof(DropReason.PolicyDenied))]           // the host's loopback is reachable only as fec0::2
    public void A_syn_the_policy_refuses_is_reset_over_ipv6(string destination, string reason)
    {
        using var h = new StackHarness();
        var to = IPv6Address.Parse(destination);
        h.Send(Syn(to, 80));
        var (ip, packet) = Parse(h.Expect());
        Assert.Equal(to.ToIPAddress(), ip.SourceAddress);
        Assert.Equal(GuestGlobal.ToIPAddress(), ip.DestinationAddress);
        var tcp = Assert.IsType<TcpPacket>(ip.PayloadPacket);
        Assert.True(tcp.Reset);
        Assert.True(tcp.Acknowledgment);
        Assert.Equal(1001u, tcp.AcknowledgmentNumber);
        Assert.True(tcp.ValidTcpChecksum);
        Assert.Equal(1, h.Counters.Drops(Enum.Parse<DropReason>(reason)));
        _ = packet;
    }

    [Fact]
    public void Restrict_denies_the_host_alias_over_ipv6()
    {
        using var h = new StackHarness(new NetworkConfig { Restrict = true, DnsUpstream = new[] { new IPEndPoint(IPAddress.Loopback, 9) } });
        h.Send(Syn(HostAlias, 80));
        var (ip, _) = Parse(h.Expect());
        Assert.True(Assert.IsType<TcpPacket>(ip.PayloadPacket).Reset);
        Assert.Equal(1, h.Counters.Drops(DropReason.PolicyDenied));
    }

    [Fact]
    public void A_bad_checksum_over_ipv6_is_counted()
    {
        using var h = new StackHarness();
        var frame = Syn(HostAlias, 80);
        frame[^1] ^= 1;
        h.Send(frame);
        h.ExpectNone();
        Assert.Equal(1, h.Counters.Drops(DropReason.TcpBadChecksum));
    }

    [Theory]
    [InlineData("fec0::2", 8080, "Mapped", "::1")]
    [InlineData("fec0::3", 53, "Mapped", "127.0.0.1")]
    [InlineData("fec0::3", 80, "Unroutable", null)]
    [InlineData("fec0::42", 80, "Unroutable", null)]
    [InlineData("fe80::1", 80, "Unroutable", null)]
    [InlineData("ff02::1", 80, "Unroutable", null)]
    [InlineData("::1", 80, "Denied", null)]
    [InlineData("::ffff:127.0.0.1", 80, "Denied", null)]
    [InlineData("2001:db8::7", 80, "Denied", null)]   // one of the host's own addresses (given below)
    [InlineData("2001:db8::8", 80, "Mapped", "2001:db8::8")]
    public void The_outbound_policy_maps_ipv6(string destination, int port, string verdict, string? host)
    {
        var config = new NetworkConfig { DnsUpstream = new[] { new IPEndPoint(IPAddress.Loopback, 53) } };
        var map = new AddressMap(config, () => new[] { IPAddress.Parse("2001:db8::7") });
        Assert.Equal(Enum.Parse<OutboundVerdict>(verdict), map.MapOutboundIPv6(IPv6Address.Parse(destination), port, out var mapped, out _));
        if (host is not null) Assert.Equal(IPAddress.Parse(host), mapped);
    }

    [Fact]
    public void No_host_loopback_closes_the_ipv6_alias()
    {
        var map = new AddressMap(new NetworkConfig { MapGatewayToLoopback = false, DnsUpstream = new[] { new IPEndPoint(IPAddress.Loopback, 53) } });
        Assert.Equal(OutboundVerdict.Unroutable, map.MapOutboundIPv6(IPv6Address.Parse("fec0::2"), 80, out _, out _));
    }
}
