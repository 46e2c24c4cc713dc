using Emunet.Engine.Diagnostics;
using System.Buffers.Binary;
using Emunet.Engine.Stack;
using Emunet.Engine.Wire;

namespace Emunet.Engine.Tests.Stack;

/// <summary>Random and mutated frames with fixed seeds: nothing throws, every refusal is counted.</summary>
public class HostileFrameTests
{
    [Fact]
    public void Random_bytes_are_all_dropped_and_counted()
    {
        using var h = new StackHarness();
        var random = new Random(20261125);
        const int Frames = 20_000;
        for (int i = 0; i < Frames; i++)
        {
            var frame = new byte[random.Next(0, 300)];
            random.NextBytes(frame);
            MakeSafe(frame);
            h.Stack.OnFrame(frame);
        }
        Assert.Equal(Frames, h.Counters.FramesFromGuest);
        // Every random frame is refused somewhere (too short, not for us, unknown type, bad checksum, ...).
        Assert.Equal(Frames, h.Counters.TotalDrops);
        AssertEmittedFramesAreWellFormed(h);
    }

    [Fact]
    public void Mutated_valid_frames_never_throw()
    {
        using var h = new StackHarness();
        var seeds = new List<byte[]>
        {
            GuestFrames.Arp(ArpPacket.OperationRequest, StackHarness.GuestIp, StackHarness.Gateway),
            GuestFrames.Echo(StackHarness.Gateway, 1, 1, new byte[64]),
            GuestFrames.Udp(StackHarness.GuestIp, 1000, StackHarness.Gateway, 9, new byte[32]),
            GuestFrames.Udp(StackHarness.GuestIp, 1000, StackHarness.Dns, 53, new byte[40]),
            DhcpDiscover(),
            GuestFrames.Fragment(StackHarness.GuestIp, StackHarness.Gateway, IPv4Packet.ProtocolIcmp, 5, GuestFrames.EchoMessage(1, 1, new byte[100]), 0, 64, true),
            GuestFrames.Fragment(StackHarness.GuestIp, StackHarness.Gateway, IPv4Packet.ProtocolIcmp, 5, GuestFrames.EchoMessage(1, 1, new byte[100]), 64, 44, false),
            GuestFrames.IPv4(StackHarness.GuestIp, StackHarness.Gateway, IPv4Packet.ProtocolTcp, new byte[20]),
        };
        var random = new Random(4242);
        const int Frames = 30_000;
        for (int i = 0; i < Frames; i++)
        {
            var frame = (byte[])seeds[random.Next(seeds.Count)].Clone();
            int mutations = random.Next(1, 5);
            for (int m = 0; m < mutations; m++)
                frame[random.Next(EthernetFrame.HeaderLength, frame.Length)] = (byte)random.Next(256);
            if (random.Next(4) == 0) frame = frame.AsSpan(0, random.Next(frame.Length + 1)).ToArray();
            // Half the time repair the IPv4 header checksum so the mutation reaches the layers above.
            if (random.Next(2) == 0) FixIPv4Checksum(frame);
            MakeSafe(frame);
            h.Stack.OnFrame(frame);
            if (i % 1000 == 999)
            {
                // Close what the mutations opened, as idle expiry would.
                h.Stack.Flows.OnTimer(h.Loop.NowMs + Udp.IdleTimeoutMs + 1);
                h.Stack.Flows.OnTimer(h.Loop.NowMs + Icmp.IdleTimeoutMs + 1);
            }
        }
        Assert.Equal(Frames, h.Counters.FramesFromGuest);
        Assert.True(h.Counters.TotalDrops > Frames / 4, $"only {h.Counters.TotalDrops} drops counted");
        Assert.True(h.Counters.Drops(DropReason.IPv4BadChecksum) > 0);
        Assert.True(h.Counters.Drops(DropReason.IcmpMalformed) > 0);
        Assert.True(h.Counters.Drops(DropReason.DhcpMalformed) > 0);
        AssertEmittedFramesAreWellFormed(h);
    }

    private static byte[] DhcpDiscover()
    {
        var body = new byte[300];
        var w = DhcpMessage.WriteHeader(body, DhcpMessage.OpRequest, 1, 0, IPv4Address.Any, IPv4Address.Any, IPv4Address.Any,
            IPv4Address.Any, StackHarness.GuestMac);
        w.AddByte(DhcpMessage.OptionCode.MessageType, (byte)DhcpMessage.MessageType.Discover);
        int length = w.End();
        var frame = GuestFrames.Udp(IPv4Address.Any, 68, IPv4Address.Broadcast, 67, body.AsSpan(0, length), to: MacAddress.Broadcast);
        // RFC 768: no checksum, so mutations of the body reach the DHCP parser.
        frame.AsSpan(EthernetFrame.HeaderLength + IPv4Packet.MinHeaderLength + UdpDatagram.Offsets.Checksum, 2).Clear();
        return frame;
    }

    private static void FixIPv4Checksum(byte[] frame)
    {
        if (frame.Length < EthernetFrame.HeaderLength + IPv4Packet.MinHeaderLength) return;
        if (BinaryPrimitives.ReadUInt16BigEndian(frame.AsSpan(EthernetFrame.Offsets.EtherType)) != EthernetFrame.EtherTypeIPv4) return;
        var ip = frame.AsSpan(EthernetFrame.HeaderLength);
        int ihl = (ip[0] & 0xf) * 4;
        if (ihl < IPv4Packet.MinHeaderLength || ihl > ip.Length) return;
        BinaryPrimitives.WriteUInt16BigEndian(ip[IPv4Packet.Offsets.Checksum..], 0);
        BinaryPrimitives.WriteUInt16BigEndian(ip[IPv4Packet.Offsets.Checksum..], Checksum.Compute(ip[..ihl]));
    }

    /// <summary>Tests may only reach host loopback: a destination outside the guest network becomes 127.0.0.1.</summary>
    private static void MakeSafe(byte[] frame)
    {
        if (frame.Length < EthernetFrame.HeaderLength) return;
        if (IPv4Packet.TryParse(frame.AsSpan(EthernetFrame.HeaderLength), out var packet) != IPv4Packet.ParseError.None) return;
        var destination = packet.Destination;
        if (destination.InSubnet(new IPv4Address(10, 0, 2, 0), 24) || destination.IsLoopback || destination.IsBroadcast) return;
        new IPv4Address(127, 0, 0, 1).Write(frame.AsSpan(EthernetFrame.HeaderLength + IPv4Packet.Offsets.Destination));
        FixIPv4Checksum(frame);
    }

    private static void AssertEmittedFramesAreWellFormed(StackHarness h)
    {
        while (h.Device.Frames.TryTake(out var frame))
        {
            Assert.True(EthernetFrame.TryParse(frame, out var eth));
            if (eth.EtherType == EthernetFrame.EtherTypeIPv4)
                Assert.Equal(IPv4Packet.ParseError.None, IPv4Packet.TryParse(eth.Payload, out _));
            else
                Assert.True(ArpPacket.TryParse(eth.Payload, out _));
        }
    }
}
