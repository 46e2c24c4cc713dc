using System.Buffers.Binary;

namespace Emunet.Engine.Wire;

/// <summary>
/// A checked view over an ICMPv6 message (RFC 4443 §2.1). Echo request and reply carry an identifier and a sequence
/// number (§4); errors carry a 32-bit field (unused, MTU or pointer) and as much of the invoking packet as fits in the
/// minimum MTU (§2.4 (c)). The checksum covers an IPv6 pseudo-header (§2.3), so it is checked with the addresses.
/// <code>
///  0                   1                   2                   3
///  0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
/// +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
/// |     Type      |     Code      |          Checksum             |
/// |           Identifier          |        Sequence Number        |
/// |     Message Body ...
/// +-+-+-+-+-
/// </code>
/// </summary>
internal readonly ref struct Icmpv6Packet
{
    public static class Offsets
    {
        public const int Type = 0;
        public const int Code = 1;
        public const int Checksum = 2;
        public const int Identifier = 4;
        public const int Sequence = 6;
        /// <summary>Echo data; the invoking packet of an error; the target address of NS and NA.</summary>
        public const int Body = 8;
    }

    public const int HeaderLength = 8;

    public const byte TypeDestinationUnreachable = 1;
    public const byte TypePacketTooBig = 2;
    public const byte TypeTimeExceeded = 3;
    public const byte TypeParameterProblem = 4;
    public const byte TypeEchoRequest = 128;
    public const byte TypeEchoReply = 129;
    public const byte TypeRouterSolicitation = 133;
    public const byte TypeRouterAdvertisement = 134;
    public const byte TypeNeighborSolicitation = 135;
    public const byte TypeNeighborAdvertisement = 136;
    public const byte TypeRedirect = 137;

    public const byte CodeNoRoute = 0;
    public const byte CodeAdministrativelyProhibited = 1;
    public const byte CodeAddressUnreachable = 3;
    public const byte CodePortUnreachable = 4;
    public const byte CodeUnrecognizedNextHeader = 1;

    public ReadOnlySpan<byte> Bytes { get; }

    private Icmpv6Packet(ReadOnlySpan<byte> bytes) => Bytes = bytes;

    /// <summary>Checks that the 8-byte header is present; the checksum is checked with <see cref="IsChecksumValid"/>.</summary>
    public static bool TryParse(ReadOnlySpan<byte> bytes, out Icmpv6Packet packet)
    {
        packet = new Icmpv6Packet(bytes);
        return bytes.Length >= HeaderLength;
    }

    public byte Type => Bytes[Offsets.Type];
    public byte Code => Bytes[Offsets.Code];
    public ushort Checksum => BinaryPrimitives.ReadUInt16BigEndian(Bytes[Offsets.Checksum..]);
    public ushort Identifier => BinaryPrimitives.ReadUInt16BigEndian(Bytes[Offsets.Identifier..]);
    public ushort Sequence => BinaryPrimitives.ReadUInt16BigEndian(Bytes[Offsets.Sequence..]);
    /// <summary>The 32-bit field after the checksum (MTU of packet-too-big, pointer of parameter problem).</summary>
    public uint Field => BinaryPrimitives.ReadUInt32BigEndian(Bytes[Offsets.Identifier..]);
    public ReadOnlySpan<byte> Body => Bytes[Offsets.Body..];

    /// <summary>RFC 4443 §4.2 / §3: types below 128 are errors.</summary>
    public bool IsError => Type < 128;

    /// <summary>RFC 4443 §2.3: the checksum covers the pseudo-header and the whole message.</summary>
    public bool IsChecksumValid(IPv6Address source, IPv6Address destination) =>
        IPv6Packet.UpperLayerChecksum(source, destination, IPv6Packet.NextHeaderIcmpv6, Bytes) == 0;

    /// <summary>
    /// Writes type, code and the 32-bit field in front of a body already in <paramref name="message"/>[8..], then the
    /// checksum over the whole message.
    /// </summary>
    public static void WriteHeader(Span<byte> message, byte type, byte code, uint field, IPv6Address source, IPv6Address destination)
    {
        message[Offsets.Type] = type;
        message[Offsets.Code] = code;
        BinaryPrimitives.WriteUInt32BigEndian(message[Offsets.Identifier..], field);
        FinishChecksum(message, source, destination);
    }

    /// <summary>Computes the checksum of <paramref name="message"/> (whose checksum field is overwritten) and stores it.</summary>
    public static void FinishChecksum(Span<byte> message, IPv6Address source, IPv6Address destination)
    {
        BinaryPrimitives.WriteUInt16BigEndian(message[Offsets.Checksum..], 0);
        BinaryPrimitives.WriteUInt16BigEndian(message[Offsets.Checksum..],
            IPv6Packet.UpperLayerChecksum(source, destination, IPv6Packet.NextHeaderIcmpv6, message));
    }
}
