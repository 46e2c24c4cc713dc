using System.Buffers.Binary;

namespace Emunet.Engine.Wire;

/// <summary>TCP control bits (RFC 9293 §3.1, RFC 3168 for ECE/CWR).</summary>
[Flags]
internal enum TcpFlags : byte
{
    None = 0,
    Fin = 0x01,
    Syn = 0x02,
    Rst = 0x04,
    Psh = 0x08,
    Ack = 0x10,
    Urg = 0x20,
    Ece = 0x40,
    Cwr = 0x80,
}

/// <summary>The options of a segment Emunet understands (RFC 9293 §3.2, RFC 7323, RFC 2018). Absent ones are -1/false.</summary>
internal struct TcpOptions
{
    /// <summary>Maximum segment size (kind 2), or -1.</summary>
    public int MaxSegmentSize;
    /// <summary>Window scale shift (kind 3) as sent (may exceed 14; RFC 7323 §2.3 says use 14 then), or -1.</summary>
    public int WindowScale;
    /// <summary>SACK permitted (kind 4).</summary>
    public bool SackPermitted;
    /// <summary>Timestamps (kind 8) present.</summary>
    public bool HasTimestamps;
    public uint TimestampValue;
    public uint TimestampEcho;
    /// <summary>An option ran past the header or had a bad length; the ones parsed before it are kept.</summary>
    public bool Malformed;

    public static TcpOptions None => new() { MaxSegmentSize = -1, WindowScale = -1 };
}

/// <summary>
/// A checked view over a TCP segment (RFC 9293 §3.1).
/// <code>
///  0                   1                   2                   3
///  0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
/// +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
/// |          Source Port          |       Destination Port        |
/// +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
/// |                        Sequence Number                        |
/// +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
/// |                    Acknowledgment Number                      |
/// +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
/// |  Data |       |C|E|U|A|P|R|S|F|                               |
/// | Offset| Rsrvd |W|C|R|C|S|S|Y|I|            Window             |
/// |       |       |R|E|G|K|H|T|N|N|                               |
/// +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
/// |           Checksum            |         Urgent Pointer        |
/// +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
/// |                           [Options]                           |
/// +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
/// |                             data                              |
/// +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
/// </code>
/// </summary>
internal readonly ref struct TcpSegment
{
    public static class Offsets
    {
        public const int SourcePort = 0;
        public const int DestinationPort = 2;
        public const int SequenceNumber = 4;
        public const int AcknowledgmentNumber = 8;
        public const int DataOffset = 12;
        public const int Flags = 13;
        public const int Window = 14;
        public const int Checksum = 16;
        public const int UrgentPointer = 18;
        public const int Options = 20;
    }

    public const int MinHeaderLength = 20;
    public const int MaxHeaderLength = 60;

    public static class OptionKind
    {
        public const byte End = 0;
        public const byte Nop = 1;
        public const byte MaxSegmentSize = 2;
        public const byte WindowScale = 3;
        public const byte SackPermitted = 4;
        public const byte Sack = 5;
        public const byte Timestamps = 8;
    }

    public enum ParseError { None, Truncated, BadDataOffset, BadChecksum }

    /// <summary>The segment's bytes: header, options and data.</summary>
    public ReadOnlySpan<byte> Bytes { get; }

    /// <summary>
    /// The header length checked at parse time, kept so that bytes changing under the view (guest memory shared with a
    /// running guest) cannot move the payload boundary past the end.
    /// </summary>
    public int HeaderLength { get; }

    private TcpSegment(ReadOnlySpan<byte> bytes, int headerLength)
    {
        Bytes = bytes;
        HeaderLength = headerLength;
    }

    /// <summary>
    /// Checks the header length and the checksum over the IPv4 pseudo-header (RFC 9293 §3.1). On success no accessor can fail.
    /// </summary>
    public static ParseError TryParse(ReadOnlySpan<byte> bytes, IPv4Address source, IPv4Address destination, out TcpSegment segment) =>
        TryParse(bytes, Wire.Checksum.PseudoHeader(source, destination, IPv4Packet.ProtocolTcp, 0), out segment);

    /// <summary>
    /// As the IPv4 overload, with the pseudo-header sum of either family given without its length
    /// (<see cref="IPv6Packet.PseudoHeader"/> for IPv6, RFC 8200 §8.1).
    /// </summary>
    public static ParseError TryParse(ReadOnlySpan<byte> bytes, uint pseudoHeaderBase, out TcpSegment segment)
    {
        var error = TryParseUnchecked(bytes, out segment);
        if (error != ParseError.None) return error;
        // Both families' length fields hold any segment a 16-bit payload length carries.
        uint sum = AddLength(pseudoHeaderBase, bytes.Length);
        if (Wire.Checksum.Finish(Wire.Checksum.Accumulate(sum, bytes)) != 0)
        {
            segment = default;
            return ParseError.BadChecksum;
        }
        return ParseError.None;
    }

    /// <summary>Adds a length to a pseudo-header sum, folded back to 32 bits.</summary>
    internal static uint AddLength(uint pseudoHeaderBase, int length)
    {
        ulong acc = (ulong)pseudoHeaderBase + (uint)length;
        while ((acc >> 32) != 0) acc = (acc & 0xffffffff) + (acc >> 32);
        return (uint)acc;
    }

    /// <summary>Checks the header length only (no checksum).</summary>
    public static ParseError TryParseUnchecked(ReadOnlySpan<byte> bytes, out TcpSegment segment)
    {
        segment = default;
        if (bytes.Length < MinHeaderLength) return ParseError.Truncated;
        int offset = (bytes[Offsets.DataOffset] >> 4) * 4;
        if (offset < MinHeaderLength || offset > bytes.Length) return ParseError.BadDataOffset;
        segment = new TcpSegment(bytes, offset);
        return ParseError.None;
    }

    public ushort SourcePort => BinaryPrimitives.ReadUInt16BigEndian(Bytes[Offsets.SourcePort..]);
    public ushort DestinationPort => BinaryPrimitives.ReadUInt16BigEndian(Bytes[Offsets.DestinationPort..]);
    public uint SequenceNumber => BinaryPrimitives.ReadUInt32BigEndian(Bytes[Offsets.SequenceNumber..]);
    public uint AcknowledgmentNumber => BinaryPrimitives.ReadUInt32BigEndian(Bytes[Offsets.AcknowledgmentNumber..]);
    public TcpFlags Flags => (TcpFlags)Bytes[Offsets.Flags];
    public ushort Window => BinaryPrimitives.ReadUInt16BigEndian(Bytes[Offsets.Window..]);
    public ushort Checksum => BinaryPrimitives.ReadUInt16BigEndian(Bytes[Offsets.Checksum..]);
    public ushort UrgentPointer => BinaryPrimitives.ReadUInt16BigEndian(Bytes[Offsets.UrgentPointer..]);
    public ReadOnlySpan<byte> OptionBytes => Bytes[Offsets.Options..HeaderLength];
    public ReadOnlySpan<byte> Payload => Bytes[HeaderLength..];

    public bool Syn => (Bytes[Offsets.Flags] & (byte)TcpFlags.Syn) != 0;
    public bool Ack => (Bytes[Offsets.Flags] & (byte)TcpFlags.Ack) != 0;
    public bool Fin => (Bytes[Offsets.Flags] & (byte)TcpFlags.Fin) != 0;
    public bool Rst => (Bytes[Offsets.Flags] & (byte)TcpFlags.Rst) != 0;

    /// <summary>Sequence space the segment occupies: data plus one for SYN and one for FIN (RFC 9293 §3.4).</summary>
    public int SequenceLength => Payload.Length + (Syn ? 1 : 0) + (Fin ? 1 : 0);

    /// <summary>Parses the options (RFC 9293 §3.2). Never reads past the header; a bad option stops the walk.</summary>
    public TcpOptions ParseOptions()
    {
        var o = TcpOptions.None;
        var opts = OptionBytes;
        int i = 0;
        while (i < opts.Length)
        {
            byte kind = opts[i];
            if (kind == OptionKind.End) break;
            if (kind == OptionKind.Nop) { i++; continue; }
            // RFC 9293 §3.2: every other option has a length octet that counts kind and length.
            if (i + 1 >= opts.Length) { o.Malformed = true; break; }
            int len = opts[i + 1];
            if (len < 2 || i + len > opts.Length) { o.Malformed = true; break; }
            var body = opts.Slice(i + 2, len - 2);
            switch (kind)
            {
                case OptionKind.MaxSegmentSize when len == 4:
                    o.MaxSegmentSize = BinaryPrimitives.ReadUInt16BigEndian(body);
                    break;
                case OptionKind.WindowScale when len == 3:
                    o.WindowScale = body[0];
                    break;
                case OptionKind.SackPermitted when len == 2:
                    o.SackPermitted = true;
                    break;
                case OptionKind.Timestamps when len == 10:
                    o.HasTimestamps = true;
                    o.TimestampValue = BinaryPrimitives.ReadUInt32BigEndian(body);
                    o.TimestampEcho = BinaryPrimitives.ReadUInt32BigEndian(body[4..]);
                    break;
                case OptionKind.MaxSegmentSize or OptionKind.WindowScale or OptionKind.SackPermitted or OptionKind.Timestamps:
                    o.Malformed = true;
                    break;
            }
            i += len;
        }
        return o;
    }
}

/// <summary>The header fields of a segment to emit (options limited to what Emunet sends: MSS and window scale).</summary>
internal struct TcpFields
{
    public ushort SourcePort;
    public ushort DestinationPort;
    public uint SequenceNumber;
    public uint AcknowledgmentNumber;
    public TcpFlags Flags;
    public ushort Window;
    /// <summary>MSS option value, or 0 for none.</summary>
    public ushort MaxSegmentSize;
    /// <summary>Window scale option shift, or -1 for none.</summary>
    public int WindowScale;

    /// <summary>Header length with options, padded to 32 bits.</summary>
    public readonly int HeaderLength =>
        TcpSegment.MinHeaderLength + (MaxSegmentSize != 0 ? 4 : 0) + (WindowScale >= 0 ? 4 : 0);

    /// <summary>
    /// Writes the header (and options) at the start of <paramref name="segment"/>, in front of
    /// <paramref name="payloadLength"/> bytes already at <paramref name="segment"/>[HeaderLength..], then the checksum
    /// over pseudo-header, header and payload. With <paramref name="partialChecksum"/> the checksum field gets only the
    /// folded pseudo-header sum (not complemented), and whoever completes it sums the segment from its first byte and
    /// stores the complement there (RFC 1071; a device offload, VIRTIO 1.2 §5.1.6.4 NEEDS_CSUM).
    /// </summary>
    /// <returns>The segment length.</returns>
    public readonly int Emit(Span<byte> segment, IPv4Address source, IPv4Address destination, int payloadLength, bool partialChecksum = false) =>
        Emit(segment, Checksum.PseudoHeader(source, destination, IPv4Packet.ProtocolTcp, 0), payloadLength, partialChecksum);

    /// <summary>As the IPv4 overload, with the pseudo-header sum of either family given without its length.</summary>
    public readonly int Emit(Span<byte> segment, uint pseudoHeaderBase, int payloadLength, bool partialChecksum = false)
    {
        int hl = HeaderLength;
        int length = hl + payloadLength;
        BinaryPrimitives.WriteUInt16BigEndian(segment[TcpSegment.Offsets.SourcePort..], SourcePort);
        BinaryPrimitives.WriteUInt16BigEndian(segment[TcpSegment.Offsets.DestinationPort..], DestinationPort);
        BinaryPrimitives.WriteUInt32BigEndian(segment[TcpSegment.Offsets.SequenceNumber..], SequenceNumber);
        BinaryPrimitives.WriteUInt32BigEndian(segment[TcpSegment.Offsets.AcknowledgmentNumber..], AcknowledgmentNumber);
        segment[TcpSegment.Offsets.DataOffset] = (byte)(hl / 4 << 4);
        segment[TcpSegment.Offsets.Flags] = (byte)Flags;
        BinaryPrimitives.WriteUInt16BigEndian(segment[TcpSegment.Offsets.Window..], Window);
        BinaryPrimitives.WriteUInt16BigEndian(segment[TcpSegment.Offsets.Checksum..], 0);
        BinaryPrimitives.WriteUInt16BigEndian(segment[TcpSegment.Offsets.UrgentPointer..], 0);
        int o = TcpSegment.Offsets.Options;
        if (MaxSegmentSize != 0)
        {
            segment[o] = TcpSegment.OptionKind.MaxSegmentSize;
            segment[o + 1] = 4;
            BinaryPrimitives.WriteUInt16BigEndian(segment[(o + 2)..], MaxSegmentSize);
            o += 4;
        }
        if (WindowScale >= 0)
        {
            segment[o] = TcpSegment.OptionKind.Nop;
            segment[o + 1] = TcpSegment.OptionKind.WindowScale;
            segment[o + 2] = 3;
            segment[o + 3] = (byte)WindowScale;
        }
        uint sum = TcpSegment.AddLength(pseudoHeaderBase, length);
        BinaryPrimitives.WriteUInt16BigEndian(segment[TcpSegment.Offsets.Checksum..],
            partialChecksum ? (ushort)~Checksum.Finish(sum) : Checksum.Finish(Checksum.Accumulate(sum, segment[..length])));
        return length;
    }
}
