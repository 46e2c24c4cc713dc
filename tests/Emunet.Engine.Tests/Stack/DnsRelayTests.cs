using System.Buffers.Binary;
using System.Net;
using System.Net.Sockets;
using Emunet.Engine.Diagnostics;
using Emunet.Engine.Stack;
using Emunet.Engine.Wire;

namespace Emunet.Engine.Tests.Stack;

/// <summary>The DNS relay: well-formed queries only, its own bounded table, failover across every upstream.</summary>
public sealed class DnsRelayTests
{
    // id 0xbeef, RD, one question: "a." IN A
    private static readonly byte[] Query = { 0xbe, 0xef, 0x01, 0x00, 0x00, 0x01, 0, 0, 0, 0, 0, 0, 0x01, 0x61, 0x00, 0x00, 0x01, 0x00, 0x01 };

    private static Socket Upstream()
    {
        var s = new Socket(AddressFamily.InterNetwork, SocketType.Dgram, ProtocolType.Udp) { ReceiveTimeout = 10_000 };
        s.Bind(new IPEndPoint(IPAddress.Loopback, 0));
        return s;
    }

    private static IPEndPoint EndPoint(Socket s) => (IPEndPoint)s.LocalEndPoint!;

    private static (byte[] Query, EndPoint From) Receive(Socket s)
    {
        var buffer = new byte[2048];
        EndPoint from = new IPEndPoint(IPAddress.Any, 0);
        int n = s.ReceiveFrom(buffer, ref from);
        return (buffer[..n], from);
    }

    private static byte[] AnswerTo(byte[] query)
    {
        var answer = (byte[])query.Clone();
        answer[2] = 0x81; answer[3] = 0x80; // response, RD, RA
        return answer;
    }

    private static byte[] Ask(byte[] query, ushort port = 33333) =>
        GuestFrames.Udp(StackHarness.GuestIp, port, StackHarness.Dns, 53, query);

    [Fact]
    public void A_silent_upstream_is_left_for_the_next_and_the_guest_gets_its_own_id_back()
    {
        using var silent = Upstream();
        using var second = Upstream();
        using var h = new StackHarness(new NetworkConfig { DnsUpstream = new[] { EndPoint(silent), EndPoint(second) } });
        h.Start();
        h.Send(Ask(Query));
        var (first, _) = Receive(silent);   // asked first, never answers
        var (retry, from) = Receive(second); // after UpstreamTimeoutMs
        Assert.Equal(Query[2..], retry[2..]);
        Assert.NotEqual(BinaryPrimitives.ReadUInt16BigEndian(first), BinaryPrimitives.ReadUInt16BigEndian(retry)); // a fresh ID per try
        // A late answer from the first upstream is not taken; the second's is.
        silent.SendTo(AnswerTo(first), new IPEndPoint(IPAddress.Loopback, ((IPEndPoint)from).Port));
        second.SendTo(AnswerTo(retry), from);
        var udp = Oracle.Udp(h.Expect());
        Assert.Equal(0xbeef, BinaryPrimitives.ReadUInt16BigEndian(udp.PayloadData));
        Assert.Equal(53, udp.SourcePort);
        Assert.Equal("10.0.2.3", ((PacketDotNet.IPv4Packet)udp.ParentPacket).SourceAddress.ToString());
        h.ExpectNone();
        Assert.Equal(0, h.Invoke(() => h.Stack.Dns.PendingCount));
    }

    [Fact]
    public void A_refusing_upstream_is_left_at_once()
    {
        int closed;
        using (var s = Upstream()) closed = EndPoint(s).Port;
        using var second = Upstream();
        using var h = new StackHarness(new NetworkConfig
        {
            DnsUpstream = new[] { new IPEndPoint(IPAddress.Loopback, closed), EndPoint(second) },
        });
        h.Start();
        var started = DateTime.UtcNow;
        h.Send(Ask(Query));
        var (retry, from) = Receive(second);
        Assert.True(DateTime.UtcNow - started < TimeSpan.FromMilliseconds(DnsRelay.UpstreamTimeoutMs), "waited for the timeout");
        second.SendTo(AnswerTo(retry), from);
        Assert.Equal(0xbeef, BinaryPrimitives.ReadUInt16BigEndian(Oracle.Udp(h.Expect()).PayloadData));
    }

    [Fact]
    public void Only_well_formed_queries_are_relayed()
    {
        using var upstream = Upstream();
        using var h = new StackHarness(new NetworkConfig { DnsUpstream = new[] { EndPoint(upstream) } });
        var response = (byte[])Query.Clone(); response[2] |= 0x80;             // QR set
        var twoQuestions = (byte[])Query.Clone(); twoQuestions[5] = 2;          // QDCOUNT 2, one present
        var pointer = (byte[])Query.Clone(); pointer[12] = 0xc0;                 // compression pointer in a query
        var longLabel = (byte[])Query.Clone(); longLabel[12] = 64;               // label over 63
        var notify = (byte[])Query.Clone(); notify[2] = 0x20;                    // opcode NOTIFY
        foreach (var bad in new[] { Query[..5], response, twoQuestions, pointer, longLabel, notify })
            h.Send(Ask(bad));
        Assert.Equal(6, h.Counters.Drops(DropReason.DnsMalformed));
        Assert.Equal(0, h.Stack.Dns.PendingCount);
        upstream.ReceiveTimeout = 200;
        Assert.Throws<SocketException>(() => Receive(upstream));
    }

    [Fact]
    public void An_answer_for_another_question_is_dropped()
    {
        using var upstream = Upstream();
        using var h = new StackHarness(new NetworkConfig { DnsUpstream = new[] { EndPoint(upstream) } });
        h.Start();
        h.Send(Ask(Query));
        var (asked, from) = Receive(upstream);
        var forged = AnswerTo(asked);
        forged[13] = (byte)'b'; // "b." instead of "a."
        upstream.SendTo(forged, from);
        upstream.SendTo(AnswerTo(asked), from);
        Assert.Equal((byte)'a', Oracle.Udp(h.Expect()).PayloadData[13]);
        h.ExpectNone();
        Assert.Equal(1, h.Counters.Drops(DropReason.DnsMalformed));
    }

    [Fact]
    public void The_table_is_bounded_and_counted()
    {
        using var silent = Upstream();
        using var h = new StackHarness(new NetworkConfig { DnsUpstream = new[] { EndPoint(silent) } });
        for (int i = 0; i <= DnsRelay.MaxPending; i++) h.Send(Ask(Query, (ushort)(20000 + i)));
        Assert.Equal(DnsRelay.MaxPending, h.Stack.Dns.PendingCount);
        Assert.Equal(1, h.Counters.Drops(DropReason.DnsTableFull));
        Assert.Equal(0, h.Stack.Udp.FlowCount); // DNS does not take UDP flows
        // Unanswered everywhere, every query is given up and counted.
        h.Stack.Flows.OnTimer(0);
        h.Stack.Dns.OnTimer(h.Loop.NowMs + DnsRelay.UpstreamTimeoutMs + 1);
        Assert.Equal(0, h.Stack.Dns.PendingCount);
        Assert.Equal(DnsRelay.MaxPending, h.Counters.Drops(DropReason.DnsUpstreamFailed));
    }
}
