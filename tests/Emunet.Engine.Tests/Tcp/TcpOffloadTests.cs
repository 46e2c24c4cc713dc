using Emunet.Engine.Link;
using Emunet.Engine.Wire;

namespace Emunet.Engine.Tests.Tcp;

/// <summary>
/// The TCP sender's one question to the device (Link offloads): how large a segment toward the guest may be and
/// whether its checksum is left partial. The harness's sender plays the device: it checks the pseudo-header sum and
/// finishes the checksum, so every segment is also checked as the guest would see it.
/// </summary>
public class TcpOffloadTests
{
    /// <summary>
    /// With <paramref name="direct"/> the device takes segments in pieces (direct receive): the header built apart and
    /// the payload where it lies in the send ring, two pieces where the ring wraps; the guest must see the same bytes.
    /// </summary>
    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public void With_device_segmentation_data_goes_to_the_guest_in_frames_of_whole_MSS_multiples_with_partial_checksums(bool direct)
    {
        using var h = new TcpHarness();
        h.Sender.Offloads = LinkOffloads.PartialChecksum | LinkOffloads.TcpSegmentation;
        h.Sender.Direct = direct;
        using var server = HostSide.Listen();
        var flow = h.Connect(HostSide.Port(server), mss: 1460);
        using var host = HostSide.Accept(server);
        h.Sender.PacketOffloads.Clear(); // the SYN-ACK's

        var data = HostSide.Pattern(3_000_000, 4); // more than a send ring holds: the ring wraps
        var writer = new Thread(() => host.Send(data)) { IsBackground = true };
        writer.Start();
        var got = new MemoryStream();
        int larger = 0;
        while (got.Length < data.Length)
        {
            var s = h.Next();
            Assert.True(h.Sender.PacketOffloads.TryDequeue(out var offload));
            Assert.True(offload.PartialChecksum, $"full checksum computed: {s}");
            Assert.Equal(0, offload.ChecksumStart); // counted from the TCP header
            Assert.Equal(TcpSegment.Offsets.Checksum, offload.ChecksumOffset);
            // A retransmission (the ACK came late on a loaded machine) starts at or before what the guest has; it must
            // carry the same bytes, and only what is new counts.
            int already = (int)(flow.Rcv - s.SeqNum);
            Assert.True(already >= 0, $"a segment beyond what was acknowledged: {s}");
            Assert.True(s.Payload.SequenceEqual(data.AsSpan((int)got.Length - already, s.Payload.Length)), $"retransmitted bytes differ: {s}");
            already = Math.Min(already, s.Payload.Length); // wholly old: nothing new
            if (s.Payload.Length > 1460)
            {
                larger++;
                Assert.Equal(1460, offload.SegmentSize); // the guest cuts it at its own MSS
                Assert.Equal(20, offload.HeaderLength);
                Assert.True(s.Payload.Length <= ushort.MaxValue - 20 - 60, $"beyond one IPv4 packet: {s}");
            }
            else Assert.Equal(0, offload.SegmentSize);
            got.Write(s.Payload[already..]);
            flow.Rcv += (uint)(s.Payload.Length - already);
            h.Ack(flow);
        }
        Assert.Equal(data, got.ToArray());
        Assert.True(larger > 0, "no segment larger than the MSS went out");
        Assert.True(writer.Join(TcpHarness.Timeout));
        if (direct)
        {
            Assert.True(h.Sender.DirectSent > 0 && h.Sender.DirectSent == h.Sender.Committed, $"{h.Sender.Committed - h.Sender.DirectSent} of {h.Sender.Committed} packets went through a lease");
            Assert.True(h.Sender.DirectWrapped > 0, "no segment came from both ends of a wrapped send ring");
        }
        else Assert.Equal(0, h.Sender.DirectSent);
    }

    [Fact]
    public void Checksum_offload_alone_keeps_segments_at_the_MSS()
    {
        using var h = new TcpHarness();
        h.Sender.Offloads = LinkOffloads.PartialChecksum;
        using var server = HostSide.Listen();
        var flow = h.Connect(HostSide.Port(server), mss: 1000);
        using var host = HostSide.Accept(server);
        h.Sender.PacketOffloads.Clear();
        var data = HostSide.Pattern(30_000, 5);
        host.Send(data);
        var got = new MemoryStream();
        while (got.Length < data.Length)
        {
            var s = h.Next();
            Assert.True(h.Sender.PacketOffloads.TryDequeue(out var offload));
            Assert.True(offload.PartialChecksum);
            Assert.Equal(0, offload.SegmentSize);
            Assert.InRange(s.Payload.Length, 1, 1000);
            got.Write(s.Payload);
            flow.Rcv += (uint)s.Payload.Length;
            h.Ack(flow);
        }
        Assert.Equal(data, got.ToArray());
    }
}
