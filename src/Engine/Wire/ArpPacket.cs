using System.Buffers.Binary;

namespace Emunet.Engine.Wire;

/// <summary>
/// A checked view over an ARP packet for IPv4 over Ethernet (RFC 826).
/// <code>
///  0                   1                   2                   3
///  0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
/// +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
/// |         Hardware Type         |         Protocol Type         |
/// |  HW Addr Len  | Proto Addr Len|           Operation           |
/// |                 Sender Hardware Address (6)                   |
/// |                               |  Sender Protocol Address (4)  |
/// |                               |                               |
/// |                 Target Hardware Address (6)                   |
/// |                 Target Protocol Address (4)                   |
/// +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
/// </code>
/// </summary>
internal readonly ref struct ArpPacket
{
    public static class Offsets
    {
        public const int HardwareType = 0;
        public const int ProtocolType = 2;
        public const int HardwareLength = 4;
        public const int ProtocolLength = 5;
        public const int Operation = 6;
        public const int SenderHardwareAddress = 8;
        public const int SenderProtocolAddress = 14;
        public const int TargetHardwareAddress = 18;
        public const int TargetProtocolAddress = 24;
    }

    /// <summary>The length of an Ethernet/IPv4 ARP packet.</summary>
    public const int Length = 28;
    public const ushort HardwareTypeEthernet = 1;
    public const ushort OperationRequest = 1;
    public const ushort OperationReply = 2;

    /// <summary>The packet's 28 bytes (Ethernet padding cut off).</summary>
    public ReadOnlySpan<byte> Bytes { get; }

    private ArpPacket(ReadOnlySpan<byte> bytes) => Bytes = bytes;

    /// <summary>
    /// Accepts only Ethernet/IPv4 ARP (hardware type 1, protocol 0x0800, lengths 6 and 4): the only kind the stack
    /// answers. On success the view covers exactly 28 bytes and no accessor can fail.
    /// </summary>
    public static bool TryParse(ReadOnlySpan<byte> bytes, out ArpPacket packet)
    {
        packet = default;
        if (bytes.Length < Length) return false;
        if (BinaryPrimitives.ReadUInt16BigEndian(bytes[Offsets.HardwareType..]) != HardwareTypeEthernet) return false;
        if (BinaryPrimitives.ReadUInt16BigEndian(bytes[Offsets.ProtocolType..]) != EthernetFrame.EtherTypeIPv4) return false;
        if (bytes[Offsets.HardwareLength] != 6 || bytes[Offsets.ProtocolLength] != 4) return false;
        packet = new ArpPacket(bytes[..Length]);
        return true;
    }

    public ushort Operation => BinaryPrimitives.ReadUInt16BigEndian(Bytes[Offsets.Operation..]);
    public MacAddress SenderHardwareAddress => MacAddress.Read(Bytes[Offsets.SenderHardwareAddress..]);
    public IPv4Address SenderProtocolAddress => IPv4Address.Read(Bytes[Offsets.SenderProtocolAddress..]);
    public MacAddress TargetHardwareAddress => MacAddress.Read(Bytes[Offsets.TargetHardwareAddress..]);
    public IPv4Address TargetProtocolAddress => IPv4Address.Read(Bytes[Offsets.TargetProtocolAddress..]);

    /// <summary>Writes a 28-byte Ethernet/IPv4 ARP packet into <paramref name="buffer"/>.</summary>
    public static void Write(Span<byte> buffer, ushort operation, MacAddress senderHardware, IPv4Address senderProtocol,
        MacAddress targetHardware, IPv4Address targetProtocol)
    {
        BinaryPrimitives.WriteUInt16BigEndian(buffer[Offsets.HardwareType..], HardwareTypeEthernet);
        BinaryPrimitives.WriteUInt16BigEndian(buffer[Offsets.ProtocolType..], EthernetFrame.EtherTypeIPv4);
        buffer[Offsets.HardwareLength] = 6;
        buffer[Offsets.ProtocolLength] = 4;
        BinaryPrimitives.WriteUInt16BigEndian(buffer[Offsets.Operation..], operation);
        senderHardware.Write(buffer[Offsets.SenderHardwareAddress..]);
        senderProtocol.Write(buffer[Offsets.SenderProtocolAddress..]);
        targetHardware.Write(buffer[Offsets.TargetHardwareAddress..]);
        targetProtocol.Write(buffer[Offsets.TargetProtocolAddress..]);
    }
}
