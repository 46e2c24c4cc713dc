using System.Net;
using System.Net.Sockets;
using Emunet.Engine.Diagnostics;
using Emunet.Engine.Forwarding;
using Emunet.Engine.Runtime;
using Emunet.Engine.Stack.Nat;
using Emunet.Engine.Tests.Stack;
using Emunet.Engine.Tests.Tcp;
using Emunet.Engine.Wire;

namespace Emunet.Engine.Tests.Runtime;

/// <summary>
/// The descriptors kept free at the top of the open-file limit: its arithmetic, the probe listeners look with, the flow
/// table sized below it, and every place that obtains a descriptor for a flow or a forward refusing one in it. A limit
/// of 4 keeps 1 free, so every descriptor from 3 up is in the headroom: whatever the test process holds, any socket
/// made is "at the headroom".
/// </summary>
public sealed class DescriptorHeadroomTests
{
    private static readonly DescriptorHeadroom Everything = DescriptorHeadroom.ForLimit(4);

    [Theory]
    [InlineData(1_048_576, 64)]
    [InlineData(1024, 64)]
    [InlineData(256, 64)]
    [InlineData(255, 63)]
    [InlineData(128, 32)]
    [InlineData(4, 1)]
    public void The_headroom_is_64_or_a_quarter_of_a_limit_below_256(long limit, int size)
    {
        var h = DescriptorHeadroom.ForLimit(limit);
        Assert.Equal(size, h.Size);
        Assert.Equal(limit - size, h.Threshold);
        Assert.False(h.IsAtHeadroom(limit - size - 1));
        Assert.True(h.IsAtHeadroom(limit - size));
        Assert.True(h.IsAtHeadroom(limit - 1));
        Assert.Contains($"open-file limit is {limit}", h.Advice);
        Assert.Contains("ulimit -n", h.Advice);
    }

    [Fact]
    public void Without_a_limit_nothing_is_at_the_headroom()
    {
        var h = DescriptorHeadroom.Unlimited;
        Assert.False(h.IsLimited);
        Assert.False(h.IsAtHeadroom(int.MaxValue));
        using var s = new Socket(AddressFamily.InterNetwork, SocketType.Dgram, ProtocolType.Udp);
        Assert.False(h.IsAtHeadroom(s));
        Assert.False(h.NextIsAtHeadroom((int)s.Handle));
        Assert.Same(DescriptorHeadroom.Unlimited, DescriptorHeadroom.ForLimit(long.MaxValue));
    }

    [Fact]
    public void The_probe_sees_the_number_the_next_descriptor_would_get_and_leaves_nothing_open()
    {
        using var s = new Socket(AddressFamily.InterNetwork, SocketType.Dgram, ProtocolType.Udp);
        int fd = (int)s.Handle;
        Assert.True(Everything.NextIsAtHeadroom(fd));
        Assert.False(DescriptorHeadroom.ForLimit(1L << 30).NextIsAtHeadroom(fd));
        Assert.False(Everything.WithoutProbe().NextIsAtHeadroom(fd));
        int before = Directory.GetFiles("/proc/self/fd").Length;
        for (int i = 0; i < 100; i++) Everything.NextIsAtHeadroom(fd);
        Assert.True(Directory.GetFiles("/proc/self/fd").Length < before + 50, "the probe leaks descriptors");
    }

    [Fact]
    public void Listeners_probe_only_once_their_last_descriptor_reached_half_the_threshold()
    {
        var h = DescriptorHeadroom.ForLimit(1_048_576); // threshold 1,048,512
        Assert.True(h.MustProbe(-1)); // nothing accepted yet
        Assert.False(h.MustProbe(100)); // far below: the next lowest free descriptor cannot be in the headroom yet
        Assert.False(h.MustProbe(524_255));
        Assert.True(h.MustProbe(524_256));
        Assert.True(h.MustProbe(1_048_600));
        Assert.True(DescriptorHeadroom.ForLimit(256).MustProbe(96)); // threshold 192
        Assert.False(DescriptorHeadroom.ForLimit(256).MustProbe(95));
        Assert.False(DescriptorHeadroom.Unlimited.MustProbe(-1));
        Assert.False(h.WithoutProbe().MustProbe(1_048_600));
    }

    [Fact]
    public void The_flow_table_is_sized_to_the_limit_less_the_headroom()
    {
        using var loop = new EventLoop();
        var table = new FlowTable(loop, new Counters());
        Assert.True(table.FitTo(DescriptorHeadroom.ForLimit(256))); // 192 below the headroom
        Assert.Equal((144, 24, 12), (table.LimitOf(FlowProtocol.Tcp), table.LimitOf(FlowProtocol.Udp), table.LimitOf(FlowProtocol.Icmp)));
        Assert.True(table.FitTo(DescriptorHeadroom.ForLimit(128))); // 96 below a headroom of 32
        Assert.Equal((72, 12, 6), (table.LimitOf(FlowProtocol.Tcp), table.LimitOf(FlowProtocol.Udp), table.LimitOf(FlowProtocol.Icmp)));

        var large = new FlowTable(loop, new Counters());
        Assert.False(large.FitTo(DescriptorHeadroom.ForLimit(1 << 20)));
        Assert.False(large.FitTo(DescriptorHeadroom.Unlimited));
        Assert.Equal(FlowTable.MaxTcpFlows, large.LimitOf(FlowProtocol.Tcp));
    }

    [Fact]
    public void Refused_flows_are_counted_each_and_logged_once_per_episode()
    {
        using var loop = new EventLoop();
        var counters = new Counters();
        var log = new RecordingLogger();
        var table = new FlowTable(loop, counters, logger: log);
        using var socket = new Socket(AddressFamily.InterNetwork, SocketType.Dgram, ProtocolType.Udp);
        loop.Headroom = Everything;
        for (int i = 0; i < 3; i++) Assert.True(table.AtHeadroom(socket));
        table.OutOfDescriptors(); // a socket that could not be made at all (EMFILE) is the same episode
        Assert.Equal(4, counters.Drops(DropReason.FlowOutOfDescriptors));
        Assert.Equal(1, log.Count("New guest flows are refused"));
        Assert.Equal(1, log.Count("open-file limit is 4"));

        loop.Headroom = DescriptorHeadroom.Unlimited;
        Assert.False(table.AtHeadroom(socket));
        Assert.Equal(1, log.Count("after 4 were refused"));
        loop.Headroom = Everything;
        Assert.True(table.AtHeadroom(socket)); // a new episode
        Assert.Equal(2, log.Count("New guest flows are refused"));
    }

    [Fact]
    public void A_guest_syn_whose_host_socket_lands_in_the_headroom_is_reset_and_counted()
    {
        using var server = new TcpListener(IPAddress.Loopback, 0);
        server.Start();
        int port = ((IPEndPoint)server.LocalEndpoint).Port;
        using var h = new TcpHarness();
        h.Invoke(_ => h.Loop.Headroom = Everything);
        ushort guestPort = TcpHarness.NextGuestPort();
        h.FromGuest(guestPort, TcpHarness.Gateway, (ushort)port, 999, 0, TcpFlags.Syn, 65535, mss: 1460);
        var rst = h.Next();
        Assert.True(rst.Has(TcpFlags.Rst), $"expected a reset, got {rst}");
        Assert.Equal(guestPort, rst.DestinationPort);
        Assert.Equal(1, h.Invoke(_ => h.Counters.Drops(DropReason.FlowOutOfDescriptors)));
        Assert.Equal(0, h.Invoke(_ => h.Flows.Count));
        Assert.Equal(0, h.Invoke(_ => h.Counters.Drops(DropReason.TcpUnreachable)));

        // Below the headroom again, the same SYN connects.
        h.Invoke(_ => h.Loop.Headroom = DescriptorHeadroom.Unlimited);
        h.Connect(port);
        Assert.Equal(1, h.Invoke(_ => h.Counters.Drops(DropReason.FlowOutOfDescriptors)));
    }

    [Fact]
    public void A_guest_udp_flow_whose_host_socket_lands_in_the_headroom_is_dropped_and_counted()
    {
        using var server = new Socket(AddressFamily.InterNetwork, SocketType.Dgram, ProtocolType.Udp) { ReceiveTimeout = 5000 };
        server.Bind(new IPEndPoint(IPAddress.Loopback, 0));
        ushort port = (ushort)((IPEndPoint)server.LocalEndPoint!).Port;
        using var h = new StackHarness();
        h.Start();
        h.Invoke(() => h.Loop.Headroom = Everything);
        h.Send(GuestFrames.Udp(StackHarness.GuestIp, 40000, StackHarness.Gateway, port, "lost"u8));
        Assert.Equal(1, h.Invoke(() => h.Counters.Drops(DropReason.FlowOutOfDescriptors)));
        Assert.Equal(0, h.Invoke(() => h.Stack.Flows.CountOf(FlowProtocol.Udp)));
        Assert.Equal(0, h.Invoke(() => h.Counters.Drops(DropReason.UdpSendFailed)));
        h.ExpectNone();

        h.Invoke(() => h.Loop.Headroom = DescriptorHeadroom.Unlimited);
        h.Send(GuestFrames.Udp(StackHarness.GuestIp, 40000, StackHarness.Gateway, port, "kept"u8));
        var buffer = new byte[16];
        Assert.Equal("kept", System.Text.Encoding.ASCII.GetString(buffer, 0, server.Receive(buffer)));
    }

    [Fact]
    public void A_guest_ping_whose_host_socket_lands_in_the_headroom_is_dropped_and_counted()
    {
        using var responder = new Socket(AddressFamily.InterNetwork, SocketType.Dgram, ProtocolType.Udp);
        responder.Bind(new IPEndPoint(IPAddress.Loopback, 0));
        using var h = new StackHarness();
        int made = 0;
        h.Stack.Icmp.PingSocketFactory = _ =>
        {
            made++;
            var s = new Socket(AddressFamily.InterNetwork, SocketType.Dgram, ProtocolType.Udp);
            s.Connect(responder.LocalEndPoint!);
            s.Blocking = false;
            return s;
        };
        h.Start();
        h.Invoke(() => h.Loop.Headroom = Everything);
        h.Send(GuestFrames.Echo(new IPv4Address(192, 0, 2, 1), 0x4444, 1, "x"u8));
        h.Send(GuestFrames.Echo(new IPv4Address(192, 0, 2, 1), 0x4444, 2, "x"u8));
        Assert.Equal(2, h.Invoke(() => h.Counters.Drops(DropReason.FlowOutOfDescriptors)));
        Assert.Equal(2, made); // closed and tried again: not remembered as a refusal by the host
        Assert.Equal(0, h.Invoke(() => h.Stack.Icmp.FlowCount));
        Assert.Equal(0, h.Invoke(() => h.Counters.Drops(DropReason.IcmpPingRefused)));
        h.ExpectNone(); // dropped, not answered with an unreachable
    }

    [Theory]
    [InlineData(ForwardProtocol.Tcp)]
    [InlineData(ForwardProtocol.Udp)]
    public void A_forward_bound_at_the_headroom_is_refused_naming_the_limit_and_the_fix(ForwardProtocol protocol)
    {
        using var h = new StackHarness();
        h.Loop.Headroom = Everything;
        var e = Assert.Throws<InvalidOperationException>(() => h.Forwards.Add(ForwardSpec.Create(protocol, 0, 7000)));
        Assert.Contains("open-file limit is 4", e.Message);
        Assert.Contains("ulimit -n", e.Message);
        Assert.Equal(0, h.Forwards.Count);
        h.Loop.Headroom = DescriptorHeadroom.Unlimited;
        h.Forwards.Add(ForwardSpec.Create(protocol, 0, 7000));
    }

    private static void WaitFor(StackHarness h, Func<bool> condition, string what)
    {
        var deadline = DateTime.UtcNow + StackHarness.Timeout;
        while (!h.Invoke(condition))
        {
            if (DateTime.UtcNow > deadline) Assert.Fail($"not within {StackHarness.Timeout.TotalSeconds} s: {what}");
            Thread.Sleep(5);
        }
    }

    [Fact]
    public void A_forward_client_waits_in_the_backlog_while_the_next_descriptor_would_be_in_the_headroom()
    {
        using var h = new StackHarness();
        h.Start();
        h.Send(GuestFrames.Arp(ArpPacket.OperationRequest, StackHarness.GuestIp, StackHarness.Gateway)); // the guest is known
        h.Expect();
        var forward = h.Invoke(() => h.Forwards.Add(ForwardSpec.Create(ForwardProtocol.Tcp, 0, 8000)));
        h.Invoke(() => h.Loop.Headroom = Everything);
        using var client = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
        client.Connect(new IPEndPoint(IPAddress.Loopback, forward.BoundPort));
        WaitFor(h, () => h.Counters.Drops(DropReason.AcceptOutOfDescriptors) >= 1
            && h.Forwards.Find(ForwardProtocol.Tcp, IPAddress.Loopback, forward.BoundPort)!.PausesThisEpisode != 0, "the forward held the client back and paused");
        h.ExpectNone();
        long refusals = h.Invoke(() => h.Counters.Drops(DropReason.AcceptOutOfDescriptors));
        Assert.True(refusals < 20, $"{refusals} refusals at once: the forward did not back off");

        h.Invoke(() => h.Loop.Headroom = DescriptorHeadroom.Unlimited);
        var syn = Oracle.Tcp(h.Expect()); // the waiting client's connection goes on into the guest
        Assert.True(syn.Synchronize);
        Assert.Equal(8000, syn.DestinationPort);
    }

    [Fact]
    public void A_forward_held_back_logs_once_per_episode_while_its_back_off_grows()
    {
        using var h = new StackHarness();
        var log = new RecordingLogger();
        var forwards = new ForwardTable(h.Loop, h.Stack, h.Counters, log);
        h.Start();
        h.Send(GuestFrames.Arp(ArpPacket.OperationRequest, StackHarness.GuestIp, StackHarness.Gateway));
        h.Expect();
        var forward = h.Invoke(() => forwards.Add(ForwardSpec.Create(ForwardProtocol.Tcp, 0, 8000)));
        h.Invoke(() => h.Loop.Headroom = Everything);
        using var client = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
        client.Connect(new IPEndPoint(IPAddress.Loopback, forward.BoundPort));
        var started = DateTime.UtcNow;
        // Three pauses: 50 + 100 ms between them at least; a forward that did not back off would pause at once again.
        WaitFor(h, () => forwards.Find(ForwardProtocol.Tcp, IPAddress.Loopback, forward.BoundPort)!.PausesThisEpisode >= 3, "three pauses");
        Assert.True(DateTime.UtcNow - started >= TimeSpan.FromMilliseconds(140), "three pauses without a back-off");
        Assert.Equal(1, log.Count("not accepting clients for want of file descriptors"));
        Assert.Equal(1, log.Count("ulimit -n"));

        h.Invoke(() => h.Loop.Headroom = DescriptorHeadroom.Unlimited);
        Assert.True(Oracle.Tcp(h.Expect()).Synchronize);
        Assert.Equal(1, log.Count("accepting clients again"));
        h.Invoke(() => forwards.StopAll());
    }

    [Fact]
    public void A_forward_client_accepted_onto_a_headroom_descriptor_is_reset_and_the_listener_pauses()
    {
        using var h = new StackHarness();
        h.Start();
        var forward = h.Invoke(() => h.Forwards.Add(ForwardSpec.Create(ForwardProtocol.Tcp, 0, 8000)));
        // The probe sees a free descriptor (as when another thread takes it before the accept); the accepted one is in the headroom.
        h.Invoke(() => h.Loop.Headroom = Everything.WithoutProbe());
        using var client = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp) { ReceiveTimeout = 5000 };
        client.Connect(new IPEndPoint(IPAddress.Loopback, forward.BoundPort));
        var e = Assert.Throws<SocketException>(() => client.Receive(new byte[1]));
        Assert.Equal(SocketError.ConnectionReset, e.SocketErrorCode);
        WaitFor(h, () => h.Counters.Drops(DropReason.AcceptOutOfDescriptors) == 1
            && h.Forwards.Find(ForwardProtocol.Tcp, IPAddress.Loopback, forward.BoundPort)!.PausesThisEpisode != 0, "one refusal counted and the forward paused");
        h.ExpectNone();
    }
}
