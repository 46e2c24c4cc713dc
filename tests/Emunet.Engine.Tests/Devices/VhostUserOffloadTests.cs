using System.Buffers.Binary;
using Emunet.Engine.Devices.VhostUser;
using Emunet.Engine.Devices.Virtio;
using Emunet.Engine.Diagnostics;
using Emunet.Engine.Interop;
using Emunet.Engine.Link;
using Emunet.Engine.Wire;

namespace Emunet.Engine.Tests.Devices;

/// <summary>
/// The vhost-user device's offloads (VIRTIO 1.2 §5.1.6: CSUM, GUEST_CSUM, HOST_TSO4, GUEST_TSO4) and EVENT_IDX
/// (§2.7.10), played by the mock driver: partially checksummed and 64 KiB frames from the guest, headers that lie,
/// the header on frames to the guest, and calls and kicks that follow used_event / avail_event. PacketDotNet checks
/// the checksums the device finishes.
/// </summary>
public sealed partial class VhostUserDeviceTests
{
    private const ulong AllFeatures = VhostUserProtocol.OfferedFeatures;
    private static readonly IPv4Address GuestIp = new(10, 0, 2, 15);
    private static readonly IPv4Address HostIp = new(10, 0, 2, 2);

    /// <summary>
    /// Ethernet + IPv4 + TCP (20-byte header) or UDP frame from the guest, with the L4 checksum field holding only the
    /// pseudo-header sum, as a driver that leaves the checksum to the device writes it.
    /// </summary>
    private static byte[] PartialFrame(byte protocol, int payloadLength, byte seed)
    {
        int l4Header = protocol == IPv4Packet.ProtocolTcp ? 20 : 8;
        int l4 = l4Header + payloadLength;
        var f = new byte[14 + 20 + l4];
        new byte[] { 0x52, 0x55, 0x0a, 0, 2, 2, 0x52, 0x54, 0, 0x12, 0x34, 0x56, 0x08, 0x00 }.CopyTo(f, 0);
        var ip = f.AsSpan(14, 20);
        ip[0] = 0x45;
        BinaryPrimitives.WriteUInt16BigEndian(ip[2..], (ushort)(20 + l4));
        ip[8] = 64;
        ip[9] = protocol;
        new byte[] { 10, 0, 2, 15, 10, 0, 2, 2 }.CopyTo(ip[12..]);
        BinaryPrimitives.WriteUInt16BigEndian(ip[10..], Checksum.Compute(ip));
        var l = f.AsSpan(34);
        BinaryPrimitives.WriteUInt16BigEndian(l, 40000);
        BinaryPrimitives.WriteUInt16BigEndian(l[2..], 5001);
        int field;
        if (protocol == IPv4Packet.ProtocolTcp)
        {
            BinaryPrimitives.WriteUInt32BigEndian(l[4..], 1000);
            BinaryPrimitives.WriteUInt32BigEndian(l[8..], 2000);
            l[12] = 5 << 4;
            l[13] = 0x18; // PSH|ACK
            BinaryPrimitives.WriteUInt16BigEndian(l[14..], 5000);
            field = 16;
        }
        else
        {
            BinaryPrimitives.WriteUInt16BigEndian(l[4..], (ushort)l4);
            field = 6;
        }
        for (int i = 0; i < payloadLength; i++) l[l4Header + i] = (byte)(seed + i * 13);
        uint pseudo = Checksum.PseudoHeader(GuestIp, HostIp, protocol, l4);
        BinaryPrimitives.WriteUInt16BigEndian(l[field..], (ushort)~Checksum.Finish(pseudo));
        return f;
    }

    /// <summary>struct virtio_net_hdr (VIRTIO 1.2 §5.1.6), little-endian, num_buffers 0.</summary>
    private static byte[] NetHdr(byte flags = 0, byte gsoType = 0, ushort hdrLen = 0, ushort gsoSize = 0, ushort csumStart = 0, ushort csumOffset = 0)
    {
        var h = new byte[12];
        h[0] = flags;
        h[1] = gsoType;
        BinaryPrimitives.WriteUInt16LittleEndian(h.AsSpan(2), hdrLen);
        BinaryPrimitives.WriteUInt16LittleEndian(h.AsSpan(4), gsoSize);
        BinaryPrimitives.WriteUInt16LittleEndian(h.AsSpan(6), csumStart);
        BinaryPrimitives.WriteUInt16LittleEndian(h.AsSpan(8), csumOffset);
        return h;
    }

    private const byte NeedsCsum = 1, DataValid = 2, GsoTcpV4 = 1, GsoUdp = 3, GsoEcn = 0x80;

    /// <summary>Puts header and frame in one transmit buffer at <paramref name="address"/> and makes it available.</summary>
    private void GuestSends(ulong address, byte[] hdr, byte[] frame)
    {
        WriteGuest(address, hdr);
        WriteGuest(address + 12, frame);
        _tx.AddChain((address, (uint)(12 + frame.Length), false));
    }

    private static PacketDotNet.IPv4Packet Oracle(byte[] frame)
    {
        var eth = new PacketDotNet.EthernetPacket(new PacketDotNet.Utils.ByteArraySegment(frame));
        return Assert.IsType<PacketDotNet.IPv4Packet>(eth.PayloadPacket);
    }

    private Task SendToGuestWith(byte[] frame, TransmitOffload offload) => _loop.InvokeAsync(() =>
    {
        var lease = _device.BeginTransmit(frame.Length);
        if (lease.IsEmpty) throw new InvalidOperationException("no lease");
        frame.CopyTo(lease.Buffer);
        lease.Commit(frame.Length, offload);
        return 0;
    });

    [Fact]
    public void Partially_checksummed_and_64_KiB_TCP_frames_from_the_guest_reach_the_stack_whole_with_their_checksums_finished()
    {
        Handshake(AllFeatures);
        var tcp = PartialFrame(IPv4Packet.ProtocolTcp, 100, 1);
        var udp = PartialFrame(IPv4Packet.ProtocolUdp, 50, 2);
        var gso = PartialFrame(IPv4Packet.ProtocolTcp, 20000, 3); // a TSO super-frame: 14 segments of 1448 and a tail
        GuestSends(Buf(0), NetHdr(NeedsCsum, csumStart: 34, csumOffset: 16), tcp);
        GuestSends(Buf(1), NetHdr(NeedsCsum, csumStart: 34, csumOffset: 6), udp);
        GuestSends(0x200000, NetHdr(NeedsCsum, GsoTcpV4, hdrLen: 54, gsoSize: 1448, csumStart: 34, csumOffset: 16), gso);
        LibcVhost.SignalEventFd(_kick[1]);

        Assert.True(_handler.WaitFrames(3));
        Assert.True(_handler.Frames.TryDequeue(out var a));
        Assert.True(_handler.Frames.TryDequeue(out var b));
        Assert.True(_handler.Frames.TryDequeue(out var c));
        var tcpSeen = Assert.IsType<PacketDotNet.TcpPacket>(Oracle(a).PayloadPacket);
        Assert.True(tcpSeen.ValidTcpChecksum, "TCP checksum finished by the device");
        Assert.Equal(tcp.AsSpan(54).ToArray(), tcpSeen.PayloadData);
        var udpSeen = Assert.IsType<PacketDotNet.UdpPacket>(Oracle(b).PayloadPacket);
        Assert.True(udpSeen.ValidUdpChecksum, "UDP checksum finished by the device");
        Assert.Equal(gso.Length, c.Length); // one frame larger than any MTU, as the guest's TCP sent it
        var gsoIp = Oracle(c);
        Assert.Equal(20040, gsoIp.TotalLength);
        var gsoSeen = Assert.IsType<PacketDotNet.TcpPacket>(gsoIp.PayloadPacket);
        Assert.True(gsoSeen.ValidTcpChecksum, "super-frame checksum finished by the device");
        Assert.Equal(gso.AsSpan(54).ToArray(), gsoSeen.PayloadData);
        Assert.True(WaitSignal(_call[1]));
        Assert.Equal(3, _tx.UsedIndex);
    }

    [Fact]
    public async Task Offload_headers_that_lie_are_counted_drops_and_the_queue_keeps_running()
    {
        Handshake(AllFeatures);
        var tcp = PartialFrame(IPv4Packet.ProtocolTcp, 100, 4); // 154 bytes
        GuestSends(Buf(0), NetHdr(NeedsCsum, csumStart: 34, csumOffset: 119), tcp); // field at 153: one byte past the end
        GuestSends(Buf(1), NetHdr(NeedsCsum, csumStart: 4, csumOffset: 16), tcp); // coverage starts inside the Ethernet header
        GuestSends(Buf(2), NetHdr(NeedsCsum, csumStart: 0xffff, csumOffset: 0xffff), tcp); // 16-bit extremes
        GuestSends(Buf(3), NetHdr(0, GsoTcpV4, 54, 1448), tcp); // GSO without NEEDS_CSUM (§5.1.6.2.1)
        GuestSends(Buf(4), NetHdr(NeedsCsum, GsoUdp, 42, 1000, 34, 6), tcp); // UFO: not offered
        GuestSends(Buf(5), NetHdr(NeedsCsum, GsoTcpV4 | GsoEcn, 54, 1448, 34, 16), tcp); // ECN: HOST_ECN not offered
        GuestSends(Buf(6), NetHdr(NeedsCsum, GsoTcpV4, 54, 0, 34, 16), tcp); // a segment size of zero
        GuestSends(Buf(7), NetHdr(NeedsCsum, csumStart: 34, csumOffset: 16), tcp); // the truth, at last
        LibcVhost.SignalEventFd(_kick[1]);

        Assert.True(_handler.WaitFrames(1));
        Assert.True(_handler.Frames.TryDequeue(out var good));
        Assert.True(Assert.IsType<PacketDotNet.TcpPacket>(Oracle(good).PayloadPacket).ValidTcpChecksum);
        Assert.Equal(7, await Drops(DropReason.VirtioBadOffload));
        Assert.True(WaitSignal(_call[1]));
        Assert.Equal(8, _tx.UsedIndex); // every chain goes back, dropped or not
        Assert.Empty(_handler.Frames);
    }

    [Fact]
    public async Task Offloads_the_guest_did_not_negotiate_are_refused_and_none_are_offered_to_the_stack()
    {
        Handshake(Features); // no CSUM, no HOST_TSO4, no GUEST_CSUM
        Assert.Equal(LinkOffloads.None, await _loop.InvokeAsync(() => _device.Offloads));
        var tcp = PartialFrame(IPv4Packet.ProtocolTcp, 100, 5);
        GuestSends(Buf(0), NetHdr(NeedsCsum, csumStart: 34, csumOffset: 16), tcp);
        GuestSends(Buf(1), NetHdr(NeedsCsum, GsoTcpV4, 54, 1448, 34, 16), tcp);
        WriteGuest(Buf(2), new byte[12]);
        WriteGuest(Buf(2) + 12, Frame(60, 6));
        _tx.AddChain((Buf(2), 72, false));
        LibcVhost.SignalEventFd(_kick[1]);
        Assert.True(_handler.WaitFrames(1));
        Assert.Equal(2, await Drops(DropReason.VirtioBadOffload));

        // The stack should not ask, but if it did the device finishes the checksum itself and sends a plain header.
        _rx.AddChain((Buf(10), 4096, true));
        var partial = PartialFrame(IPv4Packet.ProtocolTcp, 1000, 7);
        await SendToGuestWith(partial, new TransmitOffload { PartialChecksum = true, ChecksumStart = 34, ChecksumOffset = 16 });
        Assert.Equal(1, _rx.UsedIndex);
        Assert.Equal(new byte[10], ReadGuest(Buf(10), 10));
        var seen = ReadGuest(Buf(10) + 12, partial.Length);
        Assert.True(Assert.IsType<PacketDotNet.TcpPacket>(Oracle(seen).PayloadPacket).ValidTcpChecksum);
    }

    [Fact]
    public async Task Frames_to_the_guest_are_marked_data_valid_or_carry_a_partial_checksum_and_GSO_fields()
    {
        Handshake(AllFeatures);
        Assert.Equal(LinkOffloads.PartialChecksum | LinkOffloads.TcpSegmentation, await _loop.InvokeAsync(() => _device.Offloads));
        _rx.AddChain((Buf(10), 4096, true));
        _rx.AddChain((Buf(11), 4096, true), (Buf(12), 4096, true));
        var plain = Frame(100, 8);
        Assert.True((await SendToGuest(plain)).Taken);
        var header = ReadGuest(Buf(10), 12);
        Assert.Equal(DataValid, header[0]); // §5.1.6.4: the stack's checksums are sound, the guest need not verify them
        Assert.Equal(new byte[9], header[1..10]);
        Assert.Equal(plain, ReadGuest(Buf(10) + 12, plain.Length));

        // A TCP frame of 5 segments' payload with only the pseudo-header sum: NEEDS_CSUM, GSO TCPV4, gso_size = MSS.
        var big = PartialFrame(IPv4Packet.ProtocolTcp, 5 * 1460, 9);
        await SendToGuestWith(big, new TransmitOffload { PartialChecksum = true, ChecksumStart = 34, ChecksumOffset = 16, SegmentSize = 1460, HeaderLength = 54 });
        Assert.Equal(2, _rx.UsedIndex);
        header = ReadGuest(Buf(11), 12);
        Assert.Equal(NeedsCsum, header[0]);
        Assert.Equal(GsoTcpV4, header[1]);
        Assert.Equal(54, BinaryPrimitives.ReadUInt16LittleEndian(header.AsSpan(2))); // hdr_len
        Assert.Equal(1460, BinaryPrimitives.ReadUInt16LittleEndian(header.AsSpan(4))); // gso_size
        Assert.Equal(34, BinaryPrimitives.ReadUInt16LittleEndian(header.AsSpan(6))); // csum_start
        Assert.Equal(16, BinaryPrimitives.ReadUInt16LittleEndian(header.AsSpan(8))); // csum_offset
        Assert.Equal(1, BinaryPrimitives.ReadUInt16LittleEndian(header.AsSpan(10))); // one chain of two buffers
        var got = ReadGuest(Buf(11) + 12, 4084).Concat(ReadGuest(Buf(12), big.Length - 4084)).ToArray();
        Assert.Equal(big, got); // the frame as the stack left it: the guest finishes the checksum if it ever needs it
    }

    /// <summary>The stack's direct path: <paramref name="frame"/> handed over as headers, then its payload in two pieces (a wrapped send ring).</summary>
    private Task<bool> SendDirect(byte[] frame, int headLength, int bodyLength, TransmitOffload offload) => _loop.InvokeAsync(() =>
        _device.TryTransmitDirect(new FramePieces(frame.AsSpan(0, headLength), frame.AsSpan(headLength, bodyLength), frame.AsSpan(headLength + bodyLength)), in offload));

    [Fact]
    public async Task Direct_receive_writes_the_pieces_straight_into_receive_buffers_and_steps_aside_when_it_cannot()
    {
        Handshake(AllFeatures);
        var big = PartialFrame(IPv4Packet.ProtocolTcp, 3 * 1460, 7); // 54 + 4380 bytes
        var offload = new TransmitOffload { PartialChecksum = true, ChecksumStart = 34, ChecksumOffset = 16, SegmentSize = 1460, HeaderLength = 54 };

        // No receive buffers: refused, nothing used, and the device asks for a kick.
        Assert.False(await SendDirect(big, 54, 1000, offload));
        Assert.Equal(0, _rx.UsedIndex);

        // Three buffers of 2 KiB: header and frame across all three (12 + 4434 = 2048 + 2048 + 350), pieces in order.
        for (int i = 0; i < 3; i++) _rx.AddChain((Buf(10 + i), 2048, true));
        Assert.True(await SendDirect(big, 54, 1000, offload));
        Assert.Equal(3, _rx.UsedIndex);
        Assert.Equal((2u, 350u), _rx.UsedElement(2));
        var header = ReadGuest(Buf(10), 12);
        Assert.Equal(NeedsCsum, header[0]);
        Assert.Equal(GsoTcpV4, header[1]);
        Assert.Equal(54, BinaryPrimitives.ReadUInt16LittleEndian(header.AsSpan(2))); // hdr_len
        Assert.Equal(1460, BinaryPrimitives.ReadUInt16LittleEndian(header.AsSpan(4))); // gso_size
        Assert.Equal(3, BinaryPrimitives.ReadUInt16LittleEndian(header.AsSpan(10))); // num_buffers
        var got = ReadGuest(Buf(10) + 12, 2036).Concat(ReadGuest(Buf(11), 2048)).Concat(ReadGuest(Buf(12), 350)).ToArray();
        Assert.Equal(big, got);
        Assert.Equal(1, await _loop.InvokeAsync(() => _counters.FramesToGuestDirect));

        // A frame waiting in the pending buffer goes first: while it waits, the direct path steps aside even with
        // buffers posted (no kick yet), so a later segment cannot overtake it.
        var waiting = Frame(100, 8);
        Assert.True((await SendToGuest(waiting)).Taken);
        Assert.Equal(3, _rx.UsedIndex);
        _rx.AddChain((Buf(13), 4096, true));
        _rx.AddChain((Buf(14), 8192, true));
        Assert.False(await SendDirect(big, 54, 2000, offload));
        LibcVhost.SignalEventFd(_kick[0]);
        // With EVENT_IDX and used_event left at 0 no call follows this delivery: watch the used index.
        for (var until = DateTime.UtcNow.AddSeconds(5); _rx.UsedIndex < 4 && DateTime.UtcNow < until;) await Task.Delay(1);
        Assert.Equal(4, _rx.UsedIndex);
        Assert.Equal(waiting, ReadGuest(Buf(13) + 12, waiting.Length));

        // A capture wants whole frames: the direct path steps aside for it.
        await _loop.InvokeAsync(() => { _device.Tap = (_, _) => { }; return 0; });
        Assert.False(await SendDirect(big, 54, 2000, offload));
        await _loop.InvokeAsync(() => { _device.Tap = null; return 0; });
        Assert.True(await SendDirect(big, 54, 2000, offload));
        Assert.Equal(5, _rx.UsedIndex);
        Assert.Equal(big, ReadGuest(Buf(14) + 12, big.Length));
        Assert.Equal(2, await _loop.InvokeAsync(() => _counters.FramesToGuestDirect));
    }

    [Fact]
    public async Task With_event_idx_calls_follow_used_event_and_the_device_asks_for_kicks_only_when_it_waits()
    {
        Handshake(AllFeatures);
        var usedEvent = new GuestAddress(_tx.Avail.Value + 4 + 2ul * QueueSize); // §2.7.10: after the available ring
        ushort AvailEvent(VirtioMockDriver d) // after the used ring
        {
            Assert.True(_memory.TryReadUInt16(new GuestAddress(d.Used.Value + 4 + 8ul * QueueSize), out ushort v));
            return v;
        }

        void SendPlain(int n)
        {
            WriteGuest(Buf(n), new byte[12]);
            WriteGuest(Buf(n) + 12, Frame(60, (byte)n));
            _tx.AddChain((Buf(n), 72, false));
        }

        // The first used buffer gets a call; the device asks to be kicked for the next available one.
        SendPlain(0);
        LibcVhost.SignalEventFd(_kick[1]);
        Assert.True(_handler.WaitFrames(1));
        Assert.True(WaitSignal(_call[1]));
        Assert.Equal(1, AvailEvent(_tx));

        // The driver wants a call only once used entry 3 is used: the second frame brings none.
        Assert.True(_memory.TryWriteUInt16(usedEvent, 3));
        SendPlain(1);
        LibcVhost.SignalEventFd(_kick[1]);
        Assert.True(_handler.WaitFrames(1));
        await _loop.InvokeAsync(() => 0); // the batch that used it has ended
        Assert.Equal(2, _tx.UsedIndex);
        Assert.False(LibcVhost.DrainEventFd(_call[1]));
        Assert.Equal(2, AvailEvent(_tx));
        SendPlain(2);
        SendPlain(3);
        LibcVhost.SignalEventFd(_kick[1]);
        Assert.True(_handler.WaitFrames(2));
        Assert.True(WaitSignal(_call[1]));
        Assert.Equal(4, _tx.UsedIndex);

        // Receive: the device leaves avail_event alone while it has buffers, and sets it when a frame has to wait.
        _rx.AddChain((Buf(10), 4096, true));
        Assert.True((await SendToGuest(Frame(100, 20))).Taken);
        Assert.Equal(1, _rx.UsedIndex);
        Assert.True(WaitSignal(_call[0]));
        Assert.Equal(0, AvailEvent(_rx));
        Assert.True((await SendToGuest(Frame(100, 21))).Taken);
        Assert.Equal(1, _rx.UsedIndex);
        Assert.Equal(1, AvailEvent(_rx)); // kick me when the driver adds buffer number 1
        Assert.True(_memory.TryWriteUInt16(new GuestAddress(_rx.Avail.Value + 4 + 2ul * QueueSize), 1)); // call me once entry 1 is used
        _rx.AddChain((Buf(11), 4096, true));
        LibcVhost.SignalEventFd(_kick[0]);
        Assert.True(WaitSignal(_call[0]));
        Assert.Equal(2, _rx.UsedIndex);
        Assert.Equal(Frame(100, 21), ReadGuest(Buf(11) + 12, 100));
    }

    [Theory]
    [InlineData(0, 1, 0, true)] // the classic: event 0, index moved 0 -> 1
    [InlineData(1, 1, 0, false)] // the event is the new index itself: not yet
    [InlineData(5, 10, 3, true)]
    [InlineData(2, 10, 3, false)] // passed before the last call: already signalled
    [InlineData(0xffff, 2, 0xfffe, true)] // across the wrap
    [InlineData(3, 2, 0xfffe, false)]
    [InlineData(7, 7, 7, false)] // nothing new: never
    public void Need_event_is_the_vring_need_event_rule_modulo_2_16(int eventIndex, int now, int old, bool expected) =>
        Assert.Equal(expected, SplitQueue.NeedEvent((ushort)eventIndex, (ushort)now, (ushort)old));
}
