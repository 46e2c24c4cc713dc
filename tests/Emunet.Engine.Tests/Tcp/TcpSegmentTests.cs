using Emunet.Engine.Wire;

namespace Emunet.Engine.Tests.Tcp;

public class TcpSegmentTests
{
    private static readonly IPv4Address Src = new(10, 0, 2, 15);
    private static readonly IPv4Address Dst = new(10, 0, 2, 2);

    // A SYN from 10.0.2.15:40000 to 10.0.2.2:8080, seq 0x01020304, window 64240, options:
    // MSS 1460, SACK permitted, timestamps (TSval 0x11223344, TSecr 0), NOP, window scale 7 (Linux's layout).
    private static byte[] SynFixture()
    {
        byte[] b =
        {
            0x9c, 0x40, 0x1f, 0x90, 0x01, 0x02, 0x03, 0x04, 0x00, 0x00, 0x00, 0x00, 0xa0, 0x02, 0xfa, 0xf0,
            0x00, 0x00, 0x00, 0x00,
            0x02, 0x04, 0x05, 0xb4, 0x04, 0x02, 0x08, 0x0a, 0x11, 0x22, 0x33, 0x44, 0x00, 0x00, 0x00, 0x00,
            0x01, 0x03, 0x03, 0x07,
        };
        uint sum = Checksum.PseudoHeader(Src, Dst, IPv4Packet.ProtocolTcp, b.Length);
        ushort c = Checksum.Finish(Checksum.Accumulate(sum, b));
        b[16] = (byte)(c >> 8);
        b[17] = (byte)c;
        return b;
    }

    [Fact]
    public void Deconstruct()
    {
        var b = SynFixture();
        Assert.Equal(TcpSegment.ParseError.None, TcpSegment.TryParse(b, Src, Dst, out var s));
        Assert.Equal(40000, s.SourcePort);
        Assert.Equal(8080, s.DestinationPort);
        Assert.Equal(0x01020304u, s.SequenceNumber);
        Assert.Equal(40, s.HeaderLength);
        Assert.Equal(TcpFlags.Syn, s.Flags);
        Assert.True(s.Syn);
        Assert.False(s.Ack);
        Assert.Equal(64240, s.Window);
        Assert.Equal(1, s.SequenceLength);
        Assert.True(s.Payload.IsEmpty);
        var o = s.ParseOptions();
        Assert.False(o.Malformed);
        Assert.Equal(1460, o.MaxSegmentSize);
        Assert.Equal(7, o.WindowScale);
        Assert.True(o.SackPermitted);
        Assert.True(o.HasTimestamps);
        Assert.Equal(0x11223344u, o.TimestampValue);
        Assert.Equal(0u, o.TimestampEcho);
    }

    [Fact]
    public void ConstructMatchesPacketDotNet()
    {
        var payload = "hello, guest"u8.ToArray();
        var packet = TcpHarness.BuildPacket(Dst, Src, 8080, 40000, 0xfffffff0, 0x01020305, TcpFlags.Syn | TcpFlags.Ack, 65535,
            payload, mss: 65480, windowScale: 3);
        var ip = new PacketDotNet.IPv4Packet(new PacketDotNet.Utils.ByteArraySegment(packet));
        var tcp = Assert.IsType<PacketDotNet.TcpPacket>(ip.PayloadPacket);
        Assert.True(tcp.ValidTcpChecksum);
        Assert.Equal(8080, tcp.SourcePort);
        Assert.Equal(40000, tcp.DestinationPort);
        Assert.Equal(0xfffffff0u, tcp.SequenceNumber);
        Assert.Equal(0x01020305u, tcp.AcknowledgmentNumber);
        Assert.True(tcp.Synchronize);
        Assert.True(tcp.Acknowledgment);
        Assert.False(tcp.Finished);
        Assert.Equal(65535, tcp.WindowSize);
        Assert.Equal(payload, tcp.PayloadData);
        Assert.Contains(tcp.OptionsCollection, o => o is PacketDotNet.Tcp.MaximumSegmentSizeOption m && m.Value == 65480);
        Assert.Contains(tcp.OptionsCollection, o => o is PacketDotNet.Tcp.WindowScaleFactorOption w && w.ScaleFactor == 3);
    }

    [Fact]
    public void RoundTrip()
    {
        var packet = TcpHarness.BuildPacket(Src, Dst, 1, 2, 3, 4, TcpFlags.Ack | TcpFlags.Fin, 5, "x"u8);
        var seg = Seg.Parse(packet);
        Assert.Equal((ushort)1, seg.SourcePort);
        Assert.Equal((ushort)2, seg.DestinationPort);
        Assert.Equal(3u, seg.SeqNum);
        Assert.Equal(4u, seg.AckNum);
        Assert.Equal(TcpFlags.Ack | TcpFlags.Fin, seg.Flags);
        Assert.Equal("x"u8.ToArray(), seg.Payload);
        Assert.Equal(-1, seg.Options.MaxSegmentSize);
    }

    [Fact]
    public void Truncated()
    {
        var b = SynFixture();
        Assert.Equal(TcpSegment.ParseError.Truncated, TcpSegment.TryParse(b.AsSpan(0, 19), Src, Dst, out _));
        // The data offset says 40 bytes of header; 39 are present.
        Assert.Equal(TcpSegment.ParseError.BadDataOffset, TcpSegment.TryParse(b.AsSpan(0, 39), Src, Dst, out _));
    }

    [Fact]
    public void BadDataOffset()
    {
        var b = SynFixture();
        b[12] = 0x40; // 16 bytes: shorter than the fixed header
        Assert.Equal(TcpSegment.ParseError.BadDataOffset, TcpSegment.TryParse(b, Src, Dst, out _));
    }

    [Fact]
    public void BadChecksum()
    {
        var b = SynFixture();
        b[5] ^= 1;
        Assert.Equal(TcpSegment.ParseError.BadChecksum, TcpSegment.TryParse(b, Src, Dst, out _));
        // The pseudo-header counts: the right bytes from another address fail too.
        Assert.Equal(TcpSegment.ParseError.BadChecksum, TcpSegment.TryParse(SynFixture(), new IPv4Address(10, 0, 2, 16), Dst, out _));
    }

    [Fact]
    public void OverlongPayloadIsData()
    {
        var packet = TcpHarness.BuildPacket(Src, Dst, 1, 2, 3, 4, TcpFlags.Ack, 5, new byte[1000]);
        Assert.Equal(TcpSegment.ParseError.None, TcpSegment.TryParseUnchecked(packet.AsSpan(20), out var s));
        Assert.Equal(1000, s.Payload.Length);
        Assert.Equal(1000, s.SequenceLength);
    }

    [Fact]
    public void MalformedOptionsStopWithoutReadingPastTheHeader()
    {
        var b = SynFixture();
        b[21] = 40; // MSS option claims 40 bytes
        Assert.Equal(TcpSegment.ParseError.None, TcpSegment.TryParseUnchecked(b, out var s));
        var o = s.ParseOptions();
        Assert.True(o.Malformed);
        Assert.Equal(-1, o.MaxSegmentSize);

        b = SynFixture();
        b[21] = 0; // a zero length would loop forever if taken
        Assert.Equal(TcpSegment.ParseError.None, TcpSegment.TryParseUnchecked(b, out s));
        Assert.True(s.ParseOptions().Malformed);

        b = SynFixture();
        b[38] = 4; // the window scale option (NOP, 3, 3, 7 at the end) now claims 4 bytes: past the header
        Assert.Equal(TcpSegment.ParseError.None, TcpSegment.TryParseUnchecked(b, out s));
        var o2 = s.ParseOptions();
        Assert.True(o2.Malformed);
        Assert.Equal(1460, o2.MaxSegmentSize); // the options before it are kept
    }
}
