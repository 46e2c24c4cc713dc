using System.Diagnostics;
using System.Net.Sockets;
using Emunet.Engine.Stack.Tcp;
using Emunet.Engine.Wire;

namespace Emunet.Engine.Tests.Tcp;

/// <summary>
/// When Emunet acknowledges the guest's data (TcpStack.Ack.cs): once per loop turn for what the turn took, at least every
/// second full-sized segment (RFC 1122 §4.2.3.2), a lone segment by the delayed-ACK timer or by data going the other way,
/// and at once for out-of-order and duplicate data, a FIN, and a window that would otherwise stall the guest.
/// Most tests set a delay far longer than any wait here, so an ACK that arrives at all was not the timer's.
/// </summary>
public class TcpAckTests
{
    private const int Mss = 1460;
    private const int NoTimer = 60_000;

    /// <summary>Hands <paramref name="count"/> in-order segments of <paramref name="size"/> bytes to the stack in one loop turn.</summary>
    private static byte[] SendInOneTurn(TcpHarness h, GuestFlow f, int count, int size, int seed = 1)
    {
        var all = new MemoryStream();
        var packets = new byte[count][];
        for (int i = 0; i < count; i++)
        {
            var payload = HostSide.Pattern(size, seed + i);
            all.Write(payload);
            packets[i] = TcpHarness.BuildPacket(TcpHarness.Guest, f.Peer, f.GuestPort, f.PeerPort, unchecked(f.Snd + (uint)(i * size)), f.Rcv,
                TcpFlags.Ack, f.Window, payload);
        }
        h.Invoke(t =>
        {
            foreach (var p in packets)
            {
                Assert.Equal(IPv4Packet.ParseError.None, IPv4Packet.TryParse(p, out var ip));
                t.OnSegment(ip);
            }
        });
        f.Snd = unchecked(f.Snd + (uint)(count * size));
        return all.ToArray();
    }

    /// <summary>
    /// Every segment Emunet emitted so far: the first is awaited; the rest are counted after a later loop turn, which
    /// starts only once the turn that emitted the first has ended.
    /// </summary>
    private static List<Seg> TakeTurn(TcpHarness h)
    {
        var segs = new List<Seg> { h.Next() };
        h.Invoke(_ => 0);
        while (h.Sender.Packets.TryTake(out var raw)) segs.Add(Seg.Parse(raw));
        return segs;
    }

    [Theory]
    [InlineData(2)]
    [InlineData(7)]
    [InlineData(40)]
    public void FullSegmentsInOneTurnShareOneAck(int segments)
    {
        using var h = new TcpHarness(t => t.DelayedAckMs = NoTimer);
        using var server = HostSide.Listen();
        var flow = h.Connect(HostSide.Port(server));
        using var host = HostSide.Accept(server);

        var sent = SendInOneTurn(h, flow, segments, Mss);
        var acks = TakeTurn(h);
        Assert.True(acks.Count <= (segments + 1) / 2, $"{acks.Count} ACKs for {segments} segments");
        var ack = Assert.Single(acks);
        Assert.Equal(TcpFlags.Ack, ack.Flags);
        Assert.Equal(flow.Snd, ack.AckNum);
        Assert.Empty(ack.Payload);
        Assert.Equal(sent, HostSide.ReadExactly(host, sent.Length));
    }

    [Fact]
    public void SegmentsInTurnsOfTheirOwnAreAckedEverySecondOne()
    {
        using var h = new TcpHarness(t => t.DelayedAckMs = NoTimer);
        using var server = HostSide.Listen();
        var flow = h.Connect(HostSide.Port(server));
        using var host = HostSide.Accept(server);

        for (int pair = 0; pair < 5; pair++)
        {
            SendInOneTurn(h, flow, 1, Mss, seed: 2 * pair);
            SendInOneTurn(h, flow, 1, Mss, seed: 2 * pair + 1);
            // The first of each pair left no ACK behind: the one that comes acknowledges both.
            var acks = TakeTurn(h);
            var ack = Assert.Single(acks);
            Assert.Equal(flow.Snd, ack.AckNum);
        }
        Assert.Equal(10 * Mss, HostSide.ReadExactly(host, 10 * Mss).Length);
    }

    [Fact]
    public void LoneSegmentIsAckedByTheDelayTimer()
    {
        const int Delay = 300;
        using var h = new TcpHarness(t => t.DelayedAckMs = Delay);
        using var server = HostSide.Listen();
        var flow = h.Connect(HostSide.Port(server));
        using var host = HostSide.Accept(server);

        var sw = Stopwatch.StartNew();
        h.Send(flow, "ping"u8);
        Assert.Equal("ping"u8.ToArray(), HostSide.ReadExactly(host, 4)); // delivered at once; only the ACK waits
        var ack = h.Next();
        long waited = sw.ElapsedMilliseconds;
        Assert.Equal(TcpFlags.Ack, ack.Flags);
        Assert.Equal(flow.Snd, ack.AckNum);
        Assert.True(waited >= Delay - 10, $"the ACK came after {waited} ms, before the {Delay} ms delay");
    }

    [Fact]
    public void DataToTheGuestCarriesTheDelayedAck()
    {
        using var h = new TcpHarness(t => t.DelayedAckMs = NoTimer);
        using var server = HostSide.Listen();
        var flow = h.Connect(HostSide.Port(server));
        using var host = HostSide.Accept(server);

        h.Send(flow, "request"u8);
        Assert.Equal("request"u8.ToArray(), HostSide.ReadExactly(host, 7));
        host.Send("response"u8);
        var reply = h.Next(); // the first segment after the request: no ACK of its own came before it
        Assert.Equal("response"u8.ToArray(), reply.Payload);
        Assert.Equal(flow.Snd, reply.AckNum);
    }

    [Fact]
    public void OutOfOrderAndDuplicateDataAreAckedAtOnce()
    {
        using var h = new TcpHarness(t => t.DelayedAckMs = NoTimer);
        using var server = HostSide.Listen();
        var flow = h.Connect(HostSide.Port(server));
        using var host = HostSide.Accept(server);

        // Beyond RCV.NXT: dropped, and the duplicate ACK asks for the gap now (RFC 5681 §4.2).
        h.FromGuest(flow.GuestPort, flow.Peer, flow.PeerPort, flow.Snd + 1000, flow.Rcv, TcpFlags.Ack, flow.Window, HostSide.Pattern(100));
        var dup = h.Next();
        Assert.Equal(TcpFlags.Ack, dup.Flags);
        Assert.Equal(flow.Snd, dup.AckNum);

        // In order, alone: no ACK yet (the timer is a minute away) ...
        var first = HostSide.Pattern(100, 7);
        h.Send(flow, first);
        Assert.Equal(first, HostSide.ReadExactly(host, 100));
        Assert.Empty(h.Sender.Packets);
        // ... until the guest sends it again (it saw no ACK): that is acknowledged at once, and not written twice.
        h.FromGuest(flow.GuestPort, flow.Peer, flow.PeerPort, flow.Snd - 100, flow.Rcv, TcpFlags.Ack, flow.Window, first);
        var again = h.Next();
        Assert.Equal(flow.Snd, again.AckNum);
        host.Blocking = false;
        Assert.Equal(SocketError.WouldBlock, HostSide.ReceiveError(host, out _));
    }

    [Fact]
    public void FinIsAckedAtOnceWithTheDataBeforeIt()
    {
        using var h = new TcpHarness(t => t.DelayedAckMs = NoTimer);
        using var server = HostSide.Listen();
        var flow = h.Connect(HostSide.Port(server));
        using var host = HostSide.Accept(server);

        h.Send(flow, "last words"u8);
        h.Fin(flow);
        var acks = TakeTurn(h);
        var ack = Assert.Single(acks);
        Assert.Equal(flow.Snd, ack.AckNum); // the data and the FIN in one ACK
        Assert.Equal("last words"u8.ToArray(), HostSide.ReadExactly(host, 10));
        Assert.Equal(SocketError.Success, HostSide.ReceiveError(host, out int n));
        Assert.Equal(0, n); // the host peer saw the FIN
    }

    [Fact]
    public void ClosingWindowIsAckedAtOnceAndItsReopeningAnnounced()
    {
        using var h = new TcpHarness(t => { t.DelayedAckMs = NoTimer; t.ReceiveBufferSize = 8 * Mss; });
        using var server = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp) { ReceiveBufferSize = 4096 };
        server.Bind(new System.Net.IPEndPoint(System.Net.IPAddress.Loopback, 0));
        server.Listen(4);
        var flow = h.Connect(HostSide.Port(server));
        using var host = HostSide.Accept(server);

        // The host peer does not read: its socket fills, then Emunet's ring. Each lone segment that leaves less than
        // two segments of promised window is acknowledged in its own turn, or the guest would wait a minute.
        var stream = new MemoryStream();
        int window = 8 * Mss; // as last advertised (the guest offered no window scale)
        int unacked = 0;
        for (int i = 0; window - unacked > 0; i++)
        {
            Assert.True(i < 5000, "the window never closed");
            int len = Math.Min(window - unacked, Mss);
            stream.Write(SendInOneTurn(h, flow, 1, len, seed: i));
            unacked += len;
            if (unacked < 2 * Mss && window - unacked >= 2 * Mss) continue; // the first of a pair, with room to spare: waits
            var ack = h.Next();
            Assert.Equal(flow.Snd, ack.AckNum);
            window = ack.Window;
            unacked = 0;
        }

        // The host peer reads everything; Emunet drains its ring and announces the window without being asked.
        var expected = stream.ToArray();
        Assert.Equal(expected, HostSide.ReadExactly(host, expected.Length));
        var update = h.Next();
        Assert.Equal(TcpFlags.Ack, update.Flags);
        Assert.Equal(flow.Snd, update.AckNum);
        Assert.True(update.Window >= Mss, $"window update of {update.Window}");
    }

    [Fact]
    public void WindowReopenedByTheTurnsHostWriteIsAnnouncedWhenTheTurnsAckWentOutEarly()
    {
        using var h = new TcpHarness(t => { t.DelayedAckMs = NoTimer; t.ReceiveBufferSize = 8 * Mss; });
        using var server = HostSide.Listen();
        var flow = h.Connect(HostSide.Port(server));
        using var host = HostSide.Accept(server);

        // One turn: seven full segments (the ring, written to the host only at the end of the turn, leaves one segment
        // of window), then the last one again: a retransmission is acknowledged at once, with that nearly closed window.
        var packets = new List<byte[]>();
        var all = new MemoryStream();
        for (int i = 0; i < 7; i++)
        {
            var payload = HostSide.Pattern(Mss, 100 + i);
            all.Write(payload);
            packets.Add(TcpHarness.BuildPacket(TcpHarness.Guest, flow.Peer, flow.GuestPort, flow.PeerPort, unchecked(flow.Snd + (uint)(i * Mss)),
                flow.Rcv, TcpFlags.Ack, flow.Window, payload));
        }
        packets.Add(packets[^1]);
        h.Invoke(t =>
        {
            foreach (var p in packets)
            {
                Assert.Equal(IPv4Packet.ParseError.None, IPv4Packet.TryParse(p, out var ip));
                t.OnSegment(ip);
            }
        });
        flow.Snd = unchecked(flow.Snd + (uint)(7 * Mss));

        var early = h.Next();
        Assert.Equal(flow.Snd, early.AckNum);
        Assert.True(early.Window < 2 * Mss, $"the early ACK's window is {early.Window}");
        // The end of the turn wrote the ring to the host: the window it reopened is announced without the guest asking
        // (RFC 9293 §3.8.6.2.2), or a guest held below two segments would wait.
        var update = h.Next();
        Assert.Equal(TcpFlags.Ack, update.Flags);
        Assert.Equal(flow.Snd, update.AckNum);
        Assert.True(update.Window >= 2 * Mss, $"window update of {update.Window}");
        var expected = all.ToArray();
        Assert.Equal(expected, HostSide.ReadExactly(host, expected.Length));
    }
}
