using Emunet.Engine.Diagnostics;
using Emunet.Engine.Runtime;
using Emunet.Engine.Stack.IPv6;
using Emunet.Engine.Wire;
using static Emunet.Engine.Tests.Stack.IPv6.GuestFrames6;
using IPv6Packet = Emunet.Engine.Wire.IPv6Packet;

namespace Emunet.Engine.Tests.Stack.IPv6;

public class IPv6ReassemblyTests
{
    /// <summary>A fragment: optional destination options before the fragment header, then <paramref name="data"/>.</summary>
    private static byte[] Fragment(byte upper, int offset, bool more, uint id, byte[] data, bool destinationOptions = false)
    {
        var ext = new List<byte>();
        byte first = IPv6Packet.NextHeaderFragment;
        if (destinationOptions)
        {
            first = IPv6Packet.NextHeaderDestinationOptions;
            ext.AddRange(new byte[] { IPv6Packet.NextHeaderFragment, 0, 1, 4, 0, 0, 0, 0 });   // PadN
        }
        ushort word = (ushort)((offset / 8) << 3 | (more ? 1 : 0));
        ext.AddRange(new[] { upper, (byte)0, (byte)(word >> 8), (byte)word, (byte)(id >> 24), (byte)(id >> 16), (byte)(id >> 8), (byte)id });
        ext.AddRange(data);
        return Packet(GuestGlobal, HostAlias, first, ext.ToArray());
    }

    private static bool Add(IPv6Reassembly r, byte[] packetBytes, out byte[] whole)
    {
        Assert.Equal(IPv6Packet.ParseError.None, IPv6Packet.TryParse(packetBytes, out var p));
        Assert.Equal(IPv6ExtensionHeaders.WalkError.None, IPv6ExtensionHeaders.Walk(p.NextHeader, p.Payload, out var chain));
        bool done = r.Add(in p, in chain, out var datagram);
        whole = datagram.ToArray();
        return done;
    }

    private static byte[] Data(int n, int seed) => Enumerable.Range(0, n).Select(i => (byte)(i * 7 + seed)).ToArray();

    [Theory]
    [InlineData(false, false)]
    [InlineData(true, false)]
    [InlineData(false, true)]
    public void Fragments_in_any_order_make_the_datagram(bool reversed, bool destinationOptions)
    {
        using var loop = new EventLoop();
        var counters = new Counters();
        var r = new IPv6Reassembly(loop, counters);
        var data = Data(3000, 1);
        var parts = new[]
        {
            Fragment(IPv6Packet.NextHeaderUdp, 0, true, 42, data[..1232], destinationOptions),
            Fragment(IPv6Packet.NextHeaderUdp, 1232, true, 42, data[1232..2464], destinationOptions),
            Fragment(IPv6Packet.NextHeaderUdp, 2464, false, 42, data[2464..], destinationOptions),
        };
        if (reversed) Array.Reverse(parts);
        Assert.False(Add(r, parts[0], out _));
        Assert.False(Add(r, parts[1], out _));
        Assert.True(Add(r, parts[2], out var whole));
        Assert.Equal(IPv6Packet.ParseError.None, IPv6Packet.TryParse(whole, out var p));
        Assert.Equal(IPv6ExtensionHeaders.WalkError.None, IPv6ExtensionHeaders.Walk(p.NextHeader, p.Payload, out var chain));
        Assert.False(chain.HasFragment);
        Assert.Equal(IPv6Packet.NextHeaderUdp, chain.UpperLayer);
        Assert.Equal(data, p.Payload[chain.UpperLayerOffset..].ToArray());
        // The oracle agrees on the reassembled header.
        var oracle = new PacketDotNet.IPv6Packet(new PacketDotNet.Utils.ByteArraySegment(whole));
        Assert.Equal(p.PayloadLength, oracle.PayloadLength);
        Assert.Equal(0, r.InFlight);
    }

    [Fact]
    public void An_overlap_discards_the_whole_datagram()
    {
        using var loop = new EventLoop();
        var counters = new Counters();
        var r = new IPv6Reassembly(loop, counters);
        var data = Data(2000, 2);
        Assert.False(Add(r, Fragment(17, 0, true, 9, data[..1000]), out _));
        // RFC 5722: 992..1992 overlaps 0..1000.
        Assert.False(Add(r, Fragment(17, 992, false, 9, data[992..]), out _));
        Assert.Equal(1, counters.Drops(DropReason.IPv6FragmentOverlap));
        Assert.Equal(0, r.InFlight);
        // The rest of the datagram is not accepted as a new one that completes.
        Assert.False(Add(r, Fragment(17, 1000, false, 9, data[1000..]), out _));
    }

    [Fact]
    public void A_datagram_past_65535_bytes_is_refused()
    {
        using var loop = new EventLoop();
        var counters = new Counters();
        var r = new IPv6Reassembly(loop, counters);
        Assert.False(Add(r, Fragment(17, 65528, false, 3, new byte[16]), out _));
        Assert.Equal(1, counters.Drops(DropReason.IPv6FragmentTooLarge));
    }

    [Fact]
    public void A_middle_fragment_not_a_multiple_of_8_is_refused()
    {
        using var loop = new EventLoop();
        var counters = new Counters();
        var r = new IPv6Reassembly(loop, counters);
        Assert.False(Add(r, Fragment(17, 0, true, 3, new byte[100]), out _));
        Assert.Equal(1, counters.Drops(DropReason.IPv6Malformed));
    }

    [Fact]
    public void The_table_is_bounded()
    {
        using var loop = new EventLoop();
        var counters = new Counters();
        var r = new IPv6Reassembly(loop, counters);
        for (uint id = 0; id < IPv6Reassembly.MaxDatagramsInFlight + 4; id++) Add(r, Fragment(17, 0, true, id, new byte[8]), out _);
        Assert.Equal(IPv6Reassembly.MaxDatagramsInFlight, r.InFlight);
        Assert.Equal(4, counters.Drops(DropReason.IPv6FragmentTableFull));
        r.OnTimer(loop.NowMs + IPv6Reassembly.TimeoutMs + 1);
        Assert.Equal(0, r.InFlight);
        Assert.Equal(IPv6Reassembly.MaxDatagramsInFlight, counters.Drops(DropReason.IPv6FragmentTimeout));
    }

    [Fact]
    public void Fragmented_echo_through_the_stack_is_answered_whole()
    {
        using var h = new StackHarness();
        var echo = new byte[8 + 2000];
        echo[0] = Icmpv6Packet.TypeEchoRequest;
        echo[5] = 1; echo[7] = 1;
        Data(2000, 3).CopyTo(echo, 8);
        Icmpv6Packet.FinishChecksum(echo, GuestGlobal, HostAlias);
        var first = Fragment(IPv6Packet.NextHeaderIcmpv6, 0, true, 77, echo[..1200]);
        var second = Fragment(IPv6Packet.NextHeaderIcmpv6, 1200, false, 77, echo[1200..]);
        h.Send(Emunet.Engine.Tests.Stack.GuestFrames.Ethernet(h.GatewayMac, EthernetFrame.EtherTypeIPv6, first));
        h.ExpectNone();
        h.Send(Emunet.Engine.Tests.Stack.GuestFrames.Ethernet(h.GatewayMac, EthernetFrame.EtherTypeIPv6, second));
        var (ip, icmp) = NdpTests.ExpectIcmp(h, out _);
        // One unfragmented reply (no fragments toward the guest).
        Assert.Empty(ip.ExtensionHeaders);
        Assert.Equal(Icmpv6Packet.TypeEchoReply, icmp[0]);
        Assert.Equal(echo.Length, icmp.Length);
    }

    [Fact]
    public void Hostile_chains_through_the_stack_are_counted()
    {
        using var h = new StackHarness();
        var loop = new byte[8 * 20];
        for (int i = 0; i < loop.Length; i += 8) loop[i] = IPv6Packet.NextHeaderDestinationOptions;
        h.Send(Frame(GuestGlobal, HostAlias, IPv6Packet.NextHeaderDestinationOptions, loop));
        var truncated = new byte[] { IPv6Packet.NextHeaderUdp, 5, 0, 0, 0, 0, 0, 0 };
        h.Send(Frame(GuestGlobal, HostAlias, IPv6Packet.NextHeaderHopByHop, truncated));
        h.ExpectNone();
        Assert.Equal(2, h.Counters.Drops(DropReason.IPv6ExtensionChainRefused));
    }
}
