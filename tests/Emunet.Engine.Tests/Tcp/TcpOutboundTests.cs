using Emunet.Engine.Diagnostics;
using System.Diagnostics;
using System.Net.Sockets;
using Emunet.Engine.Stack;
using Emunet.Engine.Stack.Nat;
using Emunet.Engine.Stack.Tcp;
using Emunet.Engine.Wire;

namespace Emunet.Engine.Tests.Tcp;

/// <summary>Connections the guest opens, spliced onto real loopback sockets, driven segment by segment.</summary>
public class TcpOutboundTests
{
    private static TcpState? StateOf(TcpHarness h, GuestFlow f) =>
        h.Invoke(t => t.StateOf(TcpHarness.Guest, f.GuestPort, f.Peer, f.PeerPort));

    /// <summary>Waits (bounded) until the connection left the table.</summary>
    private static void WaitGone(TcpHarness h, GuestFlow f)
    {
        var sw = Stopwatch.StartNew();
        while (StateOf(h, f) is not null)
        {
            Assert.True(sw.Elapsed < TcpHarness.Timeout, "the connection was not freed");
            Thread.Sleep(5);
        }
    }

    /// <summary>
    /// One byte each way, so Emunet takes an RTT sample and its RTO drops from the initial 1 s to the 200 ms minimum
    /// (RFC 6298 (2.2), (2.4)); the handshake itself keeps the 1 s initial RTO, which a loaded machine may need.
    /// </summary>
    private static void Exchange(TcpHarness h, GuestFlow flow, Socket host)
    {
        h.Send(flow, "?"u8);
        Assert.Equal(flow.Snd, h.Next().AckNum);
        Assert.Equal("?"u8.ToArray(), HostSide.ReadExactly(host, 1));
        host.Send("!"u8);
        Assert.Equal("!"u8.ToArray(), h.Receive(flow, 1));
    }

    [Fact]
    public void HandshakeNegotiatesOptionsAndAnswersOnlyAfterTheHostAccepted()
    {
        using var h = new TcpHarness();
        using var server = HostSide.Listen();
        ushort gp = TcpHarness.NextGuestPort();
        // A Linux SYN: MSS 1400, SACK permitted, timestamps, NOP, window scale 7.
        byte[] tcp =
        {
            (byte)(gp >> 8), (byte)gp, (byte)(HostSide.Port(server) >> 8), (byte)HostSide.Port(server), 0x7f, 0xff, 0xff, 0xf0,
            0, 0, 0, 0, 0xa0, 0x02, 0xfa, 0xf0, 0, 0, 0, 0,
            0x02, 0x04, 0x05, 0x78, 0x04, 0x02, 0x08, 0x0a, 0x11, 0x22, 0x33, 0x44, 0, 0, 0, 0, 0x01, 0x03, 0x03, 0x07,
        };
        uint sum = Checksum.PseudoHeader(TcpHarness.Guest, TcpHarness.Gateway, IPv4Packet.ProtocolTcp, tcp.Length);
        ushort c = Checksum.Finish(Checksum.Accumulate(sum, tcp));
        tcp[16] = (byte)(c >> 8);
        tcp[17] = (byte)c;
        var packet = new byte[20 + tcp.Length];
        tcp.CopyTo(packet, 20);
        IPv4Packet.WriteHeader(packet, TcpHarness.Guest, TcpHarness.Gateway, IPv4Packet.ProtocolTcp, packet.Length);
        h.Inject(packet);

        var synAck = h.Next();
        Assert.Equal(TcpFlags.Syn | TcpFlags.Ack, synAck.Flags);
        Assert.Equal(TcpHarness.Gateway, synAck.Source);
        Assert.Equal(TcpHarness.Guest, synAck.Destination);
        Assert.Equal(gp, synAck.DestinationPort);
        Assert.Equal(0x7ffffff1u, synAck.AckNum);
        Assert.Equal(1460, synAck.Options.MaxSegmentSize); // device payload 1480 - 20
        Assert.Equal(3, synAck.Options.WindowScale); // 65535 << 3 covers the 256 KiB receive buffer
        Assert.False(synAck.Options.SackPermitted);
        Assert.False(synAck.Options.HasTimestamps);
        Assert.Equal(65535, synAck.Window); // a SYN's window is never scaled
        var oracle = (PacketDotNet.TcpPacket)new PacketDotNet.IPv4Packet(new PacketDotNet.Utils.ByteArraySegment(synAck.Raw)).PayloadPacket;
        Assert.True(oracle.ValidTcpChecksum);
        Assert.True(oracle.Synchronize && oracle.Acknowledgment);

        // The SYN-ACK came after the host connect: the server has the connection queued already.
        using var accepted = HostSide.Accept(server);
        var flow = new GuestFlow { GuestPort = gp, Peer = TcpHarness.Gateway, PeerPort = synAck.SourcePort, Snd = 0x7ffffff1, Rcv = synAck.SeqNum + 1 };
        Assert.Equal(TcpState.SynReceived, StateOf(h, flow));
        h.Ack(flow, window: 1000); // scaled by 7: 128000 bytes
        Assert.Equal(TcpState.Established, StateOf(h, flow));

        // Sequence numbers wrap past 2^31 in this flow (guest ISN 0x7ffffff0); data still flows both ways.
        var up = HostSide.Pattern(100);
        h.Send(flow, up);
        var ack = h.Next();
        Assert.Equal(flow.Snd, ack.AckNum);
        Assert.Equal(TcpStack.DefaultBufferSize >> 3, ack.Window); // the whole receive buffer, scaled
        Assert.Equal(up, HostSide.ReadExactly(accepted, 100));
    }

    [Fact]
    public void ScaledGuestWindowBoundsWhatIsInFlight()
    {
        using var h = new TcpHarness();
        using var server = HostSide.Listen();
        var flow = h.Connect(HostSide.Port(server), window: 65535, windowScale: 2);
        using var host = HostSide.Accept(server);
        h.Ack(flow, window: 1000); // 4000 bytes
        var data = HostSide.Pattern(20_000, 10);
        host.Send(data);
        var got = new MemoryStream();
        int inFlight = 0;
        while (inFlight + 1460 <= 4000 || inFlight == 0)
        {
            var s = h.Next();
            Assert.Equal(flow.Rcv + (uint)inFlight, s.SeqNum);
            inFlight += s.Payload.Length;
            got.Write(s.Payload);
            Assert.True(inFlight <= 4000, $"{inFlight} bytes in flight with a 4000-byte window");
        }
        flow.Rcv += (uint)inFlight;
        flow.Window = 1000;
        h.Ack(flow);
        got.Write(h.Receive(flow, data.Length - inFlight));
        Assert.Equal(data, got.ToArray());
    }

    [Fact]
    public void SynIsHeldWhileTheHostConnectsAndDuplicatesAreAbsorbed()
    {
        using var h = new TcpHarness();
        // A listener whose accept queue is full drops further SYNs, so the host connect stays pending until it is drained.
        using var server = HostSide.Listen(backlog: 0);
        using var queued = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
        queued.Connect(new System.Net.IPEndPoint(System.Net.IPAddress.Loopback, HostSide.Port(server)));
        ushort gp = TcpHarness.NextGuestPort();
        var flow = new GuestFlow { GuestPort = gp, Peer = TcpHarness.Gateway, PeerPort = (ushort)HostSide.Port(server), Snd = 1000 };
        h.FromGuest(gp, flow.Peer, flow.PeerPort, 999, 0, TcpFlags.Syn, 65535, mss: 1460);
        h.FromGuest(gp, flow.Peer, flow.PeerPort, 999, 0, TcpFlags.Syn, 65535, mss: 1460);
        Assert.Equal(TcpState.Connecting, StateOf(h, flow));
        Assert.Empty(h.Sender.Packets);

        // Drain the queue: the kernel's SYN retransmission now completes the host connect, and only then the guest hears.
        using var first = HostSide.Accept(server);
        var synAck = h.Next(5000);
        Assert.Equal(TcpFlags.Syn | TcpFlags.Ack, synAck.Flags);
        Assert.Equal(1000u, synAck.AckNum);
        using var second = HostSide.Accept(server);
    }

    [Fact]
    public void HostConnectTimeoutResetsTheGuestAndGuestResetAbandonsTheConnect()
    {
        using var h = new TcpHarness(t => t.ConnectTimeoutMs = 100);
        using var server = HostSide.Listen(backlog: 0);
        using var queued = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
        queued.Connect(new System.Net.IPEndPoint(System.Net.IPAddress.Loopback, HostSide.Port(server)));
        ushort port = (ushort)HostSide.Port(server);

        ushort gp = TcpHarness.NextGuestPort();
        h.FromGuest(gp, TcpHarness.Gateway, port, 999, 0, TcpFlags.Syn, 65535);
        var rst = h.Next(); // after the 100 ms connect timeout (the kernel's own SYN retry comes at 1 s)
        Assert.Equal(TcpFlags.Rst | TcpFlags.Ack, rst.Flags);
        Assert.Equal(1000u, rst.AckNum);
        Assert.Equal(0, h.Invoke(t => t.ConnectionCount));

        ushort gp2 = TcpHarness.NextGuestPort();
        h.FromGuest(gp2, TcpHarness.Gateway, port, 999, 0, TcpFlags.Syn, 65535);
        h.FromGuest(gp2, TcpHarness.Gateway, port, 1000, 0, TcpFlags.Rst, 0);
        Assert.Equal(0, h.Invoke(t => t.ConnectionCount));
        Assert.Empty(h.Sender.Packets);
    }

    [Fact]
    public void ConnectToAClosedHostPortIsRefusedAtOnce()
    {
        using var h = new TcpHarness();
        int port = HostSide.ClosedPort();
        ushort gp = TcpHarness.NextGuestPort();
        h.FromGuest(gp, TcpHarness.Gateway, (ushort)port, 5000, 0, TcpFlags.Syn, 65535, mss: 1460);
        var rst = h.Next(2000);
        Assert.Equal(TcpFlags.Rst | TcpFlags.Ack, rst.Flags);
        Assert.Equal(5001u, rst.AckNum);
        Assert.Equal(gp, rst.DestinationPort);
        Assert.Equal(0, h.Invoke(t => t.ConnectionCount));
    }

    [Fact]
    public void DestinationInTheGuestNetworkIsReset()
    {
        using var h = new TcpHarness();
        ushort gp = TcpHarness.NextGuestPort();
        h.FromGuest(gp, new IPv4Address(10, 0, 2, 9), 80, 5000, 0, TcpFlags.Syn, 65535);
        var rst = h.Next();
        Assert.Equal(TcpFlags.Rst | TcpFlags.Ack, rst.Flags);
        Assert.Equal(new IPv4Address(10, 0, 2, 9), rst.Source);
        Assert.Equal(1, h.Counters.Drops(DropReason.TcpUnreachable));
    }

    [Fact]
    public void DataBothWaysIsByteExact()
    {
        using var h = new TcpHarness();
        using var server = HostSide.Listen();
        var flow = h.Connect(HostSide.Port(server));
        using var host = HostSide.Accept(server);

        var up = HostSide.Pattern(3000, 1);
        for (int i = 0; i < 3000; i += 1000)
        {
            h.Send(flow, up.AsSpan(i, 1000));
            var ack = h.Next();
            Assert.Equal(TcpFlags.Ack, ack.Flags);
            Assert.Equal(flow.Snd, ack.AckNum);
        }
        Assert.Equal(up, HostSide.ReadExactly(host, up.Length));

        var down = HostSide.Pattern(50_000, 2);
        host.Send(down);
        Assert.Equal(down, h.Receive(flow, down.Length));

        var info = new List<ConnectionInfo>();
        h.Invoke(_ => h.Flows.Snapshot(info));
        var ci = Assert.Single(info);
        Assert.Equal(FlowProtocol.Tcp, ci.Protocol);
        Assert.Equal(FlowDirection.Outbound, ci.Direction);
        Assert.Equal("ESTABLISHED", ci.State);
        Assert.Equal(3000, ci.BytesFromGuest);
        Assert.Equal(50_000, ci.BytesToGuest);
        Assert.Equal(flow.GuestPort, ci.GuestEndPoint.Port);
        Assert.Equal("10.0.2.2", ci.GuestPeerEndPoint.Address.ToString());
        Assert.Equal(HostSide.Port(server), ci.HostRemoteEndPoint!.Port);
        Assert.Equal(((System.Net.IPEndPoint)host.RemoteEndPoint!).Port, ci.HostLocalEndPoint!.Port);
    }

    [Fact]
    public void LargeTransferNeverExceedsASmallGuestWindow()
    {
        using var h = new TcpHarness();
        using var server = HostSide.Listen();
        var flow = h.Connect(HostSide.Port(server), window: 1000);
        using var host = HostSide.Accept(server);
        var data = HostSide.Pattern(256 * 1024, 3);
        var writer = new Thread(() => host.Send(data)) { IsBackground = true };
        writer.Start();

        var got = new MemoryStream();
        uint acked = flow.Rcv;
        while (got.Length < data.Length)
        {
            var s = h.Next();
            Assert.Equal(flow.Rcv, s.SeqNum);
            Assert.True(s.Payload.Length is > 0 and <= 1000, $"segment beyond the window: {s}");
            Assert.True(unchecked(s.SeqNum + (uint)s.Payload.Length - acked) <= 1000u, $"in flight beyond the window: {s}");
            got.Write(s.Payload);
            flow.Rcv += (uint)s.Payload.Length;
            h.Ack(flow);
            acked = flow.Rcv;
        }
        Assert.Equal(data, got.ToArray());
        Assert.True(writer.Join(TcpHarness.Timeout));
    }

    [Fact]
    public void ZeroWindowIsProbedAndReopened()
    {
        using var h = new TcpHarness(t => t.MinRtoMs = 200); // the persist timer runs on the RTO
        using var server = HostSide.Listen();
        var flow = h.Connect(HostSide.Port(server));
        using var host = HostSide.Accept(server);
        Exchange(h, flow, host);
        h.Ack(flow, window: 0);

        var data = HostSide.Pattern(3000, 4);
        host.Send(data);
        var probe = h.Next(3000);
        Assert.Equal(TcpFlags.Ack, probe.Flags);
        Assert.Empty(probe.Payload);
        Assert.Equal(flow.Rcv - 1, probe.SeqNum); // an old sequence number: the guest must answer with its window

        h.Ack(flow, window: 65535);
        Assert.Equal(data, h.Receive(flow, data.Length));
    }

    [Fact]
    public void SlowHostPeerClosesTheGuestWindowAndDrainingReopensIt()
    {
        using var h = new TcpHarness(t => t.ReceiveBufferSize = 16 * 1024, maxPayload: 65500);
        using var server = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp) { ReceiveBufferSize = 4096 };
        server.Bind(new System.Net.IPEndPoint(System.Net.IPAddress.Loopback, 0));
        server.Listen(4);
        var flow = h.Connect(HostSide.Port(server), mss: 60000);
        using var host = HostSide.Accept(server);

        var stream = new MemoryStream();
        int window = 16 * 1024;
        var rnd = new Random(5);
        for (int i = 0; window > 0; i++)
        {
            Assert.True(i < 5000, "the window never closed");
            var chunk = new byte[Math.Min(window, 16 * 1024)];
            rnd.NextBytes(chunk);
            h.Send(flow, chunk);
            stream.Write(chunk);
            var ack = h.Next();
            Assert.Equal(flow.Snd, ack.AckNum);
            window = ack.Window; // not scaled: the guest offered no window scale
        }
        Assert.Empty(h.Sender.Packets);

        // The host peer reads everything; Emunet drains its buffer and announces the window.
        var expected = stream.ToArray();
        Assert.Equal(expected, HostSide.ReadExactly(host, expected.Length));
        var update = h.Next();
        Assert.Equal(TcpFlags.Ack, update.Flags);
        Assert.Equal(flow.Snd, update.AckNum);
        Assert.True(update.Window > 0);
    }

    [Fact]
    public void LostSegmentIsRetransmittedAfterTheRto()
    {
        using var h = new TcpHarness(t => t.MinRtoMs = 200);
        using var server = HostSide.Listen();
        var flow = h.Connect(HostSide.Port(server));
        using var host = HostSide.Accept(server);
        Exchange(h, flow, host);
        host.Send("hello"u8);
        var first = h.Next();
        var sw = Stopwatch.StartNew();
        Assert.True("hello"u8.SequenceEqual(first.Payload), first.ToString());
        var again = h.Next(3000); // the guest "lost" the first one
        Assert.True(sw.ElapsedMilliseconds >= 150, $"retransmitted after {sw.ElapsedMilliseconds} ms, before the RTO");
        Assert.Equal(first.SeqNum, again.SeqNum);
        Assert.Equal(first.Payload, again.Payload);
        flow.Rcv += 5;
        h.Ack(flow);
        Assert.Equal(TcpState.Established, StateOf(h, flow));
    }

    [Fact]
    public void SilentGuestIsGivenUpOnAndBothSidesReset()
    {
        using var h = new TcpHarness(t => { t.MinRtoMs = 50; t.MaxRetransmissions = 2; });
        using var server = HostSide.Listen();
        var flow = h.Connect(HostSide.Port(server));
        using var host = HostSide.Accept(server);
        Exchange(h, flow, host); // RTO now 50 ms
        host.Send("are you there?"u8);
        var first = h.Next();
        var r1 = h.Next();
        var r2 = h.Next();
        Assert.Equal(first.SeqNum, r1.SeqNum);
        Assert.Equal(first.SeqNum, r2.SeqNum);
        Assert.Equal(first.Payload, r2.Payload);
        var rst = h.Next();
        Assert.True(rst.Has(TcpFlags.Rst), $"expected RST, got {rst}");
        Assert.Equal(SocketError.ConnectionReset, HostSide.ReceiveError(host, out _));
        Assert.Equal(0, h.Invoke(t => t.ConnectionCount));
    }

    [Fact]
    public void SlowGuestStopsEmunetReadingTheHost()
    {
        using var h = new TcpHarness();
        using var server = HostSide.Listen();
        var flow = h.Connect(HostSide.Port(server));
        using var host = HostSide.Accept(server);
        h.Ack(flow, window: 0);
        host.Blocking = false;
        var chunk = new byte[1 << 20];
        long total = 0;
        var sw = Stopwatch.StartNew();
        // If Emunet read without bound, the host's sends would never block.
        while (true)
        {
            int n = host.Send(chunk, 0, chunk.Length, SocketFlags.None, out var error);
            if (error == SocketError.WouldBlock)
            {
                // The kernel buffers may still be moving into Emunet's ring; blocked twice in a row 50 ms apart means stuck.
                Thread.Sleep(50);
                if (host.Send(chunk, 0, 1, SocketFlags.None, out error) == 0 && error == SocketError.WouldBlock) break;
                total++;
                continue;
            }
            Assert.Equal(SocketError.Success, error);
            total += n;
            Assert.True(total < 512L << 20 && sw.Elapsed < TcpHarness.Timeout, $"the host wrote {total} bytes without blocking");
        }
        Assert.True(total > TcpStack.DefaultBufferSize);
    }

    [Fact]
    public void ThreeDuplicateAcksTriggerFastRetransmit()
    {
        using var h = new TcpHarness(t => t.InitialRtoMs = 20_000); // any retransmission seen here is a fast one
        using var server = HostSide.Listen();
        var flow = h.Connect(HostSide.Port(server));
        using var host = HostSide.Accept(server);
        var data = HostSide.Pattern(4 * 1460, 6);
        host.Send(data);
        var segs = new List<Seg>();
        int total = 0;
        while (total < data.Length)
        {
            var s = h.Next();
            segs.Add(s);
            total += s.Payload.Length;
        }
        Assert.True(segs.Count >= 2, "the data should span several segments");
        uint lostSeq = flow.Rcv; // the first segment was "lost"
        for (int i = 0; i < 3; i++) h.Ack(flow);
        var re = h.Next(2000);
        Assert.Equal(lostSeq, re.SeqNum);
        Assert.Equal(segs[0].Payload, re.Payload);
        flow.Rcv += (uint)data.Length;
        h.Ack(flow);
        Assert.Empty(h.Sender.Packets);
    }

    [Fact]
    public void OutOfOrderSegmentIsDroppedAndTheRetransmissionsAreTrimmed()
    {
        using var h = new TcpHarness();
        using var server = HostSide.Listen();
        var flow = h.Connect(HostSide.Port(server));
        using var host = HostSide.Accept(server);
        var data = HostSide.Pattern(3000, 7);
        uint s0 = flow.Snd;
        void Seg(int from, int to) =>
            h.FromGuest(flow.GuestPort, flow.Peer, flow.PeerPort, s0 + (uint)from, flow.Rcv, TcpFlags.Ack, 65535, data.AsSpan(from, to - from));

        Seg(1000, 2000); // ahead of RCV.NXT
        Assert.Equal(s0, h.Next().AckNum); // duplicate ACK
        Seg(0, 1000);
        Assert.Equal(s0 + 1000, h.Next().AckNum);
        Seg(1000, 2000);
        Assert.Equal(s0 + 2000, h.Next().AckNum);
        Seg(1500, 3000); // overlaps 500 bytes already taken
        Assert.Equal(s0 + 3000, h.Next().AckNum);
        Seg(0, 1000); // wholly old: re-ACK, nothing delivered
        Assert.Equal(s0 + 3000, h.Next().AckNum);

        Assert.Equal(data, HostSide.ReadExactly(host, data.Length));
        host.Shutdown(SocketShutdown.Send);
        Assert.True(h.Next().Has(TcpFlags.Fin));
        Assert.Equal(1, h.Counters.Drops(DropReason.TcpOutOfOrder));
    }

    [Fact]
    public void GuestResetResetsTheHostPeer()
    {
        using var h = new TcpHarness();
        using var server = HostSide.Listen();
        var flow = h.Connect(HostSide.Port(server));
        using var host = HostSide.Accept(server);
        h.FromGuest(flow.GuestPort, flow.Peer, flow.PeerPort, flow.Snd + 100, flow.Rcv, TcpFlags.Rst, 0);
        Assert.Equal(TcpFlags.Ack, h.Next().Flags); // in the window but not RCV.NXT: challenge ACK (RFC 5961)
        Assert.Equal(TcpState.Established, StateOf(h, flow));

        h.FromGuest(flow.GuestPort, flow.Peer, flow.PeerPort, flow.Snd, 0, TcpFlags.Rst, 0);
        Assert.Equal(SocketError.ConnectionReset, HostSide.ReceiveError(host, out _));
        Assert.Null(StateOf(h, flow));
    }

    [Fact]
    public void HostResetResetsTheGuest()
    {
        using var h = new TcpHarness();
        using var server = HostSide.Listen();
        var flow = h.Connect(HostSide.Port(server));
        var host = HostSide.Accept(server);
        host.LingerState = new System.Net.Sockets.LingerOption(true, 0);
        host.Close();
        var rst = h.Next();
        Assert.True(rst.Has(TcpFlags.Rst), $"expected RST, got {rst}");
        Assert.Equal(flow.Rcv, rst.SeqNum);
        WaitGone(h, flow);
    }

    [Fact]
    public void HostCloseThenGuestClose()
    {
        using var h = new TcpHarness();
        using var server = HostSide.Listen();
        var flow = h.Connect(HostSide.Port(server));
        using var host = HostSide.Accept(server);
        host.Send("bye"u8);
        host.Shutdown(SocketShutdown.Send);

        var got = new MemoryStream();
        while (true)
        {
            var s = h.Next();
            Assert.Equal(flow.Rcv, s.SeqNum);
            got.Write(s.Payload);
            flow.Rcv += (uint)s.Payload.Length;
            if (s.Has(TcpFlags.Fin)) { flow.Rcv++; break; }
        }
        Assert.Equal("bye"u8.ToArray(), got.ToArray());
        h.Ack(flow);
        Assert.Equal(TcpState.FinWait2, StateOf(h, flow));

        h.Fin(flow);
        var ack = h.Next();
        Assert.Equal(TcpFlags.Ack, ack.Flags);
        Assert.Equal(flow.Snd, ack.AckNum);
        Assert.Equal(SocketError.Success, HostSide.ReceiveError(host, out int n));
        Assert.Equal(0, n); // EOF
        WaitGone(h, flow);
    }

    [Fact]
    public void GuestHalfCloseThenHostStillSends()
    {
        using var h = new TcpHarness();
        using var server = HostSide.Listen();
        var flow = h.Connect(HostSide.Port(server));
        using var host = HostSide.Accept(server);
        h.Send(flow, "request"u8, TcpFlags.Psh | TcpFlags.Fin);
        var ack = h.Next();
        Assert.Equal(flow.Snd, ack.AckNum); // data and FIN
        Assert.Equal("request"u8.ToArray(), HostSide.ReadExactly(host, 7));
        Assert.Equal(SocketError.Success, HostSide.ReceiveError(host, out int n));
        Assert.Equal(0, n);
        Assert.Equal(TcpState.CloseWait, StateOf(h, flow));

        var response = HostSide.Pattern(20_000, 8);
        host.Send(response);
        Assert.Equal(response, h.Receive(flow, response.Length));
        host.Close();
        var fin = h.Next();
        Assert.True(fin.Has(TcpFlags.Fin));
        Assert.Equal(flow.Rcv, fin.SeqNum);
        Assert.Equal(TcpState.LastAck, StateOf(h, flow));
        flow.Rcv++;
        h.Ack(flow);
        WaitGone(h, flow);
    }

    [Fact]
    public void SimultaneousClose()
    {
        using var h = new TcpHarness();
        using var server = HostSide.Listen();
        var flow = h.Connect(HostSide.Port(server));
        using var host = HostSide.Accept(server);
        host.Shutdown(SocketShutdown.Send);
        var fin = h.Next();
        Assert.Equal(TcpFlags.Ack | TcpFlags.Fin, fin.Flags);
        Assert.Equal(flow.Rcv, fin.SeqNum);

        // The guest's FIN crosses Emunet's: it does not acknowledge Emunet's FIN yet.
        h.Fin(flow);
        var ack = h.Next();
        Assert.Equal(flow.Snd, ack.AckNum);
        Assert.Equal(TcpState.Closing, StateOf(h, flow));
        flow.Rcv++;
        h.Ack(flow);
        Assert.Equal(SocketError.Success, HostSide.ReceiveError(host, out int n));
        Assert.Equal(0, n);
        WaitGone(h, flow);
    }

    [Fact]
    public void StraySegmentsAreReset()
    {
        using var h = new TcpHarness();
        ushort gp = TcpHarness.NextGuestPort();
        h.FromGuest(gp, TcpHarness.Gateway, 1234, 100, 777, TcpFlags.Ack, 1000, "x"u8);
        var r1 = h.Next();
        Assert.Equal(TcpFlags.Rst, r1.Flags);
        Assert.Equal(777u, r1.SeqNum);

        h.FromGuest(gp, TcpHarness.Gateway, 1234, 100, 0, TcpFlags.Fin, 1000, "ab"u8);
        var r2 = h.Next();
        Assert.Equal(TcpFlags.Rst | TcpFlags.Ack, r2.Flags);
        Assert.Equal(0u, r2.SeqNum);
        Assert.Equal(103u, r2.AckNum); // two bytes and the FIN

        h.FromGuest(gp, TcpHarness.Gateway, 1234, 100, 0, TcpFlags.Rst, 0);
        Assert.Empty(h.Sender.Packets); // a RST is never answered
        Assert.Equal(3, h.Counters.Drops(DropReason.TcpNoConnection));
    }

    [Fact]
    public void CorruptSegmentIsDroppedAndCounted()
    {
        using var h = new TcpHarness();
        var packet = TcpHarness.BuildPacket(TcpHarness.Guest, TcpHarness.Gateway, 1, 2, 3, 4, TcpFlags.Ack, 5, "data"u8);
        packet[^1] ^= 0xff;
        h.Inject(packet);
        var truncated = TcpHarness.BuildPacket(TcpHarness.Guest, TcpHarness.Gateway, 1, 2, 3, 4, TcpFlags.Ack, 5, default);
        truncated[20 + 12] = 0xf0; // data offset 60 > 20 bytes present
        h.Inject(truncated);
        Assert.Empty(h.Sender.Packets);
        Assert.Equal(1, h.Counters.Drops(DropReason.TcpBadChecksum));
        Assert.Equal(1, h.Counters.Drops(DropReason.TcpMalformed));
    }

    [Fact]
    public void FullTableRefusesWithACountedReset()
    {
        using var h = new TcpHarness(t => t.ConnectionLimit = 1);
        using var server = HostSide.Listen();
        h.Connect(HostSide.Port(server));
        ushort gp = TcpHarness.NextGuestPort();
        h.FromGuest(gp, TcpHarness.Gateway, (ushort)HostSide.Port(server), 1, 0, TcpFlags.Syn, 65535);
        var rst = h.Next();
        Assert.Equal(TcpFlags.Rst | TcpFlags.Ack, rst.Flags);
        Assert.Equal(gp, rst.DestinationPort);
        Assert.Equal(1, h.Counters.Drops(DropReason.TcpFlowTableFull));
        Assert.Equal(1, h.Invoke(t => t.ConnectionCount));
    }

    [Fact]
    public void FullDeviceHoldsSegmentsUntilTransmitReady()
    {
        using var h = new TcpHarness();
        using var server = HostSide.Listen();
        var flow = h.Connect(HostSide.Port(server));
        using var host = HostSide.Accept(server);
        h.Sender.Full = true;
        var data = HostSide.Pattern(5000, 9);
        host.Send(data);
        // Wait until the stack read the socket and found the device full.
        var sw = Stopwatch.StartNew();
        while (Volatile.Read(ref h.Sender.Refused) == 0)
        {
            Assert.True(sw.Elapsed < TcpHarness.Timeout, "the stack never tried to send");
            Thread.Sleep(2);
        }
        Assert.Empty(h.Sender.Packets);
        h.Sender.Full = false;
        h.Invoke(t => t.OnTransmitReady());
        Assert.Equal(data, h.Receive(flow, data.Length));
    }

    [Fact]
    public void GuestGoneResetsHostPeers()
    {
        using var h = new TcpHarness();
        using var server = HostSide.Listen();
        h.Connect(HostSide.Port(server));
        using var host = HostSide.Accept(server);
        h.Invoke(t => t.OnGuestGone());
        Assert.Equal(SocketError.ConnectionReset, HostSide.ReceiveError(host, out _));
        Assert.Equal(0, h.Invoke(t => t.ConnectionCount));
    }

    [Fact]
    public void SteadyStateDataPathAllocatesNothing()
    {
        using var h = new TcpHarness();
        using var server = HostSide.Listen();
        var flow = h.Connect(HostSide.Port(server));
        using var host = HostSide.Accept(server);
        Exchange(h, flow, host);

        // Guest -> host: 2 x 50 segments of 1000 bytes in one loop turn each, ACKed by Emunet (recorded nowhere).
        const int Segments = 50, Size = 1000;
        byte[][] Build(uint start) => Enumerable.Range(0, Segments).Select(i => TcpHarness.BuildPacket(TcpHarness.Guest, flow.Peer,
            flow.GuestPort, flow.PeerPort, start + (uint)(i * Size), flow.Rcv, TcpFlags.Ack, 65535, HostSide.Pattern(Size, i))).ToArray();
        long Run(byte[][] packets) => h.Invoke(t =>
        {
            long before = GC.GetAllocatedBytesForCurrentThread();
            foreach (var p in packets)
            {
                IPv4Packet.TryParse(p, out var ip);
                t.OnSegment(ip);
            }
            return GC.GetAllocatedBytesForCurrentThread() - before;
        });
        h.Sender.Discard = true;
        var warm = Build(flow.Snd);
        var measured = Build(flow.Snd + Segments * Size);
        Run(warm);
        // The warm turn's bytes reach the host (its end-of-turn write ran) before the measured turn, so the measured one
        // starts from the same empty, already grown receive ring whichever loop turn each ran in.
        Assert.Equal(Segments * Size, HostSide.ReadExactly(host, Segments * Size).Length);
        long guestToHost = Run(measured);
        Assert.Equal(Segments * Size, HostSide.ReadExactly(host, Segments * Size).Length);

        // Host -> guest: the host's data waits behind a zero window; one loop turn opens the window and ACKs what
        // Emunet sends, segment after segment.
        h.Sender.Discard = false;
        h.Ack(flow, window: 0);
        host.Send(HostSide.Pattern(200_000, 3));
        var probe = h.Next(); // the persist probe: the data is in the send ring
        Assert.Empty(probe.Payload);
        // Every byte read into the send ring (it grows while the loop reads) before the measured turn: growth is not
        // the steady state, and the turn needs 100 segments' worth queued.
        var sw = Stopwatch.StartNew();
        while (h.Invoke(t => t.RingsOf(TcpHarness.Guest, flow.GuestPort, flow.Peer, flow.PeerPort)?.Send ?? -1) < 200_000)
        {
            Assert.True(sw.Elapsed < TcpHarness.Timeout, "the host's 200,000 bytes never all reached the send ring");
            Thread.Sleep(2);
        }
        h.Sender.Discard = true;
        var ack = new byte[40];
        int committedBefore = h.Sender.Committed;
        long hostToGuest = h.Invoke(t =>
        {
            long before = GC.GetAllocatedBytesForCurrentThread();
            uint rcv = flow.Rcv;
            for (int i = 0; i < 100; i++)
            {
                int committed = h.Sender.Committed;
                WriteAck(ack, flow, rcv);
                IPv4Packet.TryParse(ack, out var ip);
                t.OnSegment(ip);
                rcv += (uint)(1460 * (h.Sender.Committed - committed));
            }
            return GC.GetAllocatedBytesForCurrentThread() - before;
        });
        Assert.True(h.Sender.Committed - committedBefore >= 100, $"only {h.Sender.Committed - committedBefore} segments sent");
        Assert.Equal((0L, 0L), (guestToHost, hostToGuest));
    }

    /// <summary>An ACK from the guest written in place (no allocation inside the measured loop turn).</summary>
    private static void WriteAck(byte[] packet, GuestFlow f, uint ack)
    {
        var fields = new TcpFields
        {
            SourcePort = f.GuestPort, DestinationPort = f.PeerPort, SequenceNumber = f.Snd, AcknowledgmentNumber = ack,
            Flags = TcpFlags.Ack, Window = 65535, WindowScale = -1,
        };
        fields.Emit(packet.AsSpan(20), TcpHarness.Guest, f.Peer, 0);
        IPv4Packet.WriteHeader(packet, TcpHarness.Guest, f.Peer, IPv4Packet.ProtocolTcp, 40);
    }
}
