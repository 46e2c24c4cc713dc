using Emunet.Engine.Tests.Stack;
using Emunet.Engine.Wire;

namespace Emunet.Engine.Tests.Stack.IPv6;

/// <summary>IPv6 frames as the guest sends them (the Linux guest's addresses: EUI-64 of its MAC).</summary>
internal static class GuestFrames6
{
    public static readonly IPv6Address GuestLinkLocal = IPv6Address.Parse("fe80::5054:ff:fe12:3456");
    public static readonly IPv6Address GuestGlobal = IPv6Address.Parse("fec0::5054:ff:fe12:3456");
    public static readonly IPv6Address Router = IPv6Address.Parse("fe80::2");
    public static readonly IPv6Address HostAlias = IPv6Address.Parse("fec0::2");
    public static readonly IPv6Address Dns = IPv6Address.Parse("fec0::3");

    public static byte[] Packet(IPv6Address source, IPv6Address destination, byte nextHeader, ReadOnlySpan<byte> payload, byte hopLimit = 64)
    {
        var bytes = new byte[IPv6Packet.HeaderLength + payload.Length];
        IPv6Packet.WriteHeader(bytes, source, destination, nextHeader, payload.Length, hopLimit);
        payload.CopyTo(bytes.AsSpan(IPv6Packet.HeaderLength));
        return bytes;
    }

    public static byte[] Frame(IPv6Address source, IPv6Address destination, byte nextHeader, ReadOnlySpan<byte> payload, byte hopLimit = 64)
    {
        var dmac = destination.IsMulticast ? destination.MulticastMac : MacAddress.Parse("52:55:0a:00:02:02");
        return GuestFrames.Ethernet(dmac, EthernetFrame.EtherTypeIPv6, Packet(source, destination, nextHeader, payload, hopLimit));
    }

    /// <summary>An ICMPv6 message with its checksum, in a frame.</summary>
    public static byte[] Icmp(IPv6Address source, IPv6Address destination, byte[] message, byte hopLimit = 64)
    {
        Icmpv6Packet.FinishChecksum(message, source, destination);
        return Frame(source, destination, IPv6Packet.NextHeaderIcmpv6, message, hopLimit);
    }

    public static byte[] RouterSolicitation(IPv6Address source, bool withSourceMac = true, byte hopLimit = 255)
    {
        var m = new byte[8 + (withSourceMac ? 8 : 0)];
        m[0] = Icmpv6Packet.TypeRouterSolicitation;
        if (withSourceMac) NdpOptionReader.WriteLinkLayerAddress(m.AsSpan(8), NdpOptionReader.TypeSourceLinkLayerAddress, StackHarness.GuestMac);
        return Icmp(source, IPv6Address.AllRouters, m, hopLimit);
    }

    public static byte[] NeighborSolicitation(IPv6Address source, IPv6Address target, bool withSourceMac = true, byte hopLimit = 255)
    {
        var m = new byte[24 + (withSourceMac ? 8 : 0)];
        m[0] = Icmpv6Packet.TypeNeighborSolicitation;
        target.Write(m.AsSpan(8));
        if (withSourceMac) NdpOptionReader.WriteLinkLayerAddress(m.AsSpan(24), NdpOptionReader.TypeSourceLinkLayerAddress, StackHarness.GuestMac);
        return Icmp(source, target.SolicitedNode, m, hopLimit);
    }

    public static byte[] EchoRequest(IPv6Address source, IPv6Address destination, ushort id, ushort sequence, ReadOnlySpan<byte> data)
    {
        var m = new byte[8 + data.Length];
        m[0] = Icmpv6Packet.TypeEchoRequest;
        m[4] = (byte)(id >> 8); m[5] = (byte)id; m[6] = (byte)(sequence >> 8); m[7] = (byte)sequence;
        data.CopyTo(m.AsSpan(8));
        return Icmp(source, destination, m);
    }

    /// <summary>The IPv6 packet of a frame the stack sent, checked by the oracle (version, lengths) and by ours.</summary>
    public static (PacketDotNet.IPv6Packet Oracle, byte[] Packet) Parse(byte[] frame)
    {
        var eth = new PacketDotNet.EthernetPacket(new PacketDotNet.Utils.ByteArraySegment(frame));
        Assert.Equal(PacketDotNet.EthernetType.IPv6, eth.Type);
        var ip = Assert.IsType<PacketDotNet.IPv6Packet>(eth.PayloadPacket);
        var packet = frame.AsSpan(EthernetFrame.HeaderLength).ToArray();
        Assert.Equal(IPv6Packet.ParseError.None, IPv6Packet.TryParse(packet, out var ours));
        Assert.Equal(packet.Length, ours.Bytes.Length);
        return (ip, packet);
    }
}
