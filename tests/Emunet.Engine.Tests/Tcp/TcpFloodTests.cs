using System.Net;
using System.Net.Sockets;
using Emunet.Engine.Diagnostics;
using Emunet.Engine.Stack.Nat;
using Emunet.Engine.Wire;

namespace Emunet.Engine.Tests.Tcp;

/// <summary>A guest SYN flood cannot fill everything: half-open connections are capped and slots stay for forwards.</summary>
public class TcpFloodTests
{
    private static void Syn(TcpHarness h, ushort guestPort, int hostPort) =>
        h.FromGuest(guestPort, TcpHarness.Gateway, (ushort)hostPort, 1000, 0, TcpFlags.Syn, 65535);

    [Fact]
    public void Half_open_connections_are_capped_and_the_next_syn_is_reset()
    {
        using var h = new TcpHarness(t => t.HalfOpenLimit = 2);
        // A listener whose accept queue is full: the host kernel leaves further connects pending (half-open).
        using var server = HostSide.Listen(backlog: 0);
        var fillers = new List<Socket>();
        for (int i = 0; i < 4; i++)
        {
            var c = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp) { Blocking = false };
            try { c.Connect(new IPEndPoint(IPAddress.Loopback, HostSide.Port(server))); } catch (SocketException) { }
            fillers.Add(c);
        }
        try
        {
            Syn(h, TcpHarness.NextGuestPort(), HostSide.Port(server));
            Syn(h, TcpHarness.NextGuestPort(), HostSide.Port(server));
            Assert.Equal(2, h.Invoke(t => t.HalfOpenCount));
            ushort third = TcpHarness.NextGuestPort();
            Syn(h, third, HostSide.Port(server));
            var rst = h.Next();
            Assert.True(rst.Has(TcpFlags.Rst));
            Assert.Equal(third, rst.DestinationPort);
            Assert.Equal(1, h.Counters.Drops(DropReason.TcpHalfOpenLimit));
            Assert.Equal(2, h.Invoke(t => t.ConnectionCount));
            // A connection that completes frees its half-open slot.
            h.Invoke(t => t.OnGuestGone());
            Assert.Equal(0, h.Invoke(t => t.HalfOpenCount));
        }
        finally
        {
            foreach (var c in fillers) c.Dispose();
        }
    }

    [Fact]
    public void Outbound_connections_leave_slots_that_only_forwards_may_take()
    {
        using var h = new TcpHarness(t => t.ConnectionLimit = 32);
        using var server = HostSide.Listen(backlog: 64);
        int reserve = h.Invoke(t => t.ForwardReserve);
        Assert.Equal(2, reserve);
        for (int i = 0; i < 30; i++)
        {
            ushort port = TcpHarness.NextGuestPort();
            Syn(h, port, HostSide.Port(server));
            var synAck = h.Next();
            Assert.Equal(TcpFlags.Syn | TcpFlags.Ack, synAck.Flags);
        }
        ushort refused = TcpHarness.NextGuestPort();
        Syn(h, refused, HostSide.Port(server));
        var rst = h.Next();
        Assert.True(rst.Has(TcpFlags.Rst));
        Assert.Equal(refused, rst.DestinationPort);
        Assert.Equal(1, h.Counters.Drops(DropReason.TcpFlowTableFull));

        // A forwarded client still gets in.
        using var listener = HostSide.Listen();
        using var client = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
        client.Connect(new IPEndPoint(IPAddress.Loopback, HostSide.Port(listener)));
        var accepted = HostSide.Accept(listener);
        var forward = new ForwardBinding("tcp:test");
        Assert.True(h.Invoke(t => t.OpenToGuest(accepted, TcpHarness.Guest, 80, forward)));
        Assert.True(h.Next().Has(TcpFlags.Syn));
        Assert.Equal(31, h.Invoke(t => t.ConnectionCount));
    }
}
