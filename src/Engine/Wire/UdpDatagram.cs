using System.Buffers.Binary;

namespace Emunet.Engine.Wire;

/// <summary>
/// A checked view over a UDP datagram (RFC 768).
/// <code>
///  0      7 8     15 16    23 24    31
/// +--------+--------+--------+--------+
/// |     Source      |   Destination   |
/// |      Port       |      Port       |
/// +--------+--------+--------+--------+
/// |     Length      |    Checksum     |
/// +--------+--------+--------+--------+
/// |          data octets ...
/// +---------------- ...
/// </code>
/// </summary>
internal readonly ref struct UdpDatagram
{
    public static class Offsets
    {
        public const int SourcePort = 0;
        public const int DestinationPort = 2;
        public const int Length = 4;
        public const int Checksum = 6;
        public const int Payload = 8;
    }

    public const int HeaderLength = 8;

    /// <summary>The datagram's bytes, cut to its length field.</summary>
    public ReadOnlySpan<byte> Bytes { get; }

    private UdpDatagram(ReadOnlySpan<byte> bytes) => Bytes = bytes;

    /// <summary>
    /// Checks the header and the length field (at least 8, no more than the bytes given). On success the view covers
    /// exactly length bytes and no accessor can fail. The checksum is checked separately.
    /// </summary>
    public static bool TryParse(ReadOnlySpan<byte> bytes, out UdpDatagram datagram)
    {
        datagram = default;
        if (bytes.Length < HeaderLength) return false;
        int length = BinaryPrimitives.ReadUInt16BigEndian(bytes[Offsets.Length..]);
        if (length < HeaderLength || length > bytes.Length) return false;
        datagram = new UdpDatagram(bytes[..length]);
        return true;
    }

    public ushort SourcePort => BinaryPrimitives.ReadUInt16BigEndian(Bytes[Offsets.SourcePort..]);
    public ushort DestinationPort => BinaryPrimitives.ReadUInt16BigEndian(Bytes[Offsets.DestinationPort..]);
    public int Length => Bytes.Length;
    public ushort Checksum => BinaryPrimitives.ReadUInt16BigEndian(Bytes[Offsets.Checksum..]);
    public ReadOnlySpan<byte> Payload => Bytes[Offsets.Payload..];

    /// <summary>RFC 768: a zero checksum means the sender computed none; otherwise the pseudo-header sum must verify.</summary>
    public bool IsChecksumValid(IPv4Address source, IPv4Address destination)
    {
        if (Checksum == 0) return true;
        uint sum = Wire.Checksum.PseudoHeader(source, destination, IPv4Packet.ProtocolUdp, Bytes.Length);
        return Wire.Checksum.Finish(Wire.Checksum.Accumulate(sum, Bytes)) == 0;
    }

    /// <summary>
    /// Writes the header in front of <paramref name="payloadLength"/> bytes already in <paramref name="datagram"/>[8..]
    /// and computes the checksum over the pseudo-header, header and payload.
    /// </summary>
    /// <returns>The datagram length (header included).</returns>
    public static int WriteHeader(Span<byte> datagram, IPv4Address source, IPv4Address destination, ushort sourcePort,
        ushort destinationPort, int payloadLength)
    {
        int length = checked(HeaderLength + payloadLength);
        if (length > ushort.MaxValue) throw new ArgumentOutOfRangeException(nameof(payloadLength));
        BinaryPrimitives.WriteUInt16BigEndian(datagram[Offsets.SourcePort..], sourcePort);
        BinaryPrimitives.WriteUInt16BigEndian(datagram[Offsets.DestinationPort..], destinationPort);
        BinaryPrimitives.WriteUInt16BigEndian(datagram[Offsets.Length..], (ushort)length);
        BinaryPrimitives.WriteUInt16BigEndian(datagram[Offsets.Checksum..], 0);
        uint sum = Wire.Checksum.PseudoHeader(source, destination, IPv4Packet.ProtocolUdp, length);
        ushort c = Wire.Checksum.Finish(Wire.Checksum.Accumulate(sum, datagram[..length]));
        // RFC 768: a computed zero is sent as all ones (zero means "no checksum").
        BinaryPrimitives.WriteUInt16BigEndian(datagram[Offsets.Checksum..], c == 0 ? (ushort)0xffff : c);
        return length;
    }
}
