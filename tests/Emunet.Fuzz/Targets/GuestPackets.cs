using Emunet.Engine.Wire;

namespace Emunet.Fuzz.Targets;

/// <summary>Frames as the guest sends them, built with the engine's own emitters (valid lengths and checksums).</summary>
internal static class GuestPackets
{
    /// <summary>The largest UDP payload one IPv4 packet carries (RFC 791 total length 65535).</summary>
    public const int MaxUdpPayload = ushort.MaxValue - IPv4Packet.MinHeaderLength - UdpDatagram.HeaderLength;

    public static byte[] Ethernet(MacAddress destination, ushort etherType, ReadOnlySpan<byte> payload)
    {
        var frame = new byte[EthernetFrame.HeaderLength + payload.Length];
        EthernetFrame.WriteHeader(frame, destination, StackRig.GuestMac, etherType);
        payload.CopyTo(frame.AsSpan(EthernetFrame.HeaderLength));
        return frame;
    }

    /// <summary>An IPv4 packet around <paramref name="payload"/> (a whole transport message, checksum already set).</summary>
    public static byte[] IPv4(MacAddress to, IPv4Address source, IPv4Address destination, byte protocol, ReadOnlySpan<byte> payload)
    {
        var packet = new byte[IPv4Packet.MinHeaderLength + payload.Length];
        payload.CopyTo(packet.AsSpan(IPv4Packet.MinHeaderLength));
        IPv4Packet.WriteHeader(packet, source, destination, protocol, packet.Length, dontFragment: false);
        return Ethernet(to, EthernetFrame.EtherTypeIPv4, packet);
    }

    public static byte[] Udp(MacAddress to, IPv4Address source, ushort sourcePort, IPv4Address destination, ushort destinationPort,
        ReadOnlySpan<byte> payload)
    {
        payload = payload[..Math.Min(payload.Length, MaxUdpPayload)];
        var datagram = new byte[UdpDatagram.HeaderLength + payload.Length];
        payload.CopyTo(datagram.AsSpan(UdpDatagram.HeaderLength));
        UdpDatagram.WriteHeader(datagram, source, destination, sourcePort, destinationPort, payload.Length);
        return IPv4(to, source, destination, IPv4Packet.ProtocolUdp, datagram);
    }
}
