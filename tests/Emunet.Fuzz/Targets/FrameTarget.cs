using System.Buffers.Binary;
using Emunet.Engine.Wire;

namespace Emunet.Fuzz.Targets;

/// <summary>
/// The <c>frame</c> target: everything the stack does with Ethernet frames from the guest. One input is up to
/// <see cref="MaxFrames"/> records, each <c>[flags:1][length:2, big-endian][frame]</c> (a short last record takes what
/// is left), handed to one fresh stack in order, so a handshake or a fragment series fits in one input.
/// Flag bits (<see cref="FrameFlags"/>) let the harness repair what a mutation breaks, so the fuzzer gets past the IPv4,
/// UDP, TCP and ICMP checks, aim TCP at a loopback server, acknowledge what the stack sent, and run the engine loop
/// once, so a connection can open and carry data, or have the guest go away and come back between two frames.
/// </summary>
internal static class FrameTarget
{
    public const int MaxFrames = 16;
    public const int RecordHeader = 3;

    public static void Run(ReadOnlySpan<byte> input)
    {
        using var rig = new StackRig();
        rig.LearnGuestMac();
        var frame = new byte[ushort.MaxValue];
        for (int n = 0; n < MaxFrames && input.Length >= RecordHeader; n++)
        {
            var flags = (FrameFlags)input[0];
            int length = Math.Min(BinaryPrimitives.ReadUInt16BigEndian(input[1..]), input.Length - RecordHeader);
            input[RecordHeader..(RecordHeader + length)].CopyTo(frame);
            input = input[(RecordHeader + length)..];
            var span = frame.AsSpan(0, length);
            FrameFixups.Apply(span, flags, rig.ListenerPort, rig.Device.NextAcknowledgment);
            rig.Stack.OnFrame(span);
            if ((flags & FrameFlags.Pump) != 0) rig.Pump();
            if ((flags & FrameFlags.Reconnect) != 0)
            {
                rig.Stack.OnDeviceDisconnected();
                rig.Stack.OnDeviceConnected();
            }
        }
    }

    /// <summary>One record of a <c>frame</c> input (seeds and tests write inputs with it).</summary>
    public static byte[] Record(ReadOnlySpan<byte> frame, FrameFlags flags = FrameFlags.Lengths | FrameFlags.Checksums)
    {
        var record = new byte[RecordHeader + frame.Length];
        record[0] = (byte)flags;
        BinaryPrimitives.WriteUInt16BigEndian(record.AsSpan(1), (ushort)frame.Length);
        frame.CopyTo(record.AsSpan(RecordHeader));
        return record;
    }
}

/// <summary>What the harness does with one frame record: repairs before the stack sees it, and events after.</summary>
[Flags]
internal enum FrameFlags : byte
{
    None = 0,
    /// <summary>IPv4 total length from the frame's size; UDP length from the IPv4 payload.</summary>
    Lengths = 1,
    /// <summary>The IPv4 header checksum, and the UDP, TCP or ICMP checksum of a whole (unfragmented) datagram.</summary>
    Checksums = 2,
    /// <summary>After this frame the engine loop runs once (only the first such frame of an input).</summary>
    Pump = 4,
    /// <summary>TCP: the destination port is the rig's loopback server.</summary>
    ToListener = 8,
    /// <summary>TCP: the acknowledgment number is the end of the last segment the stack sent.</summary>
    AcknowledgeLast = 16,
    /// <summary>After this frame the guest goes away and comes back (the device reconnects): its flows are dropped.</summary>
    Reconnect = 32,
}

/// <summary>Repairs lengths and checksums of an Ethernet + IPv4 frame in place; anything else is left as it is.</summary>
internal static class FrameFixups
{
    private const int Ip = EthernetFrame.HeaderLength;

    /// <param name="listenerPort">For <see cref="FrameFlags.ToListener"/>.</param>
    /// <param name="acknowledgment">For <see cref="FrameFlags.AcknowledgeLast"/>; null before the stack sent TCP.</param>
    public static void Apply(Span<byte> frame, FrameFlags flags, ushort listenerPort = 0, uint? acknowledgment = null)
    {
        if (flags == FrameFlags.None || frame.Length < Ip + IPv4Packet.MinHeaderLength) return;
        if (BinaryPrimitives.ReadUInt16BigEndian(frame[EthernetFrame.Offsets.EtherType..]) != EthernetFrame.EtherTypeIPv4) return;
        var ip = frame[Ip..];
        int ihl = (ip[IPv4Packet.Offsets.VersionIhl] & 0xf) * 4;
        if (ihl < IPv4Packet.MinHeaderLength || ihl > ip.Length) return;
        byte protocol = ip[IPv4Packet.Offsets.Protocol];
        if (protocol == IPv4Packet.ProtocolTcp && ip.Length - ihl >= TcpSegment.MinHeaderLength)
        {
            var tcp = ip[ihl..];
            if ((flags & FrameFlags.ToListener) != 0) BinaryPrimitives.WriteUInt16BigEndian(tcp[TcpSegment.Offsets.DestinationPort..], listenerPort);
            if ((flags & FrameFlags.AcknowledgeLast) != 0 && acknowledgment is { } ack)
                BinaryPrimitives.WriteUInt32BigEndian(tcp[TcpSegment.Offsets.AcknowledgmentNumber..], ack);
        }
        if ((flags & FrameFlags.Lengths) != 0)
        {
            BinaryPrimitives.WriteUInt16BigEndian(ip[IPv4Packet.Offsets.TotalLength..], (ushort)ip.Length);
            if (protocol == IPv4Packet.ProtocolUdp && ip.Length - ihl >= UdpDatagram.HeaderLength)
                BinaryPrimitives.WriteUInt16BigEndian(ip[(ihl + UdpDatagram.Offsets.Length)..], (ushort)(ip.Length - ihl));
        }
        if ((flags & FrameFlags.Checksums) == 0) return;
        BinaryPrimitives.WriteUInt16BigEndian(ip[IPv4Packet.Offsets.Checksum..], 0);
        BinaryPrimitives.WriteUInt16BigEndian(ip[IPv4Packet.Offsets.Checksum..], Checksum.Compute(ip[..ihl]));
        int total = BinaryPrimitives.ReadUInt16BigEndian(ip[IPv4Packet.Offsets.TotalLength..]);
        bool fragment = (BinaryPrimitives.ReadUInt16BigEndian(ip[IPv4Packet.Offsets.FlagsFragment..]) & 0x3fff) != 0;
        if (fragment || total < ihl || total > ip.Length) return;
        var payload = ip[ihl..total];
        var source = IPv4Address.Read(ip[IPv4Packet.Offsets.Source..]);
        var destination = IPv4Address.Read(ip[IPv4Packet.Offsets.Destination..]);
        int at = protocol switch
        {
            IPv4Packet.ProtocolUdp => UdpDatagram.Offsets.Checksum,
            IPv4Packet.ProtocolTcp => TcpSegment.Offsets.Checksum,
            IPv4Packet.ProtocolIcmp => IcmpPacket.Offsets.Checksum,
            _ => -1,
        };
        if (at < 0 || payload.Length < at + 2) return;
        BinaryPrimitives.WriteUInt16BigEndian(payload[at..], 0);
        uint sum = protocol == IPv4Packet.ProtocolIcmp ? 0 : Checksum.PseudoHeader(source, destination, protocol, payload.Length);
        ushort value = Checksum.Finish(Checksum.Accumulate(sum, payload));
        // RFC 768: a computed UDP checksum of zero is sent as all ones (zero means "none").
        if (value == 0 && protocol == IPv4Packet.ProtocolUdp) value = 0xffff;
        BinaryPrimitives.WriteUInt16BigEndian(payload[at..], value);
    }
}
