using Emunet.Engine.Wire;

namespace Emunet.Engine.Tests.Wire;

public class UdpDatagramTests
{
    private static readonly IPv4Address Source = new(10, 0, 2, 15);
    private static readonly IPv4Address Destination = new(10, 0, 2, 2);

    // 10.0.2.15:1234 -> 10.0.2.2:5678, "hi".
    private static readonly byte[] Datagram = { 0x04, 0xd2, 0x16, 0x2e, 0x00, 0x0a, 0x64, 0x60, 0x68, 0x69 };

    [Fact]
    public void Deconstruct()
    {
        Assert.True(UdpDatagram.TryParse(Datagram, out var udp));
        Assert.Equal(1234, udp.SourcePort);
        Assert.Equal(5678, udp.DestinationPort);
        Assert.Equal(10, udp.Length);
        Assert.Equal(0x6460, udp.Checksum);
        Assert.Equal("hi"u8.ToArray(), udp.Payload.ToArray());
        Assert.True(udp.IsChecksumValid(Source, Destination));
        Assert.False(udp.IsChecksumValid(Source, new IPv4Address(10, 0, 2, 3)));
    }

    [Fact]
    public void Construct()
    {
        var bytes = new byte[Datagram.Length];
        "hi"u8.CopyTo(bytes.AsSpan(8));
        Assert.Equal(10, UdpDatagram.WriteHeader(bytes, Source, Destination, 1234, 5678, 2));
        Assert.Equal(Datagram, bytes);

        // Independent check: PacketDotNet over a whole IPv4 packet.
        var packet = new byte[20 + bytes.Length];
        bytes.CopyTo(packet, 20);
        IPv4Packet.WriteHeader(packet, Source, Destination, IPv4Packet.ProtocolUdp, packet.Length);
        var ip = new PacketDotNet.IPv4Packet(new PacketDotNet.Utils.ByteArraySegment(packet));
        var udp = Assert.IsType<PacketDotNet.UdpPacket>(ip.PayloadPacket);
        Assert.True(udp.ValidUdpChecksum);
        Assert.Equal(5678, udp.DestinationPort);
    }

    [Fact]
    public void Zero_checksum_means_none()
    {
        var bytes = (byte[])Datagram.Clone();
        bytes[6] = bytes[7] = 0;
        Assert.True(UdpDatagram.TryParse(bytes, out var udp));
        Assert.True(udp.IsChecksumValid(Source, Destination));
    }

    [Fact]
    public void Truncated()
    {
        Assert.False(UdpDatagram.TryParse(Datagram.AsSpan(0, 7), out _));
        // Length field says 10, only 9 bytes present.
        Assert.False(UdpDatagram.TryParse(Datagram.AsSpan(0, 9), out _));
        // Length field below the header size.
        var bad = (byte[])Datagram.Clone();
        bad[5] = 7;
        Assert.False(UdpDatagram.TryParse(bad, out _));
    }

    [Fact]
    public void Overlong_is_cut_to_the_length_field()
    {
        var longer = new byte[Datagram.Length + 4];
        Datagram.CopyTo(longer, 0);
        Assert.True(UdpDatagram.TryParse(longer, out var udp));
        Assert.Equal(10, udp.Bytes.Length);
        Assert.Equal(2, udp.Payload.Length);
        Assert.True(udp.IsChecksumValid(Source, Destination));
    }
}
