using Emunet.Engine.Diagnostics;
using Emunet.Engine.Stack;
using Emunet.Engine.Wire;

namespace Emunet.Engine.Tests.Stack;

/// <summary>Fragmented echo requests to the gateway: a whole echo reply proves the datagram was put back together.</summary>
public class ReassemblyTests
{
    private static byte[] Message(int dataLength, ushort sequence = 1)
    {
        var data = new byte[dataLength];
        for (int i = 0; i < data.Length; i++) data[i] = (byte)(i * 7 + 3);
        return GuestFrames.EchoMessage(0x5151, sequence, data);
    }

    private static byte[] Frag(byte[] message, int offset, int length, bool more, ushort id = 77) =>
        GuestFrames.Fragment(StackHarness.GuestIp, StackHarness.Gateway, IPv4Packet.ProtocolIcmp, id, message, offset, length, more);

    private static void ExpectEchoReply(StackHarness h, byte[] message)
    {
        var frame = h.Expect();
        var icmp = Oracle.Icmp(frame);
        Assert.Equal(PacketDotNet.IcmpV4TypeCode.EchoReply, icmp.TypeCode);
        Assert.Equal(message.AsSpan(8).ToArray(), frame.AsSpan(EthernetFrame.HeaderLength + 28).ToArray());
    }

    [Fact]
    public void In_order()
    {
        using var h = new StackHarness();
        var m = Message(3000);   // 3008 bytes: 1480 + 1480 + 48
        h.Send(Frag(m, 0, 1480, true));
        h.Send(Frag(m, 1480, 1480, true));
        h.ExpectNone();
        h.Send(Frag(m, 2960, m.Length - 2960, false));
        ExpectEchoReply(h, m);
        Assert.Equal(0, h.Stack.Reassembly.InFlight);
        Assert.Equal(0, h.Counters.TotalDrops);
    }

    [Fact]
    public void Out_of_order()
    {
        using var h = new StackHarness();
        var m = Message(3000);
        h.Send(Frag(m, 2960, m.Length - 2960, false));
        h.Send(Frag(m, 1480, 1480, true));
        h.Send(Frag(m, 0, 1480, true));
        ExpectEchoReply(h, m);
    }

    [Fact]
    public void Interleaved_datagrams_are_kept_apart()
    {
        using var h = new StackHarness();
        var a = Message(1000, 1);
        var b = Message(1200, 2);
        h.Send(Frag(a, 0, 504, true, id: 1));
        h.Send(Frag(b, 0, 504, true, id: 2));
        h.Send(Frag(b, 504, b.Length - 504, false, id: 2));
        ExpectEchoReply(h, b);
        h.Send(Frag(a, 504, a.Length - 504, false, id: 1));
        ExpectEchoReply(h, a);
    }

    [Fact]
    public void Overlapping_fragments_drop_the_datagram()
    {
        using var h = new StackHarness();
        var m = Message(3000);
        h.Send(Frag(m, 0, 1480, true));
        h.Send(Frag(m, 1472, 1488, true));   // overlaps the first by 8 bytes
        h.Send(Frag(m, 2960, m.Length - 2960, false));
        h.ExpectNone();
        Assert.Equal(1, h.Counters.Drops(DropReason.IPv4FragmentOverlap));
    }

    [Fact]
    public void A_fragment_past_the_last_one_drops_the_datagram()
    {
        using var h = new StackHarness();
        var m = Message(3000);
        h.Send(Frag(m, 2960, m.Length - 2960, false));
        var beyond = Message(4000);
        h.Send(Frag(beyond, 3008, 800, true));
        h.ExpectNone();
        Assert.Equal(1, h.Counters.Drops(DropReason.IPv4FragmentOverlap));
        Assert.Equal(0, h.Stack.Reassembly.InFlight);
    }

    [Fact]
    public void A_datagram_longer_than_65535_bytes_is_refused()
    {
        using var h = new StackHarness();
        var m = Message(2000);
        h.Send(Frag(m, 0, 1000, true));
        // Offset 65512 + 48 bytes ends at 65560 > 65515.
        var big = new byte[70000];
        h.Send(GuestFrames.Fragment(StackHarness.GuestIp, StackHarness.Gateway, IPv4Packet.ProtocolIcmp, 77, big, 65512, 48, false));
        h.ExpectNone();
        Assert.Equal(1, h.Counters.Drops(DropReason.IPv4FragmentTooLarge));
        Assert.Equal(0, h.Stack.Reassembly.InFlight);
    }

    [Fact]
    public void A_middle_fragment_not_a_multiple_of_8_is_malformed()
    {
        using var h = new StackHarness();
        var m = Message(3000);
        h.Send(Frag(m, 0, 1481, true));
        Assert.Equal(1, h.Counters.Drops(DropReason.IPv4Malformed));
        Assert.Equal(0, h.Stack.Reassembly.InFlight);
    }

    [Fact]
    public void Too_many_datagrams_in_flight_are_refused_and_time_out()
    {
        using var h = new StackHarness();
        var m = Message(1000);
        for (int i = 0; i < IPv4Reassembly.MaxDatagramsInFlight + 3; i++)
            h.Send(Frag(m, 0, 504, true, id: (ushort)(100 + i)));
        Assert.Equal(IPv4Reassembly.MaxDatagramsInFlight, h.Stack.Reassembly.InFlight);
        Assert.Equal(3, h.Counters.Drops(DropReason.IPv4FragmentTableFull));

        long next = h.Stack.Reassembly.OnTimer(h.Loop.NowMs);
        Assert.InRange(next, h.Loop.NowMs + 1, h.Loop.NowMs + IPv4Reassembly.TimeoutMs);
        Assert.Equal(long.MaxValue, h.Stack.Reassembly.OnTimer(h.Loop.NowMs + IPv4Reassembly.TimeoutMs + 1));
        Assert.Equal(0, h.Stack.Reassembly.InFlight);
        Assert.Equal(IPv4Reassembly.MaxDatagramsInFlight, h.Counters.Drops(DropReason.IPv4FragmentTimeout));

        // The slots are free again.
        h.Send(Frag(m, 0, 504, true, id: 1));
        h.Send(Frag(m, 504, m.Length - 504, false, id: 1));
        ExpectEchoReply(h, m);
    }

    [Fact]
    public void A_fragmented_datagram_of_the_maximum_size_is_reassembled()
    {
        // The echo reply is as large as the request, so the guest MTU must allow it.
        var config = new NetworkConfig { Mtu = 65535, DnsUpstream = new[] { new System.Net.IPEndPoint(System.Net.IPAddress.Loopback, 9) } };
        using var h = new StackHarness(config);
        var m = Message(65535 - 20 - 8);
        for (int offset = 0; offset < m.Length; offset += 8000)
            h.Send(Frag(m, offset, Math.Min(8000, m.Length - offset), offset + 8000 < m.Length));
        ExpectEchoReply(h, m);
    }
}
