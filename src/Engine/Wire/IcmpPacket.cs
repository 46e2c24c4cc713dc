using System.Buffers.Binary;

namespace Emunet.Engine.Wire;

/// <summary>
/// A checked view over an ICMP message (RFC 792). Echo and echo reply carry an identifier and a sequence number in
/// the rest-of-header word; destination unreachable carries zero (or the next-hop MTU, RFC 1191) and then the
/// original IPv4 header plus the start of its data.
/// <code>
///  0                   1                   2                   3
///  0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
/// +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
/// |     Type      |     Code      |          Checksum             |
/// |           Identifier          |        Sequence Number        |
/// |     Data ...
/// +-+-+-+-+-
/// </code>
/// </summary>
internal readonly ref struct IcmpPacket
{
    public static class Offsets
    {
        public const int Type = 0;
        public const int Code = 1;
        public const int Checksum = 2;
        public const int Identifier = 4;
        public const int Sequence = 6;
        public const int Data = 8;
    }

    public const int HeaderLength = 8;
    public const byte TypeEchoReply = 0;
    public const byte TypeDestinationUnreachable = 3;
    public const byte TypeEchoRequest = 8;
    public const byte TypeTimeExceeded = 11;

    public const byte CodeNetUnreachable = 0;
    public const byte CodeHostUnreachable = 1;
    public const byte CodeProtocolUnreachable = 2;
    public const byte CodePortUnreachable = 3;
    public const byte CodeAdministrativelyProhibited = 13;

    public ReadOnlySpan<byte> Bytes { get; }

    private IcmpPacket(ReadOnlySpan<byte> bytes) => Bytes = bytes;

    /// <summary>Checks that a header is present; the checksum is checked separately with <see cref="IsChecksumValid"/>.</summary>
    public static bool TryParse(ReadOnlySpan<byte> bytes, out IcmpPacket packet)
    {
        packet = new IcmpPacket(bytes);
        return bytes.Length >= HeaderLength;
    }

    public byte Type => Bytes[Offsets.Type];
    public byte Code => Bytes[Offsets.Code];
    public ushort Checksum => BinaryPrimitives.ReadUInt16BigEndian(Bytes[Offsets.Checksum..]);
    public ushort Identifier => BinaryPrimitives.ReadUInt16BigEndian(Bytes[Offsets.Identifier..]);
    public ushort Sequence => BinaryPrimitives.ReadUInt16BigEndian(Bytes[Offsets.Sequence..]);
    public ReadOnlySpan<byte> Data => Bytes[Offsets.Data..];

    /// <summary>RFC 792: the checksum covers the whole ICMP message.</summary>
    public bool IsChecksumValid => Wire.Checksum.Compute(Bytes) == 0;

    public bool IsError => Type is TypeDestinationUnreachable or TypeTimeExceeded or 4 or 5 or 12;

    /// <summary>Writes the 8-byte header in front of data already in <paramref name="message"/>[8..] and checksums the whole message.</summary>
    public static void WriteHeader(Span<byte> message, byte type, byte code, ushort identifier, ushort sequence)
    {
        message[Offsets.Type] = type;
        message[Offsets.Code] = code;
        BinaryPrimitives.WriteUInt16BigEndian(message[Offsets.Checksum..], 0);
        BinaryPrimitives.WriteUInt16BigEndian(message[Offsets.Identifier..], identifier);
        BinaryPrimitives.WriteUInt16BigEndian(message[Offsets.Sequence..], sequence);
        BinaryPrimitives.WriteUInt16BigEndian(message[Offsets.Checksum..], Wire.Checksum.Compute(message));
    }

    /// <summary>Rewrites the identifier of a message in place and fixes its checksum (used when relaying echo replies).</summary>
    public static void RewriteIdentifier(Span<byte> message, ushort identifier)
    {
        BinaryPrimitives.WriteUInt16BigEndian(message[Offsets.Identifier..], identifier);
        BinaryPrimitives.WriteUInt16BigEndian(message[Offsets.Checksum..], 0);
        BinaryPrimitives.WriteUInt16BigEndian(message[Offsets.Checksum..], Wire.Checksum.Compute(message));
    }
}
