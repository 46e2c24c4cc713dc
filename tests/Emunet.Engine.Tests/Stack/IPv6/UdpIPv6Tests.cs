using System.Net;
using System.Net.Sockets;
using Emunet.Engine.Diagnostics;
using Emunet.Engine.Stack;
using Emunet.Engine.Stack.Nat;
using Emunet.Engine.Wire;
using static Emunet.Engine.Tests.Stack.IPv6.GuestFrames6;
using IPv6Packet = Emunet.Engine.Wire.IPv6Packet;

namespace Emunet.Engine.Tests.Stack.IPv6;

/// <summary>Guest UDP over IPv6 through the NAT: the host alias fec0::2 is the host's ::1; the IPv4 policy's rules apply.</summary>
public class UdpIPv6Tests
{
    /// <summary>A UDP datagram from the guest, checksum over the IPv6 pseudo-header (RFC 8200 §8.1), in a frame.</summary>
    internal static byte[] Udp(IPv6Address source, ushort sourcePort, IPv6Address destination, ushort destinationPort, ReadOnlySpan<byte> payload)
    {
        var datagram = new byte[UdpDatagram.HeaderLength + payload.Length];
        payload.CopyTo(datagram.AsSpan(UdpDatagram.HeaderLength));
        IPv6Packet.WriteUdpHeader(datagram, source, destination, sourcePort, destinationPort, datagram.Length);
        return Frame(source, destination, IPv6Packet.NextHeaderUdp, datagram);
    }

    private static Socket LoopbackServer()
    {
        var s = new Socket(AddressFamily.InterNetworkV6, SocketType.Dgram, ProtocolType.Udp) { ReceiveTimeout = 5000 };
        s.Bind(new IPEndPoint(IPAddress.IPv6Loopback, 0));
        return s;
    }

    private static ushort Port(Socket s) => (ushort)((IPEndPoint)s.LocalEndPoint!).Port;

    private static (byte[] Payload, EndPoint From) Receive(Socket s) => UdpTests.Receive(s);

    /// <summary>The UDP datagram of an IPv6 frame to the guest, its checksum checked by the oracle.</summary>
    private static PacketDotNet.UdpPacket ExpectUdp(StackHarness h)
    {
        var (ip, _) = Parse(h.Expect());
        var udp = Assert.IsType<PacketDotNet.UdpPacket>(ip.PayloadPacket);
        Assert.True(udp.ValidUdpChecksum, "UDP checksum over the IPv6 pseudo-header");
        Assert.NotEqual(0, udp.Checksum);
        return udp;
    }

    [Fact]
    public void Round_trip_through_the_host_alias_to_host_ipv6_loopback()
    {
        using var server = LoopbackServer();
        using var h = new StackHarness();
        h.Start();
        h.Send(Udp(GuestGlobal, 40000, HostAlias, Port(server), "ping6"u8));

        var (payload, from) = Receive(server);
        Assert.Equal("ping6"u8.ToArray(), payload);
        Assert.Equal(IPAddress.IPv6Loopback, ((IPEndPoint)from).Address);
        server.SendTo("pong6"u8, from);

        var udp = ExpectUdp(h);
        var ip = (PacketDotNet.IPv6Packet)udp.ParentPacket;
        Assert.Equal(HostAlias.ToIPAddress(), ip.SourceAddress);
        Assert.Equal(GuestGlobal.ToIPAddress(), ip.DestinationAddress);
        Assert.Equal(Port(server), udp.SourcePort);
        Assert.Equal(40000, udp.DestinationPort);
        Assert.Equal("pong6"u8.ToArray(), udp.PayloadData);

        // The same guest endpoint and destination reuse the flow; it is in the one table, keyed by IPv6 addresses.
        h.Send(Udp(GuestGlobal, 40000, HostAlias, Port(server), "again"u8));
        var (second, from2) = Receive(server);
        Assert.Equal("again"u8.ToArray(), second);
        Assert.Equal(from, from2);
        var flows = h.Invoke(() => { var l = new List<ConnectionInfo>(); h.Stack.Flows.Snapshot(l); return l; });
        var flow = Assert.Single(flows);
        Assert.Equal(FlowProtocol.Udp, flow.Protocol);
        Assert.Equal(new IPEndPoint(HostAlias.ToIPAddress(), Port(server)), flow.GuestPeerEndPoint);
        Assert.Equal(new IPEndPoint(IPAddress.IPv6Loopback, Port(server)), flow.HostRemoteEndPoint);
        Assert.Equal(10, flow.BytesFromGuest);
        Assert.Equal(5, flow.BytesToGuest);
        Assert.Equal(0, h.Counters.TotalDrops);
    }

    [Fact]
    public void A_closed_host_port_becomes_icmpv6_port_unreachable()
    {
        ushort closed;
        using (var s = LoopbackServer()) closed = Port(s);
        using var h = new StackHarness();
        h.Start();
        h.Send(Udp(GuestGlobal, 41000, HostAlias, closed, "anyone?"u8));
        var (ip, icmp) = NdpTests.ExpectIcmp(h, out _);
        Assert.Equal(HostAlias.ToIPAddress(), ip.SourceAddress);
        Assert.Equal(Icmpv6Packet.TypeDestinationUnreachable, icmp[0]);
        Assert.Equal(Icmpv6Packet.CodePortUnreachable, icmp[1]);
        // RFC 4443 §3.1: the invoking packet follows; its UDP header names the guest's socket.
        Assert.Equal(IPv6Packet.ParseError.None, IPv6Packet.TryParse(icmp.AsSpan(8), out var quoted));
        Assert.Equal(GuestGlobal, quoted.Source);
        Assert.Equal(HostAlias, quoted.Destination);
        Assert.True(UdpDatagram.TryParse(quoted.Payload, out var quotedUdp));
        Assert.Equal(41000, quotedUdp.SourcePort);
        Assert.Equal(closed, quotedUdp.DestinationPort);
    }

    [Theory]
    [InlineData("::ffff:10.0.2.2")]
    [InlineData("::ffff:127.0.0.1")]
    public void An_ipv4_mapped_destination_is_refused_administratively_prohibited(string destination)
    {
        using var h = new StackHarness();
        var to = IPv6Address.Parse(destination);
        h.Send(Udp(GuestGlobal, 40000, to, 53, "x"u8));
        var (ip, icmp) = NdpTests.ExpectIcmp(h, out _);
        Assert.Equal(GuestGlobal.ToIPAddress(), ip.DestinationAddress);
        Assert.Equal(Icmpv6Packet.TypeDestinationUnreachable, icmp[0]);
        Assert.Equal(Icmpv6Packet.CodeAdministrativelyProhibited, icmp[1]);
        Assert.Equal(1, h.Counters.Drops(DropReason.IPv6MappedDestination));
        Assert.Equal(0, h.Stack.Udp.FlowCount);
    }

    [Fact]
    public void A_tcp_syn_to_an_ipv4_mapped_destination_is_refused_too()
    {
        var tcp = new byte[TcpSegment.MinHeaderLength];
        var to = IPv6Address.Parse("::ffff:10.0.2.2");
        new TcpFields { SourcePort = 40000, DestinationPort = 80, SequenceNumber = 1, Flags = TcpFlags.Syn, Window = 65535, WindowScale = -1 }
            .Emit(tcp, IPv6Packet.PseudoHeader(GuestGlobal, to, IPv6Packet.NextHeaderTcp, 0), 0);
        using var h = new StackHarness();
        h.Send(Frame(GuestGlobal, to, IPv6Packet.NextHeaderTcp, tcp));
        var (_, icmp) = NdpTests.ExpectIcmp(h, out _);
        Assert.Equal(Icmpv6Packet.CodeAdministrativelyProhibited, icmp[1]);
        Assert.Equal(1, h.Counters.Drops(DropReason.IPv6MappedDestination));
        Assert.Equal(0, h.Stack.Tcp.ConnectionCount);
    }

    [Fact]
    public void Restrict_refuses_the_host_alias_administratively_prohibited()
    {
        using var h = new StackHarness(new NetworkConfig { Restrict = true, DnsUpstream = new[] { new IPEndPoint(IPAddress.Loopback, 9) } });
        h.Send(Udp(GuestGlobal, 40000, HostAlias, 9999, "x"u8));
        var (_, icmp) = NdpTests.ExpectIcmp(h, out _);
        Assert.Equal(Icmpv6Packet.CodeAdministrativelyProhibited, icmp[1]);
        Assert.Equal(1, h.Counters.Drops(DropReason.PolicyDenied));
        Assert.Equal(0, h.Stack.Udp.FlowCount);
    }

    [Fact]
    public void A_deny_rule_for_an_ipv6_range_refuses_administratively_prohibited()
    {
        using var server = LoopbackServer();
        var config = new NetworkConfig
        {
            DnsUpstream = new[] { new IPEndPoint(IPAddress.Loopback, 9) },
            OutboundRules = new[] { OutboundRule.Parse("fec0::/64", allow: false) },
        };
        using var h = new StackHarness(config);
        h.Send(Udp(GuestGlobal, 40000, HostAlias, Port(server), "x"u8));
        var (_, icmp) = NdpTests.ExpectIcmp(h, out _);
        Assert.Equal(Icmpv6Packet.CodeAdministrativelyProhibited, icmp[1]);
        Assert.Equal(1, h.Counters.Drops(DropReason.PolicyDenied));
        Assert.Equal(0, h.Stack.Udp.FlowCount);
        Assert.Equal(0, server.Available);
    }

    [Fact]
    public void No_host_loopback_closes_the_alias_and_other_prefix_addresses_lead_nowhere()
    {
        using var h = new StackHarness(new NetworkConfig { MapGatewayToLoopback = false, DnsUpstream = new[] { new IPEndPoint(IPAddress.Loopback, 9) } });
        h.Send(Udp(GuestGlobal, 40000, HostAlias, 9999, "x"u8));
        h.Send(Udp(GuestGlobal, 40000, IPv6Address.Parse("fec0::99"), 9999, "x"u8));
        h.Send(Udp(GuestGlobal, 40000, IPv6Address.Parse("ff02::1"), 9999, "x"u8));
        h.ExpectNone();
        Assert.Equal(2, h.Counters.Drops(DropReason.UdpNoRoute));
        Assert.Equal(0, h.Stack.Udp.FlowCount);
        Assert.Equal(0, h.Counters.Drops(DropReason.IPv6NotSupported));
    }

    [Fact]
    public void A_zero_checksum_is_refused_over_ipv6()
    {
        using var h = new StackHarness();
        var frame = Udp(GuestGlobal, 40000, HostAlias, 9999, "x"u8);
        frame[EthernetFrame.HeaderLength + IPv6Packet.HeaderLength + 6] = 0;
        frame[EthernetFrame.HeaderLength + IPv6Packet.HeaderLength + 7] = 0;
        h.Send(frame);
        h.ExpectNone();
        Assert.Equal(1, h.Counters.Drops(DropReason.UdpBadChecksum));
    }

    [Theory]
    [InlineData(7)]       // shorter than the header
    [InlineData(200)]     // longer than the packet
    public void A_lying_udp_length_over_ipv6_is_counted_not_thrown(int length)
    {
        using var h = new StackHarness();
        var frame = Udp(GuestGlobal, 40000, HostAlias, 9999, "payload"u8);
        int at = EthernetFrame.HeaderLength + IPv6Packet.HeaderLength + 4;
        frame[at] = (byte)(length >> 8);
        frame[at + 1] = (byte)length;
        h.Send(frame);
        h.Send(Frame(GuestGlobal, HostAlias, IPv6Packet.NextHeaderUdp, new byte[5]));   // not even a header
        h.ExpectNone();
        Assert.Equal(2, h.Counters.Drops(DropReason.UdpMalformed));
        Assert.Equal(0, h.Counters.Drops(DropReason.InternalFault));
        Assert.Equal(0, h.Stack.Udp.FlowCount);
    }

    [Fact]
    public void Ipv4_and_ipv6_flows_share_the_table_and_its_limit()
    {
        using var server = LoopbackServer();
        using var h = new StackHarness();
        for (int i = 0; i < FlowTable.MaxUdpFlows; i++)
            h.Send(GuestFrames.Udp(StackHarness.GuestIp, (ushort)(20000 + i), StackHarness.Gateway, 9, "x"u8));
        h.Send(Udp(GuestGlobal, 40000, HostAlias, Port(server), "x"u8));
        Assert.Equal(FlowTable.MaxUdpFlows, h.Stack.Udp.FlowCount);
        Assert.Equal(1, h.Counters.Drops(DropReason.UdpFlowTableFull));
    }

    [Fact]
    public void A_forward_from_ipv6_loopback_reaches_the_guest_ipv6_address_and_back()
    {
        using var h = new StackHarness();
        h.Start();
        var spec = Emunet.Engine.Forwarding.ForwardSpec.Parse("udp:[::1]:0:5353");
        int port = h.Invoke(() => h.Forwards.Add(spec).BoundPort);
        using var client = LoopbackServer();
        var target = new IPEndPoint(IPAddress.IPv6Loopback, port);

        // Before the guest has an IPv6 address there is nowhere to go: taken and counted.
        client.SendTo("early"u8, target);
        WaitFor(() => h.Invoke(() => h.Counters.Drops(DropReason.ForwardNoGuest)) == 1);

        // The guest's address is learned from its packets (an echo to the alias here).
        h.Send(EchoRequest(GuestGlobal, HostAlias, 1, 1, "x"u8));
        h.Expect();
        client.SendTo("query"u8, target);
        var udp = ExpectUdp(h);
        var ip = (PacketDotNet.IPv6Packet)udp.ParentPacket;
        Assert.Equal(HostAlias.ToIPAddress(), ip.SourceAddress);
        Assert.Equal(GuestGlobal.ToIPAddress(), ip.DestinationAddress);
        Assert.Equal(5353, udp.DestinationPort);
        Assert.Equal("query"u8.ToArray(), udp.PayloadData);

        // The guest answers from its port to the alias port it saw; the client hears it from the forward's address.
        h.Send(Udp(GuestGlobal, 5353, HostAlias, udp.SourcePort, "answer"u8));
        var (reply, from) = Receive(client);
        Assert.Equal("answer"u8.ToArray(), reply);
        Assert.Equal(target, from);

        var flows = h.Invoke(() => { var l = new List<ConnectionInfo>(); h.Stack.Flows.Snapshot(l); return l; });
        var flow = Assert.Single(flows);
        Assert.Equal(FlowDirection.Forwarded, flow.Direction);
        Assert.Equal(new IPEndPoint(IPAddress.IPv6Loopback, ((IPEndPoint)client.LocalEndPoint!).Port), flow.HostRemoteEndPoint);
        Assert.NotNull(h.Invoke(() => h.Forwards.Remove(Emunet.Engine.Forwarding.ForwardProtocol.Udp, IPAddress.IPv6Loopback, port, false)));
        Assert.Equal(0, h.Invoke(() => h.Stack.Udp.FlowCount));
    }

    [Fact]
    public void A_forward_on_an_ipv6_port_in_use_names_it_in_brackets()
    {
        using var taken = LoopbackServer();
        using var h = new StackHarness();
        var spec = Emunet.Engine.Forwarding.ForwardSpec.Parse($"udp:[::1]:{Port(taken)}:53");
        var e = Assert.Throws<InvalidOperationException>(() => h.Forwards.Add(spec));
        Assert.Contains($"udp [::1]:{Port(taken)}", e.Message);
        Assert.Contains("in use", e.Message);
    }

    private static void WaitFor(Func<bool> condition) => UdpTests.WaitFor(condition);
}
