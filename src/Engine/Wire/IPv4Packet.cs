using System.Buffers.Binary;

namespace Emunet.Engine.Wire;

/// <summary>
/// A checked view over an IPv4 packet (RFC 791 §3.1).
/// <code>
///  0                   1                   2                   3
///  0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
/// +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
/// |Version|  IHL  |Type of Service|          Total Length         |
/// |         Identification        |Flags|      Fragment Offset    |
/// |  Time to Live |    Protocol   |         Header Checksum       |
/// |                       Source Address                          |
/// |                    Destination Address                        |
/// |                    Options                    |    Padding    |
/// +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
/// </code>
/// </summary>
internal readonly ref struct IPv4Packet
{
    public static class Offsets
    {
        public const int VersionIhl = 0;
        public const int Tos = 1;
        public const int TotalLength = 2;
        public const int Identification = 4;
        public const int FlagsFragment = 6;
        public const int Ttl = 8;
        public const int Protocol = 9;
        public const int Checksum = 10;
        public const int Source = 12;
        public const int Destination = 16;
    }

    public const int MinHeaderLength = 20;
    public const byte ProtocolIcmp = 1;
    public const byte ProtocolTcp = 6;
    public const byte ProtocolUdp = 17;

    public enum ParseError { None, Truncated, BadVersion, BadHeaderLength, BadTotalLength, BadChecksum }

    /// <summary>The packet's bytes, cut to its total length (Ethernet padding removed).</summary>
    public ReadOnlySpan<byte> Bytes { get; }

    private IPv4Packet(ReadOnlySpan<byte> bytes) => Bytes = bytes;

    /// <summary>
    /// Checks version, header length, total length and the header checksum. On success the view covers exactly
    /// total-length bytes and no accessor can fail.
    /// </summary>
    public static ParseError TryParse(ReadOnlySpan<byte> bytes, out IPv4Packet packet)
    {
        packet = default;
        if (bytes.Length < MinHeaderLength) return ParseError.Truncated;
        byte vihl = bytes[Offsets.VersionIhl];
        if (vihl >> 4 != 4) return ParseError.BadVersion;
        int ihl = (vihl & 0xf) * 4;
        if (ihl < MinHeaderLength || ihl > bytes.Length) return ParseError.BadHeaderLength;
        int total = BinaryPrimitives.ReadUInt16BigEndian(bytes[Offsets.TotalLength..]);
        // RFC 791: total length includes the header; a frame may carry trailing padding, never less.
        if (total < ihl || total > bytes.Length) return ParseError.BadTotalLength;
        if (Checksum.Compute(bytes[..ihl]) != 0) return ParseError.BadChecksum;
        packet = new IPv4Packet(bytes[..total]);
        return ParseError.None;
    }

    public int HeaderLength => (Bytes[Offsets.VersionIhl] & 0xf) * 4;
    public int TotalLength => Bytes.Length;
    public byte Tos => Bytes[Offsets.Tos];
    public ushort Identification => BinaryPrimitives.ReadUInt16BigEndian(Bytes[Offsets.Identification..]);
    public bool DontFragment => (Bytes[Offsets.FlagsFragment] & 0x40) != 0;
    public bool MoreFragments => (Bytes[Offsets.FlagsFragment] & 0x20) != 0;
    /// <summary>Fragment offset in bytes.</summary>
    public int FragmentOffset => (BinaryPrimitives.ReadUInt16BigEndian(Bytes[Offsets.FlagsFragment..]) & 0x1fff) * 8;
    public bool IsFragment => MoreFragments || FragmentOffset != 0;
    public byte Ttl => Bytes[Offsets.Ttl];
    public byte Protocol => Bytes[Offsets.Protocol];
    public IPv4Address Source => IPv4Address.Read(Bytes[Offsets.Source..]);
    public IPv4Address Destination => IPv4Address.Read(Bytes[Offsets.Destination..]);
    public ReadOnlySpan<byte> Header => Bytes[..HeaderLength];
    public ReadOnlySpan<byte> Payload => Bytes[HeaderLength..];

    /// <summary>
    /// Writes a 20-byte header (no options) with its checksum. <paramref name="totalLength"/> includes the header.
    /// </summary>
    public static void WriteHeader(Span<byte> buffer, IPv4Address source, IPv4Address destination, byte protocol,
        int totalLength, ushort identification = 0, byte ttl = 64, bool dontFragment = true, byte tos = 0)
    {
        buffer[Offsets.VersionIhl] = 0x45;
        buffer[Offsets.Tos] = tos;
        BinaryPrimitives.WriteUInt16BigEndian(buffer[Offsets.TotalLength..], checked((ushort)totalLength));
        BinaryPrimitives.WriteUInt16BigEndian(buffer[Offsets.Identification..], identification);
        BinaryPrimitives.WriteUInt16BigEndian(buffer[Offsets.FlagsFragment..], (ushort)(dontFragment ? 0x4000 : 0));
        buffer[Offsets.Ttl] = ttl;
        buffer[Offsets.Protocol] = protocol;
        BinaryPrimitives.WriteUInt16BigEndian(buffer[Offsets.Checksum..], 0);
        source.Write(buffer[Offsets.Source..]);
        destination.Write(buffer[Offsets.Destination..]);
        BinaryPrimitives.WriteUInt16BigEndian(buffer[Offsets.Checksum..], Checksum.Compute(buffer[..MinHeaderLength]));
    }
}
