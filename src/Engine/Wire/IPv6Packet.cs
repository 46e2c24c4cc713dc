using System.Buffers.Binary;

namespace Emunet.Engine.Wire;

/// <summary>
/// A checked view over an IPv6 packet (RFC 8200 §3).
/// <code>
///  0                   1                   2                   3
///  0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
/// +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
/// |Version| Traffic Class |           Flow Label                  |
/// |         Payload Length        |  Next Header  |   Hop Limit   |
/// |                     Source Address (128 bits)                 |
/// |                  Destination Address (128 bits)               |
/// +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
/// </code>
/// </summary>
internal readonly ref struct IPv6Packet
{
    public static class Offsets
    {
        public const int VersionClassFlow = 0;
        public const int PayloadLength = 4;
        public const int NextHeader = 6;
        public const int HopLimit = 7;
        public const int Source = 8;
        public const int Destination = 24;
        public const int Payload = 40;
    }

    public const int HeaderLength = 40;
    /// <summary>RFC 8200 §5: every link carries at least 1280 bytes.</summary>
    public const int MinimumMtu = 1280;

    public const byte NextHeaderHopByHop = 0;
    public const byte NextHeaderTcp = 6;
    public const byte NextHeaderUdp = 17;
    public const byte NextHeaderRouting = 43;
    public const byte NextHeaderFragment = 44;
    public const byte NextHeaderIcmpv6 = 58;
    public const byte NextHeaderNone = 59;
    public const byte NextHeaderDestinationOptions = 60;

    public enum ParseError { None, Truncated, BadVersion, BadPayloadLength }

    /// <summary>The packet's bytes, cut to header plus payload length (Ethernet padding removed).</summary>
    public ReadOnlySpan<byte> Bytes { get; }

    private IPv6Packet(ReadOnlySpan<byte> bytes) => Bytes = bytes;

    /// <summary>
    /// Checks version and payload length. On success the view covers exactly 40 + payload-length bytes and no accessor
    /// can fail. A jumbogram (payload length 0 with a hop-by-hop jumbo option, RFC 2675) is refused: no link here
    /// carries one.
    /// </summary>
    public static ParseError TryParse(ReadOnlySpan<byte> bytes, out IPv6Packet packet)
    {
        packet = default;
        if (bytes.Length < HeaderLength) return ParseError.Truncated;
        if (bytes[Offsets.VersionClassFlow] >> 4 != 6) return ParseError.BadVersion;
        int payload = BinaryPrimitives.ReadUInt16BigEndian(bytes[Offsets.PayloadLength..]);
        if (payload > bytes.Length - HeaderLength) return ParseError.BadPayloadLength;
        packet = new IPv6Packet(bytes[..(HeaderLength + payload)]);
        return ParseError.None;
    }

    public byte TrafficClass => (byte)(BinaryPrimitives.ReadUInt16BigEndian(Bytes) >> 4);
    public uint FlowLabel => BinaryPrimitives.ReadUInt32BigEndian(Bytes) & 0xf_ffff;
    public int PayloadLength => Bytes.Length - HeaderLength;
    public byte NextHeader => Bytes[Offsets.NextHeader];
    public byte HopLimit => Bytes[Offsets.HopLimit];
    public IPv6Address Source => IPv6Address.Read(Bytes[Offsets.Source..]);
    public IPv6Address Destination => IPv6Address.Read(Bytes[Offsets.Destination..]);
    public ReadOnlySpan<byte> Payload => Bytes[HeaderLength..];

    /// <summary>Writes the 40-byte header; <paramref name="payloadLength"/> excludes it.</summary>
    public static void WriteHeader(Span<byte> buffer, IPv6Address source, IPv6Address destination, byte nextHeader,
        int payloadLength, byte hopLimit = 64, byte trafficClass = 0)
    {
        BinaryPrimitives.WriteUInt32BigEndian(buffer, 0x6000_0000u | (uint)trafficClass << 20);
        BinaryPrimitives.WriteUInt16BigEndian(buffer[Offsets.PayloadLength..], checked((ushort)payloadLength));
        buffer[Offsets.NextHeader] = nextHeader;
        buffer[Offsets.HopLimit] = hopLimit;
        source.Write(buffer[Offsets.Source..]);
        destination.Write(buffer[Offsets.Destination..]);
    }

    /// <summary>The IPv6 pseudo-header sum for upper-layer checksums (RFC 8200 §8.1), not folded.</summary>
    public static uint PseudoHeader(IPv6Address source, IPv6Address destination, byte nextHeader, int length)
    {
        ulong acc = Words(source.High) + Words(source.Low) + Words(destination.High) + Words(destination.Low)
                    + (uint)length + nextHeader;
        while ((acc >> 32) != 0) acc = (acc & 0xffffffff) + (acc >> 32);
        return (uint)acc;

        static ulong Words(ulong v) => (v >> 32) + (v & 0xffff_ffff);
    }

    /// <summary>The checksum of an upper-layer message with its pseudo-header (0 when a received one is valid).</summary>
    public static ushort UpperLayerChecksum(IPv6Address source, IPv6Address destination, byte nextHeader, ReadOnlySpan<byte> message) =>
        Checksum.Finish(Checksum.Accumulate(PseudoHeader(source, destination, nextHeader, message.Length), message));

    /// <summary>
    /// Writes the UDP header of <paramref name="datagram"/> (payload already behind it, <paramref name="length"/>
    /// including the header) with its checksum, which IPv6 makes mandatory (RFC 8200 §8.1: a zero result goes as 0xffff).
    /// </summary>
    public static void WriteUdpHeader(Span<byte> datagram, IPv6Address source, IPv6Address destination, ushort sourcePort,
        ushort destinationPort, int length)
    {
        BinaryPrimitives.WriteUInt16BigEndian(datagram, sourcePort);
        BinaryPrimitives.WriteUInt16BigEndian(datagram[2..], destinationPort);
        BinaryPrimitives.WriteUInt16BigEndian(datagram[4..], checked((ushort)length));
        BinaryPrimitives.WriteUInt16BigEndian(datagram[6..], 0);
        ushort c = UpperLayerChecksum(source, destination, NextHeaderUdp, datagram[..length]);
        BinaryPrimitives.WriteUInt16BigEndian(datagram[6..], c == 0 ? (ushort)0xffff : c);
    }
}
