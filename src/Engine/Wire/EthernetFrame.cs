using System.Buffers.Binary;

namespace Emunet.Engine.Wire;

/// <summary>
/// A view over an Ethernet II frame (IEEE 802.3).
/// <code>
///  0                   6                   12      14
/// +-------------------+-------------------+-------+----------
/// |  destination MAC  |    source MAC     | type  | payload
/// +-------------------+-------------------+-------+----------
/// </code>
/// </summary>
internal readonly ref struct EthernetFrame
{
    public static class Offsets
    {
        public const int Destination = 0;
        public const int Source = 6;
        public const int EtherType = 12;
        public const int Payload = 14;
    }

    public const int HeaderLength = 14;
    public const ushort EtherTypeIPv4 = 0x0800;
    public const ushort EtherTypeArp = 0x0806;
    public const ushort EtherTypeIPv6 = 0x86dd;

    public ReadOnlySpan<byte> Bytes { get; }

    private EthernetFrame(ReadOnlySpan<byte> bytes) => Bytes = bytes;

    /// <summary>Checks that <paramref name="bytes"/> holds a whole header; after that no accessor can fail.</summary>
    public static bool TryParse(ReadOnlySpan<byte> bytes, out EthernetFrame frame)
    {
        frame = new EthernetFrame(bytes);
        return bytes.Length >= HeaderLength;
    }

    public MacAddress Destination => MacAddress.Read(Bytes[Offsets.Destination..]);
    public MacAddress Source => MacAddress.Read(Bytes[Offsets.Source..]);
    public ushort EtherType => BinaryPrimitives.ReadUInt16BigEndian(Bytes[Offsets.EtherType..]);
    public ReadOnlySpan<byte> Payload => Bytes[Offsets.Payload..];

    /// <summary>Writes a header into <paramref name="buffer"/> (at least 14 bytes).</summary>
    public static void WriteHeader(Span<byte> buffer, MacAddress destination, MacAddress source, ushort etherType)
    {
        destination.Write(buffer[Offsets.Destination..]);
        source.Write(buffer[Offsets.Source..]);
        BinaryPrimitives.WriteUInt16BigEndian(buffer[Offsets.EtherType..], etherType);
    }
}
