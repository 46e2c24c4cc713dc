using System.Buffers.Binary;
using Emunet.Engine.Wire;

namespace Emunet.Fuzz.Targets;

/// <summary>IPv6 frames as the Linux guest sends them (EUI-64 addresses of its MAC), with valid lengths and checksums.</summary>
internal static class GuestPackets6
{
    public static readonly IPv6Address LinkLocal = IPv6Address.Parse("fe80::5054:ff:fe12:3456");
    public static readonly IPv6Address Global = IPv6Address.Parse("fec0::5054:ff:fe12:3456");

    public static byte[] Packet(IPv6Address source, IPv6Address destination, byte nextHeader, ReadOnlySpan<byte> payload, byte hopLimit = 64)
    {
        var bytes = new byte[IPv6Packet.HeaderLength + payload.Length];
        IPv6Packet.WriteHeader(bytes, source, destination, nextHeader, payload.Length, hopLimit);
        payload.CopyTo(bytes.AsSpan(IPv6Packet.HeaderLength));
        return bytes;
    }

    public static byte[] Frame(IPv6Address source, IPv6Address destination, byte nextHeader, ReadOnlySpan<byte> payload, byte hopLimit = 64)
    {
        var mac = destination.IsMulticast ? destination.MulticastMac : StackRig.Config.GatewayMac;
        return GuestPackets.Ethernet(mac, EthernetFrame.EtherTypeIPv6, Packet(source, destination, nextHeader, payload, hopLimit));
    }

    public static byte[] Icmp(IPv6Address source, IPv6Address destination, byte[] message, byte hopLimit = 64)
    {
        Icmpv6Packet.FinishChecksum(message, source, destination);
        return Frame(source, destination, IPv6Packet.NextHeaderIcmpv6, message, hopLimit);
    }

    public static byte[] RouterSolicitation()
    {
        var m = new byte[16];
        m[0] = Icmpv6Packet.TypeRouterSolicitation;
        NdpOptionReader.WriteLinkLayerAddress(m.AsSpan(8), NdpOptionReader.TypeSourceLinkLayerAddress, StackRig.GuestMac);
        return Icmp(LinkLocal, IPv6Address.AllRouters, m, 255);
    }

    public static byte[] NeighborSolicitation(IPv6Address source, IPv6Address target)
    {
        bool dad = source.IsUnspecified;
        var m = new byte[dad ? 24 : 32];
        m[0] = Icmpv6Packet.TypeNeighborSolicitation;
        target.Write(m.AsSpan(8));
        if (!dad) NdpOptionReader.WriteLinkLayerAddress(m.AsSpan(24), NdpOptionReader.TypeSourceLinkLayerAddress, StackRig.GuestMac);
        return Icmp(source, target.SolicitedNode, m, 255);
    }

    public static byte[] Echo(IPv6Address destination)
    {
        var m = new byte[8 + 16];
        m[0] = Icmpv6Packet.TypeEchoRequest;
        m[5] = 7; m[7] = 1;
        return Icmp(Global, destination, m);
    }

    public static byte[] Udp(IPv6Address source, IPv6Address destination, ushort sourcePort, ushort destinationPort, ReadOnlySpan<byte> payload)
    {
        var udp = new byte[UdpDatagram.HeaderLength + payload.Length];
        payload.CopyTo(udp.AsSpan(UdpDatagram.HeaderLength));
        IPv6Packet.WriteUdpHeader(udp, source, destination, sourcePort, destinationPort, udp.Length);
        return Frame(source, destination, IPv6Packet.NextHeaderUdp, udp);
    }

    public static byte[] TcpSyn(IPv6Address destination, ushort port)
    {
        var tcp = new byte[TcpSegment.MinHeaderLength + 4];
        var f = new TcpFields
        {
            SourcePort = 40000, DestinationPort = port, SequenceNumber = 1000, Flags = TcpFlags.Syn, Window = 65535,
            MaxSegmentSize = 1440, WindowScale = -1,
        };
        f.Emit(tcp, IPv6Packet.PseudoHeader(Global, destination, IPv6Packet.NextHeaderTcp, 0), 0);
        return Frame(Global, destination, IPv6Packet.NextHeaderTcp, tcp);
    }

    /// <summary>An echo to fec0::2 in two fragments, behind a destination options header.</summary>
    public static byte[][] Fragments()
    {
        var echo = new byte[8 + 40];
        echo[0] = Icmpv6Packet.TypeEchoRequest;
        var alias = StackRig.Config.IPv6Gateway;
        Icmpv6Packet.FinishChecksum(echo, Global, alias);
        return [Fragment(echo[..24], 0, true, alias), Fragment(echo[24..], 24, false, alias)];

        static byte[] Fragment(byte[] data, int offset, bool more, IPv6Address to)
        {
            var body = new byte[16 + data.Length];
            body[0] = IPv6Packet.NextHeaderFragment;   // destination options (PadN) → fragment
            body[2] = 1; body[3] = 4;
            body[8] = IPv6Packet.NextHeaderIcmpv6;
            BinaryPrimitives.WriteUInt16BigEndian(body.AsSpan(10), (ushort)((offset / 8) << 3 | (more ? 1 : 0)));
            BinaryPrimitives.WriteUInt32BigEndian(body.AsSpan(12), 0x1234);
            data.CopyTo(body, 16);
            return Frame(Global, to, IPv6Packet.NextHeaderDestinationOptions, body);
        }
    }
}
