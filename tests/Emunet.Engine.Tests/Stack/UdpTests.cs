using Emunet.Engine.Diagnostics;
using System.Net;
using System.Net.Sockets;
using Emunet.Engine.Forwarding;
using Emunet.Engine.Stack;
using Emunet.Engine.Stack.Nat;
using Emunet.Engine.Wire;

namespace Emunet.Engine.Tests.Stack;

public class UdpTests
{
    private static Socket HostSocket()
    {
        var s = new Socket(AddressFamily.InterNetwork, SocketType.Dgram, ProtocolType.Udp) { ReceiveTimeout = 5000 };
        s.Bind(new IPEndPoint(IPAddress.Loopback, 0));
        return s;
    }

    private static int Port(Socket s) => ((IPEndPoint)s.LocalEndPoint!).Port;

    internal static (byte[] Payload, EndPoint From) Receive(Socket s)
    {
        var buffer = new byte[70000];
        EndPoint from = new IPEndPoint(s.AddressFamily == AddressFamily.InterNetworkV6 ? IPAddress.IPv6Any : IPAddress.Any, 0);
        int n = s.ReceiveFrom(buffer, ref from);
        return (buffer.AsSpan(0, n).ToArray(), from);
    }

    internal static void WaitFor(Func<bool> condition)
    {
        var deadline = DateTime.UtcNow + StackHarness.Timeout;
        while (!condition())
        {
            if (DateTime.UtcNow > deadline) throw new TimeoutException("Condition not met in time.");
            Thread.Sleep(5);
        }
    }

    [Fact]
    public void Round_trip_through_the_gateway_alias_of_host_loopback()
    {
        using var server = HostSocket();
        using var h = new StackHarness();
        h.Start();
        h.Send(GuestFrames.Udp(StackHarness.GuestIp, 40000, StackHarness.Gateway, (ushort)Port(server), "ping"u8));

        var (payload, from) = Receive(server);
        Assert.Equal("ping"u8.ToArray(), payload);
        Assert.Equal(IPAddress.Loopback, ((IPEndPoint)from).Address);
        server.SendTo("pong"u8, from);

        var udp = Oracle.Udp(h.Expect());
        var ip = (PacketDotNet.IPv4Packet)udp.ParentPacket;
        Assert.Equal("10.0.2.2", ip.SourceAddress.ToString());
        Assert.Equal("10.0.2.15", ip.DestinationAddress.ToString());
        Assert.Equal(Port(server), udp.SourcePort);
        Assert.Equal(40000, udp.DestinationPort);
        Assert.Equal("pong"u8.ToArray(), udp.PayloadData);

        // The same guest endpoint and destination reuse the flow.
        h.Send(GuestFrames.Udp(StackHarness.GuestIp, 40000, StackHarness.Gateway, (ushort)Port(server), "again"u8));
        var (second, from2) = Receive(server);
        Assert.Equal("again"u8.ToArray(), second);
        Assert.Equal(from, from2);

        var flows = h.Invoke(() => { var l = new List<ConnectionInfo>(); h.Stack.Flows.Snapshot(l); return l; });
        var flow = Assert.Single(flows);
        Assert.Equal(FlowProtocol.Udp, flow.Protocol);
        Assert.Equal(FlowDirection.Outbound, flow.Direction);
        Assert.Equal(new IPEndPoint(IPAddress.Parse("10.0.2.2"), Port(server)), flow.GuestPeerEndPoint);
        Assert.Equal(new IPEndPoint(IPAddress.Loopback, Port(server)), flow.HostRemoteEndPoint);
        Assert.Equal(9, flow.BytesFromGuest);
        Assert.Equal(4, flow.BytesToGuest);

        // Idle flows expire.
        Assert.Equal(0, h.Invoke(() => { h.Stack.Flows.OnTimer(h.Loop.NowMs + Udp.IdleTimeoutMs + 1); return h.Stack.Udp.FlowCount; }));
        Assert.Equal(0, h.Counters.TotalDrops);
    }

    [Fact]
    public void Dns_queries_are_relayed_and_answers_come_from_the_dns_address()
    {
        using var upstream = HostSocket();
        var config = new NetworkConfig { DnsUpstream = new[] { new IPEndPoint(IPAddress.Loopback, Port(upstream)) } };
        using var h = new StackHarness(config);
        h.Start();
        byte[] query = { 0xbe, 0xef, 0x01, 0x00, 0x00, 0x01, 0, 0, 0, 0, 0, 0, 0x01, 0x61, 0x00, 0x00, 0x01, 0x00, 0x01 };
        h.Send(GuestFrames.Udp(StackHarness.GuestIp, 33333, StackHarness.Dns, 53, query.AsSpan(0, 5)));   // not DNS
        h.Send(GuestFrames.Udp(StackHarness.GuestIp, 33333, StackHarness.Dns, 53, query));

        var (received, from) = Receive(upstream);
        Assert.Equal(query[2..], received[2..]);   // the short one never left; the relay gives the query its own ID
        var answer = (byte[])received.Clone();
        answer[2] = 0x81; answer[3] = 0x80;
        upstream.SendTo(answer, from);
        answer[0] = query[0]; answer[1] = query[1]; // the guest gets its own ID back

        var udp = Oracle.Udp(h.Expect());
        Assert.Equal("10.0.2.3", ((PacketDotNet.IPv4Packet)udp.ParentPacket).SourceAddress.ToString());
        Assert.Equal(53, udp.SourcePort);
        Assert.Equal(33333, udp.DestinationPort);
        Assert.Equal(answer, udp.PayloadData);
        Assert.Equal(1, h.Counters.Drops(DropReason.DnsMalformed));

        // The relay keeps nothing once answered, and DNS is not a UDP flow.
        Assert.Equal(0, h.Invoke(() => h.Stack.Dns.PendingCount));
        Assert.Equal(0, h.Invoke(() => h.Stack.Udp.FlowCount));
    }

    [Fact]
    public void A_closed_host_port_becomes_icmp_port_unreachable()
    {
        int closedPort;
        using (var s = HostSocket()) closedPort = Port(s);
        using var h = new StackHarness();
        h.Start();
        h.Send(GuestFrames.Udp(StackHarness.GuestIp, 41000, StackHarness.Gateway, (ushort)closedPort, "anyone?"u8));

        var frame = h.Expect();
        var icmp = Oracle.Icmp(frame);
        Assert.Equal(PacketDotNet.IcmpV4TypeCode.UnreachablePort, icmp.TypeCode);
        Assert.Equal("10.0.2.2", ((PacketDotNet.IPv4Packet)icmp.ParentPacket).SourceAddress.ToString());
        var quoted = frame.AsSpan(EthernetFrame.HeaderLength + 28);
        Assert.Equal(IPv4Packet.ParseError.None, IPv4Packet.TryParse(quoted, out var original));
        Assert.Equal(StackHarness.GuestIp, original.Source);
        Assert.Equal(StackHarness.Gateway, original.Destination);
        Assert.True(UdpDatagram.TryParse(original.Payload, out var quotedUdp));
        Assert.Equal(41000, quotedUdp.SourcePort);
        Assert.Equal(closedPort, quotedUdp.DestinationPort);
    }

    [Fact]
    public void Datagrams_larger_than_the_guest_mtu_are_counted_not_cut()
    {
        using var server = HostSocket();
        var config = new NetworkConfig { Mtu = 1500, DnsUpstream = new[] { new IPEndPoint(IPAddress.Loopback, 9) } };
        using var h = new StackHarness(config);
        h.Start();
        h.Send(GuestFrames.Udp(StackHarness.GuestIp, 42000, StackHarness.Gateway, (ushort)Port(server), "hi"u8));
        var (_, from) = Receive(server);
        server.SendTo(new byte[1500 - 28 + 1], from);
        server.SendTo(new byte[1500 - 28], from);

        var udp = Oracle.Udp(h.Expect());
        Assert.Equal(1500 - 28, udp.PayloadData.Length);
        Assert.Equal(1, h.Counters.Drops(DropReason.UdpDatagramTooLarge));
    }

    [Fact]
    public void A_full_device_drains_and_counts()
    {
        using var server = HostSocket();
        using var h = new StackHarness();
        h.Start();
        h.Send(GuestFrames.Udp(StackHarness.GuestIp, 43000, StackHarness.Gateway, (ushort)Port(server), "hi"u8));
        var (_, from) = Receive(server);
        h.Invoke(() => h.Device.Full = true);
        server.SendTo("lost"u8, from);
        WaitFor(() => h.Invoke(() => h.Counters.Drops(DropReason.TransmitQueueFull)) == 1);
        h.Invoke(() => h.Device.Full = false);
        server.SendTo("kept"u8, from);
        Assert.Equal("kept"u8.ToArray(), Oracle.Udp(h.Expect()).PayloadData);
    }

    [Fact]
    public void Unreachable_destinations_are_counted()
    {
        using var h = new StackHarness();
        h.Send(GuestFrames.Udp(StackHarness.GuestIp, 1, new IPv4Address(10, 0, 2, 50), 9, "x"u8));    // a subnet address
        h.Send(GuestFrames.Udp(StackHarness.GuestIp, 1, StackHarness.Dns, 54, "x"u8));                  // DNS address, not port 53
        h.Send(GuestFrames.Udp(StackHarness.GuestIp, 1, new IPv4Address(10, 0, 2, 255), 9, "x"u8));   // subnet broadcast
        h.ExpectNone();
        Assert.Equal(2, h.Counters.Drops(DropReason.UdpNoRoute));
        Assert.Equal(1, h.Counters.Drops(DropReason.NotForUs));
        Assert.Equal(0, h.Stack.Udp.FlowCount);
    }

    [Fact]
    public void The_flow_table_is_bounded()
    {
        using var server = HostSocket();
        using var h = new StackHarness();
        for (int i = 0; i <= FlowTable.MaxUdpFlows; i++)
            h.Send(GuestFrames.Udp(StackHarness.GuestIp, (ushort)(20000 + i), StackHarness.Gateway, (ushort)Port(server), "x"u8));
        Assert.Equal(FlowTable.MaxUdpFlows, h.Stack.Udp.FlowCount);
        Assert.Equal(1, h.Counters.Drops(DropReason.UdpFlowTableFull));
        // Expiry makes room.
        h.Stack.Flows.OnTimer(h.Loop.NowMs + Udp.IdleTimeoutMs + 1);
        h.Send(GuestFrames.Udp(StackHarness.GuestIp, 19999, StackHarness.Gateway, (ushort)Port(server), "x"u8));
        Assert.Equal(1, h.Stack.Udp.FlowCount);
    }

    [Fact]
    public void Bad_udp_is_counted()
    {
        using var h = new StackHarness();
        var frame = GuestFrames.Udp(StackHarness.GuestIp, 1, StackHarness.Gateway, 9, "payload"u8);
        frame[^1] ^= 0x55;
        h.Send(frame);
        h.Send(GuestFrames.IPv4(StackHarness.GuestIp, StackHarness.Gateway, IPv4Packet.ProtocolUdp, new byte[5]));
        Assert.Equal(1, h.Counters.Drops(DropReason.UdpBadChecksum));
        Assert.Equal(1, h.Counters.Drops(DropReason.UdpMalformed));
        Assert.Equal(0, h.Stack.Udp.FlowCount);
    }

    [Fact]
    public void Forward_carries_each_host_client_to_the_guest_and_back()
    {
        using var h = new StackHarness();
        h.Start();
        h.Send(GuestFrames.Arp(ArpPacket.OperationRequest, StackHarness.GuestIp, StackHarness.Gateway));
        h.Expect();
        var spec = ForwardSpec.Create(ForwardProtocol.Udp, 0, 5353);
        int port = h.Invoke(() => h.Forwards.Add(spec).BoundPort);
        Assert.NotEqual(0, port);

        using var client1 = HostSocket();
        using var client2 = HostSocket();
        var target = new IPEndPoint(IPAddress.Loopback, port);
        client1.SendTo("one"u8, target);
        var first = Oracle.Udp(h.Expect());
        client2.SendTo("two"u8, target);
        var second = Oracle.Udp(h.Expect());

        Assert.Equal(5353, first.DestinationPort);
        Assert.Equal("10.0.2.2", ((PacketDotNet.IPv4Packet)first.ParentPacket).SourceAddress.ToString());
        Assert.Equal("10.0.2.15", ((PacketDotNet.IPv4Packet)first.ParentPacket).DestinationAddress.ToString());
        Assert.Equal("one"u8.ToArray(), first.PayloadData);
        Assert.Equal("two"u8.ToArray(), second.PayloadData);
        Assert.NotEqual(first.SourcePort, second.SourcePort);

        // The guest answers each client through the port it saw.
        h.Send(GuestFrames.Udp(StackHarness.GuestIp, 5353, StackHarness.Gateway, second.SourcePort, "to two"u8));
        h.Send(GuestFrames.Udp(StackHarness.GuestIp, 5353, StackHarness.Gateway, first.SourcePort, "to one"u8));
        var (r1, from1) = Receive(client1);
        var (r2, _) = Receive(client2);
        Assert.Equal("to one"u8.ToArray(), r1);
        Assert.Equal("to two"u8.ToArray(), r2);
        Assert.Equal(target, from1);

        var flows = h.Invoke(() => { var l = new List<ConnectionInfo>(); h.Stack.Flows.Snapshot(l); return l; });
        Assert.Equal(2, flows.Count(f => f.Direction == FlowDirection.Forwarded));

        // Idle client mappings expire; the forward stays.
        Assert.Equal(0, h.Invoke(() => { h.Stack.Flows.OnTimer(h.Loop.NowMs + Udp.IdleTimeoutMs + 1); return h.Stack.Udp.FlowCount; }));
        client1.SendTo("back"u8, target);
        Assert.Equal("back"u8.ToArray(), Oracle.Udp(h.Expect()).PayloadData);

        // Asked for port 0, the forward is known (and removed) by the port it got.
        Assert.Null(h.Invoke(() => h.Forwards.Remove(ForwardProtocol.Udp, spec.HostAddress, spec.HostPort, false)));
        Assert.NotNull(h.Invoke(() => h.Forwards.Remove(ForwardProtocol.Udp, spec.HostAddress, port, false)));
        Assert.Null(h.Invoke(() => h.Forwards.Remove(ForwardProtocol.Udp, spec.HostAddress, port, false)));
        Assert.Equal(0, h.Invoke(() => h.Stack.Udp.FlowCount));
        Assert.Equal(0, h.Invoke(() => h.Forwards.Count));
    }

    [Fact]
    public void Forwards_reach_the_address_the_guest_announced()
    {
        using var h = new StackHarness();
        h.Start();
        var other = new IPv4Address(10, 0, 2, 20);
        h.Send(GuestFrames.Arp(ArpPacket.OperationRequest, other, StackHarness.Gateway));
        h.Expect();
        int port = h.Invoke(() => h.Forwards.Add(ForwardSpec.Create(ForwardProtocol.Udp, 0, 7000)).BoundPort);
        using var client = HostSocket();
        client.SendTo("hello"u8, new IPEndPoint(IPAddress.Loopback, port));
        var udp = Oracle.Udp(h.Expect());
        Assert.Equal("10.0.2.20", ((PacketDotNet.IPv4Packet)udp.ParentPacket).DestinationAddress.ToString());
        Assert.Equal(7000, udp.DestinationPort);
    }

    [Fact]
    public void A_forward_on_a_port_in_use_names_the_port()
    {
        using var taken = HostSocket();
        using var h = new StackHarness();
        var spec = ForwardSpec.Create(ForwardProtocol.Udp, Port(taken), 53);
        var e = Assert.Throws<InvalidOperationException>(() => h.Forwards.Add(spec).BoundPort);
        Assert.Contains($"udp 127.0.0.1:{Port(taken)}", e.Message);
        Assert.Contains("in use", e.Message);
        Assert.Contains($"process {Environment.ProcessId} (", e.Message); // the holder is named, as for TCP
        Assert.Equal(0, h.Forwards.Count);
    }

    /// <summary>
    /// One loop turn of guest datagrams and a burst of host replies, after a warm-up, allocate nothing on the owner
    /// thread (STYLE: no allocation per packet), for an IPv4 flow through 10.0.2.2 and an IPv6 one through fec0::2.
    /// </summary>
    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public void The_data_path_allocates_nothing_per_datagram(bool ipv6)
    {
        const int Datagrams = 100;
        using var server = ipv6
            ? new Socket(AddressFamily.InterNetworkV6, SocketType.Dgram, ProtocolType.Udp) { ReceiveTimeout = 5000 }
            : HostSocket();
        if (ipv6) server.Bind(new IPEndPoint(IPAddress.IPv6Loopback, 0));
        ushort port = (ushort)Port(server);
        using var h = new StackHarness();
        h.Start();
        var payload = new byte[512];
        var frame = ipv6
            ? IPv6.UdpIPv6Tests.Udp(IPv6.GuestFrames6.GuestGlobal, 40000, IPv6.GuestFrames6.HostAlias, port, payload)
            : GuestFrames.Udp(StackHarness.GuestIp, 40000, StackHarness.Gateway, port, payload);
        h.Send(frame);
        var (_, from) = Receive(server);
        server.SendTo(payload, from);
        h.Expect();

        long LoopAllocated() => h.Invoke(() => GC.GetAllocatedBytesForCurrentThread());

        // Guest -> host: the datagrams of one loop turn.
        long guestToHost = h.Invoke(() =>
        {
            long before = GC.GetAllocatedBytesForCurrentThread();
            for (int i = 0; i < Datagrams; i++) h.Stack.OnFrame(frame);
            return GC.GetAllocatedBytesForCurrentThread() - before;
        });
        for (int i = 0; i < Datagrams; i++) Assert.Equal(payload.Length, Receive(server).Payload.Length);

        // Host -> guest: replies the loop takes from the flow's socket into lent frames, as they come.
        h.Invoke(() => h.Device.Discard = true);
        int committed = h.Invoke(() => h.Device.Committed);
        long start = LoopAllocated();
        for (int i = 0; i < Datagrams; i++) server.SendTo(payload, from);
        WaitFor(() => Volatile.Read(ref h.Device.Committed) >= committed + Datagrams);
        long hostToGuest = LoopAllocated() - start;

        Assert.Equal((0L, 0L), (guestToHost, hostToGuest));
        Assert.Equal(0, h.Counters.TotalDrops);
    }
}
