using System.Net;
using System.Net.Sockets;
using Emunet.Engine.Diagnostics;
using Emunet.Engine.Forwarding;
using Emunet.Engine.Stack.Nat;
using Emunet.Engine.Tests.Stack;
using Emunet.Engine.Wire;

namespace Emunet.Engine.Tests.Forwarding;

/// <summary>One forward model for TCP and UDP: the same duplicate rule, target rule, errors and counts.</summary>
public sealed class ForwardTableTests
{
    [Theory]
    [InlineData(ForwardProtocol.Tcp)]
    [InlineData(ForwardProtocol.Udp)]
    public void A_duplicate_forward_is_the_same_conflict_for_both_protocols(ForwardProtocol protocol)
    {
        using var h = new StackHarness();
        var first = h.Forwards.Add(ForwardSpec.Create(protocol, 0, 7000));
        var e = Assert.Throws<InvalidOperationException>(() => h.Forwards.Add(ForwardSpec.Create(protocol, first.BoundPort, 7001)));
        Assert.Contains("already forwards", e.Message);
        Assert.Contains($"127.0.0.1:{first.BoundPort}", e.Message);
        Assert.Equal(1, h.Forwards.Count);
    }

    [Fact]
    public void Tcp_and_udp_on_the_same_port_number_are_different_forwards()
    {
        using var h = new StackHarness();
        var tcp = h.Forwards.Add(ForwardSpec.Create(ForwardProtocol.Tcp, 0, 7000));
        var udp = h.Forwards.Add(ForwardSpec.Create(ForwardProtocol.Udp, tcp.BoundPort, 7000));
        Assert.Equal(tcp.BoundPort, udp.BoundPort);
        Assert.Equal(2, h.Forwards.List().Count);
        Assert.NotNull(h.Forwards.Remove(ForwardProtocol.Udp, IPAddress.Loopback, udp.BoundPort, resetConnections: false));
        Assert.Equal(ForwardProtocol.Tcp, Assert.Single(h.Forwards.List()).Spec.Protocol);
    }

    [Fact]
    public void Both_protocols_deliver_to_the_address_the_guest_announced_and_count_alike()
    {
        using var h = new StackHarness();
        h.Start();
        var other = new IPv4Address(10, 0, 2, 20);
        h.Send(GuestFrames.Arp(ArpPacket.OperationRequest, other, StackHarness.Gateway));
        h.Expect();
        var tcp = h.Invoke(() => h.Forwards.Add(ForwardSpec.Create(ForwardProtocol.Tcp, 0, 8000)));
        var udp = h.Invoke(() => h.Forwards.Add(ForwardSpec.Create(ForwardProtocol.Udp, 0, 9000)));

        using var client = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
        client.Connect(new IPEndPoint(IPAddress.Loopback, tcp.BoundPort));
        var syn = Oracle.Tcp(h.Expect());
        Assert.True(syn.Synchronize);
        Assert.Equal("10.0.2.20", ((PacketDotNet.IPv4Packet)syn.ParentPacket).DestinationAddress.ToString());
        Assert.Equal(8000, syn.DestinationPort);

        using var sender = new Socket(AddressFamily.InterNetwork, SocketType.Dgram, ProtocolType.Udp);
        sender.SendTo("x"u8, new IPEndPoint(IPAddress.Loopback, udp.BoundPort));
        var datagram = Oracle.Udp(h.Expect());
        Assert.Equal("10.0.2.20", ((PacketDotNet.IPv4Packet)datagram.ParentPacket).DestinationAddress.ToString());

        var list = h.Invoke(() => h.Forwards.List());
        Assert.All(list, f => Assert.Equal((1, 1L), (f.ActiveConnections, f.TotalConnections)));
        var flows = h.Invoke(() => { var l = new List<ConnectionInfo>(); h.Stack.Flows.Snapshot(l); return l; });
        Assert.Equal(2, flows.Count);
        Assert.All(flows, f => Assert.Equal(FlowDirection.Forwarded, f.Direction));
        Assert.Equal(list.Select(f => f.Spec.ToString()).Order(), flows.Select(f => f.Forward!).Order());

        // Removing the UDP forward ends its client flows; the TCP forward's connection stays until reset.
        h.Invoke(() => h.Forwards.Remove(ForwardProtocol.Udp, IPAddress.Loopback, udp.BoundPort, resetConnections: false));
        Assert.Equal(0, h.Invoke(() => h.Stack.Flows.CountOf(FlowProtocol.Udp)));
        Assert.Equal(1, h.Invoke(() => h.Stack.Flows.CountOf(FlowProtocol.Tcp)));
        h.Invoke(() => h.Forwards.Remove(ForwardProtocol.Tcp, IPAddress.Loopback, tcp.BoundPort, resetConnections: true));
        Assert.Equal(0, h.Invoke(() => h.Stack.Flows.Count));
        Assert.Equal(0, h.Counters.Drops(DropReason.TcpFlowTableFull));
    }

#if DEBUG
    [Fact]
    public void Owner_only_state_refuses_other_threads_once_the_loop_runs()
    {
        using var h = new StackHarness();
        h.Start();
        var e = Assert.Throws<InvalidOperationException>(() => h.Forwards.List());
        Assert.Contains("owner thread", e.Message);
        Assert.Empty(h.Invoke(() => h.Forwards.List()));
    }
#endif
}
