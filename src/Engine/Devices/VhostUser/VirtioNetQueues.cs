using System.Buffers.Binary;
using Emunet.Engine.Devices.Virtio;
using Emunet.Engine.Diagnostics;
using Emunet.Engine.Interop;
using Emunet.Engine.Link;
using Emunet.Engine.Runtime;
using Emunet.Engine.Wire;

namespace Emunet.Engine.Devices.VhostUser;

/// <summary>
/// Theory of operation: the virtio-net data path over the two rings the <see cref="VhostUserSession"/> set up
/// (VIRTIO 1.2 §5.1). Queue 1 (transmit, guest to Emunet): on a kick the device takes available chains, copies
/// header and frame into one scratch buffer (the guest may rewrite its buffers at any time), finishes what the header
/// left to it (NEEDS_CSUM, a TCPv4 GSO frame: <see cref="ApplyGuestOffloads"/>), hands the frame to the stack and
/// returns each chain to the used ring, at most <see cref="TransmitBudget"/> chains per kick.
/// Queue 0 (receive, Emunet to guest): the stack writes a frame into a pending buffer (<see cref="BeginTransmit"/>),
/// <see cref="CommitTransmit(int, int, in TransmitOffload)"/> puts its virtio_net_hdr in front (DATA_VALID, or
/// NEEDS_CSUM and GSO as the stack asked, <see cref="Offloads"/>), and delivery copies both into receive chains with
/// num_buffers saying how many chains the frame spans (VIRTIO_NET_F_MRG_RXBUF). Direct receive
/// (<see cref="TryTransmitDirect"/>) skips the pending buffer: a TCP segment's headers and the payload where it lies
/// in the connection's send ring are written straight into the receive chains, one copy from ring to guest, whenever
/// no frame is waiting ahead of it. When the guest has no receive buffers,
/// frames wait in that bounded buffer and <see cref="TransmitSpace"/> shrinks: the stack stops reading host sockets
/// until a kick on queue 0 brings buffers and <see cref="IFrameHandler.OnTransmitReady"/>. A ring that used buffers
/// gets at most one call at the end of the loop batch (<see cref="OnEndOfBatch"/>), unless the driver suppressed it
/// (§2.7.7) or, with EVENT_IDX, its used_event was not reached (§2.7.10); the device asks for kicks (avail_event) only
/// when the transmit ring ran empty or a frame waits for receive buffers. A bad chain or offload header drops its
/// frame; a bad ring stops that queue. No allocation per frame. Owner thread only.
/// </summary>
internal sealed class VirtioNetQueues : IEndOfBatch
{
    /// <summary>VIRTIO 1.2 §5.1.6: struct virtio_net_hdr is 12 bytes with VERSION_1 or MRG_RXBUF, 10 otherwise.</summary>
    public const int NetHeaderLength = 12;
    private const int LegacyNetHeaderLength = 10;

    // VIRTIO 1.2 §5.1.6: struct virtio_net_hdr { u8 flags; u8 gso_type; le16 hdr_len; le16 gso_size; le16 csum_start;
    // le16 csum_offset; le16 num_buffers; }
    private const int FlagsOffset = 0;
    private const int GsoTypeOffset = 1;
    private const int HdrLenOffset = 2;
    private const int GsoSizeOffset = 4;
    private const int CsumStartOffset = 6;
    private const int CsumOffsetOffset = 8;
    private const int NumBuffersOffset = 10;
    private const byte FlagNeedsCsum = 1;
    private const byte FlagDataValid = 2;
    private const byte GsoNone = 0;
    private const byte GsoTcpV4 = 1;
    private const byte GsoEcn = 0x80;
    private const int EthernetHeaderLength = 14;
    private const int MaxFrameLength = LinkLimits.MaxFrameLength;
    private const int PendingBufferSize = 2 * 1024 * 1024;
    /// <summary>Transmit chains taken per kick before other work runs (the device re-kicks itself for the rest).</summary>
    private const int TransmitBudget = 256;

    private readonly VhostUserSession _session;
    private readonly IFrameDevice _device;
    private readonly Counters _counters;
    private readonly byte[] _gather = GC.AllocateUninitializedArray<byte>(NetHeaderLength + MaxFrameLength, pinned: true);
    private readonly FrameQueue _pending = new(PendingBufferSize);
    private readonly ushort[] _rxHeads = new ushort[SplitQueue.MaxSize];
    private readonly uint[] _rxLengths = new uint[SplitQueue.MaxSize];
    private bool _pushedBack;

    /// <summary>The data path over the rings of <paramref name="session"/>; leases commit through <paramref name="device"/>.</summary>
    public VirtioNetQueues(VhostUserSession session, IFrameDevice device, Counters counters)
    {
        _session = session;
        _device = device;
        _counters = counters;
    }

    public IFrameHandler? Handler { get; set; }

    public FrameTap? Tap { get; set; }

    /// <summary>Bytes of frames that can still wait for receive buffers.</summary>
    public int TransmitSpace => _pending.Space;

    /// <summary>
    /// What the guest negotiated that the stack may leave to the device on frames toward it: partial TCP checksums
    /// (GUEST_CSUM) and 64 KiB TCP frames (GUEST_TSO4, which §5.1.3.1 allows only with GUEST_CSUM).
    /// </summary>
    public LinkOffloads Offloads
    {
        get
        {
            if (!_session.Negotiated(VhostUserProtocol.VirtioNetFGuestCsum)) return LinkOffloads.None;
            // A 64 KiB frame needs a 12-byte header with num_buffers to span small receive buffers (MRG_RXBUF).
            return _session.Negotiated(VhostUserProtocol.VirtioNetFGuestTso4) && _session.Negotiated(VhostUserProtocol.VirtioNetFMrgRxbuf)
                ? LinkOffloads.PartialChecksum | LinkOffloads.TcpSegmentation
                : LinkOffloads.PartialChecksum;
        }
    }

    private int HeaderLength =>
        _session.Negotiated(VhostUserProtocol.VirtioFVersion1) || _session.Negotiated(VhostUserProtocol.VirtioNetFMrgRxbuf) ? NetHeaderLength : LegacyNetHeaderLength;

    /// <summary>A running ring was kicked, started or enabled: drain the transmit queue, or deliver waiting frames.</summary>
    public void OnRingReady(Vring vring)
    {
        if (vring.Index == VhostUserProtocol.TxQueue) DrainTransmit(vring);
        else OnReceiveBuffersPosted();
    }

    /// <summary>The connection ended: waiting frames are dropped with it.</summary>
    public void Reset()
    {
        _pending.Clear();
        _pushedBack = false;
    }

    // ---- Transmit queue: frames from the guest ------------------------------------------------------------------

    private void DrainTransmit(Vring v)
    {
        var q = v.Queue;
        if (q is null || !v.Running) return;
        int header = HeaderLength;
        int budget = TransmitBudget;
        bool used = false;
        while (budget-- > 0 && v.Running)
        {
            if (!q.TryPop(out var chain, out var ringError))
            {
                if (ringError != VirtqError.None) v.Break(ringError, "the available ring is broken");
                // §2.7.10: with EVENT_IDX, ask for a kick on the next frame; one added meanwhile is taken now.
                else if (q.ArmAvailEvent()) continue;
                break;
            }
            ReceiveChain(v, ref chain, header);
            q.AddUsed(chain.Head, 0); // §2.7.8: the device wrote nothing into a transmit buffer
            used = true;
        }
        if (used) v.PublishUsed();
        // Budget spent with chains left: kick ourselves so the loop serves host sockets first and then comes back.
        if (budget < 0 && v.Running && q.AvailableCount() > 0 && v.KickFd >= 0) LibcVhost.SignalEventFd(v.KickFd);
    }

    /// <summary>Delivers the frame one transmit chain holds (after its virtio_net_hdr) to the stack, or counts the drop.</summary>
    private void ReceiveChain(Vring v, ref DescriptorChain chain, int header)
    {
        // The frame is always copied out of guest memory first, even from a single buffer: the guest can rewrite its
        // buffers while the stack parses, and the wire views re-read fields (an IPv4 header length checked once and
        // changed after would move a slice out of range). One copy of a frame costs less than that risk.
        // §5.1.6.2: the header and the frame may be split across buffers anywhere.
        int length = 0;
        while (chain.TryNext(out var d))
            if (!Gather(v, d, ref length, header)) return;
        if (chain.Error != VirtqError.None)
        {
            v.Fault(chain.Error, "a bad transmit chain");
            return;
        }
        if (!CheckTransmitLength((uint)length, header)) return;
        var frame = _gather.AsSpan(header, length - header);
        if (!ApplyGuestOffloads(_gather.AsSpan(0, header), frame)) return;
        Tap?.Invoke(frame, false);
        Handler?.OnFrame(frame);
    }

    /// <summary>Appends one transmit buffer to the scratch buffer at <paramref name="length"/>, or counts the drop.</summary>
    private bool Gather(Vring v, Descriptor d, ref int length, int header)
    {
        if (d.Writable)
        {
            v.Fault(VirtqError.None, "a transmit buffer is device-writable");
            return false;
        }
        if ((ulong)length + d.Length > (ulong)(header + MaxFrameLength))
        {
            _counters.Drop(DropReason.FrameTooLong);
            return false;
        }
        // Fits the scratch buffer (checked above) and lies in guest memory (checked by the chain walk).
        _session.Memory!.TryRead(d.Address, _gather.AsSpan(length, (int)d.Length));
        length += (int)d.Length;
        return true;
    }

    /// <summary>
    /// Finishes what the guest left to the device on a frame it sent, on the engine's own copy (VIRTIO 1.2 §5.1.6.2):
    /// NEEDS_CSUM (the L4 checksum field holds only the pseudo-header sum; the device sums from csum_start to the end
    /// and stores the result at csum_start + csum_offset, RFC 1071), and a TCPv4 GSO frame (one TCP segment of up to
    /// 64 KiB, which the stack takes as it is: it terminates TCP and never puts the frame on a wire, so there is nothing
    /// to cut). The stack then checks every checksum as usual, so a guest that lies about the pseudo-header sum is
    /// caught there. A header that does not fit the frame, or asks for what was not negotiated, drops the frame
    /// (<see cref="DropReason.VirtioBadOffload"/>).
    /// </summary>
    private bool ApplyGuestOffloads(ReadOnlySpan<byte> hdr, Span<byte> frame)
    {
        byte flags = hdr[FlagsOffset];
        byte gsoType = hdr[GsoTypeOffset];
        if ((flags & FlagNeedsCsum) != 0)
        {
            // §5.1.6.2.1: the driver sets NEEDS_CSUM only with VIRTIO_NET_F_CSUM.
            if (!_session.Negotiated(VhostUserProtocol.VirtioNetFCsum)) return BadOffload();
            int start = BinaryPrimitives.ReadUInt16LittleEndian(hdr[CsumStartOffset..]);
            int offset = BinaryPrimitives.ReadUInt16LittleEndian(hdr[CsumOffsetOffset..]);
            // Both are 16-bit: the sum cannot overflow. The field lies after the Ethernet header and inside the frame.
            int at = start + offset;
            if (start < EthernetHeaderLength || at + 2 > frame.Length) return BadOffload();
            ushort sum = Checksum.Finish(Checksum.Accumulate(0, frame[start..]));
            // RFC 768: a computed UDP checksum of zero is sent as all ones (the same one's complement value for TCP).
            BinaryPrimitives.WriteUInt16BigEndian(frame[at..], sum == 0 ? (ushort)0xffff : sum);
        }
        if (gsoType == GsoNone) return true;
        // §5.1.6.2.1: GSO only as negotiated (HOST_TSO4 here; no ECN, UDP or IPv6 GSO is offered), always with
        // NEEDS_CSUM, and with a segment size; the stack checks the IPv4 and TCP headers of the frame like any other.
        if ((gsoType & GsoEcn) != 0 || gsoType != GsoTcpV4 || !_session.Negotiated(VhostUserProtocol.VirtioNetFHostTso4)) return BadOffload();
        if ((flags & FlagNeedsCsum) == 0) return BadOffload();
        int gsoSize = BinaryPrimitives.ReadUInt16LittleEndian(hdr[GsoSizeOffset..]);
        if (gsoSize == 0 || BinaryPrimitives.ReadUInt16BigEndian(frame[12..]) != EthernetFrame.EtherTypeIPv4) return BadOffload(); // 14 bytes checked
        return true;
    }

    private bool BadOffload()
    {
        _counters.Drop(DropReason.VirtioBadOffload);
        return false;
    }

    private bool CheckTransmitLength(uint total, int header)
    {
        if (total < (uint)header + 14)
        {
            _counters.Drop(DropReason.FrameTooShort);
            return false;
        }
        if (total > (uint)(header + MaxFrameLength))
        {
            _counters.Drop(DropReason.FrameTooLong);
            return false;
        }
        return true;
    }

    // ---- Receive queue: frames to the guest ---------------------------------------------------------------------

    /// <summary>Lends room for a frame in the pending buffer, behind room for its virtio_net_hdr (written at commit).</summary>
    public TransmitLease BeginTransmit(int maxLength)
    {
        if (maxLength > MaxFrameLength || maxLength < 0) return default;
        var room = _pending.Reserve(NetHeaderLength + maxLength, out int token);
        if (room.IsEmpty)
        {
            _pushedBack = true;
            return default;
        }
        return new TransmitLease(_device, room[NetHeaderLength..], token);
    }

    public void CommitTransmit(int token, int length) => CommitTransmit(token, length, default);

    /// <summary>
    /// Queues the frame behind the virtio_net_hdr that says what is left to the guest's driver (<see cref="WriteNetHeader"/>);
    /// a checksum the guest did not agree to finish is finished here instead.
    /// </summary>
    public void CommitTransmit(int token, int length, in TransmitOffload offload)
    {
        CheckOffload(length, in offload);
        if ((uint)length > MaxFrameLength || !_pending.TryCommit(token, NetHeaderLength + length, out var item)) return;
        var frame = item[NetHeaderLength..];
        if (!WriteNetHeader(item[..NetHeaderLength], in offload))
        {
            // The guest cannot finish it: do it here (the field holds the pseudo-header sum, RFC 1071).
            int start = offload.ChecksumStart, at = start + offload.ChecksumOffset;
            BinaryPrimitives.WriteUInt16BigEndian(frame[at..], Checksum.Finish(Checksum.Accumulate(0, frame[start..])));
        }
        Tap?.Invoke(frame, true);
        FlushReceive();
    }

    /// <summary>
    /// Direct receive: writes <paramref name="frame"/>'s pieces, behind its virtio_net_hdr, straight into the guest's
    /// receive chains (<see cref="DeliverFrame"/>), when nothing waits in the pending buffer (frames keep their order),
    /// no capture wants the whole frame, the guest finishes what <paramref name="offload"/> leaves, and it posted
    /// enough buffers. False, with nothing used, otherwise: the stack then queues the frame through a lease.
    /// </summary>
    public bool TryTransmitDirect(in FramePieces frame, in TransmitOffload offload)
    {
        CheckOffload(frame.Length, in offload);
        var v = _session.Vrings[VhostUserProtocol.RxQueue];
        var q = v.Queue;
        if (q is null || !v.Running || !_pending.IsEmpty || Tap is not null || (uint)frame.Length > MaxFrameLength) return false;
        Span<byte> hdr = stackalloc byte[NetHeaderLength];
        if (!WriteNetHeader(hdr, in offload)) return false; // a checksum to finish here needs the frame in one piece
        var outcome = DeliverFrame(v, q, hdr, in frame);
        if (outcome == Delivery.NoBuffers)
        {
            // As FlushReceive: ask for a kick when more come; the frame goes to the pending buffer meanwhile.
            q.ArmAvailEvent();
            return false;
        }
        if (outcome != Delivery.Discarded) v.PublishUsed();
        _counters.FramesToGuestDirect++;
        return true;
    }

    /// <summary>The stack's own contract, checked before anything is queued or written (both are ours, not the guest's).</summary>
    private static void CheckOffload(int length, in TransmitOffload offload)
    {
        int start = offload.ChecksumStart, at = offload.ChecksumStart + offload.ChecksumOffset;
        if (offload.PartialChecksum && (start < EthernetHeaderLength || start > ushort.MaxValue || (uint)offload.ChecksumOffset > ushort.MaxValue || at + 2 > length))
            throw new ArgumentException("The checksum to finish lies outside the frame.", nameof(offload));
    }

    /// <summary>
    /// Writes the virtio_net_hdr that says what is left to the guest's driver (§5.1.6.4): nothing (DATA_VALID once
    /// GUEST_CSUM is negotiated: the stack's checksums are sound, the guest need not verify them), a partial TCP checksum
    /// (NEEDS_CSUM with csum_start/csum_offset), and for a frame larger than one segment gso_type TCPV4 with gso_size =
    /// the guest's MSS. num_buffers is written at delivery. False when the offload asks for a checksum the guest did not
    /// agree to finish: the caller finishes it.
    /// </summary>
    private bool WriteNetHeader(Span<byte> hdr, in TransmitOffload offload)
    {
        hdr.Clear();
        bool guestCsum = _session.Negotiated(VhostUserProtocol.VirtioNetFGuestCsum);
        if (offload.PartialChecksum)
        {
            if (!guestCsum) return false;
            hdr[FlagsOffset] = FlagNeedsCsum;
            BinaryPrimitives.WriteUInt16LittleEndian(hdr[CsumStartOffset..], (ushort)offload.ChecksumStart);
            BinaryPrimitives.WriteUInt16LittleEndian(hdr[CsumOffsetOffset..], (ushort)offload.ChecksumOffset);
            if (offload.SegmentSize > 0 && (Offloads & LinkOffloads.TcpSegmentation) != 0)
            {
                hdr[GsoTypeOffset] = GsoTcpV4;
                BinaryPrimitives.WriteUInt16LittleEndian(hdr[HdrLenOffset..], (ushort)Math.Clamp(offload.HeaderLength, 0, ushort.MaxValue));
                BinaryPrimitives.WriteUInt16LittleEndian(hdr[GsoSizeOffset..], (ushort)Math.Clamp(offload.SegmentSize, 1, ushort.MaxValue));
            }
        }
        else if (guestCsum)
        {
            hdr[FlagsOffset] = FlagDataValid;
        }
        return true;
    }

    /// <summary>Copies waiting frames into the guest's receive buffers, in order, until either runs out.</summary>
    private void FlushReceive()
    {
        var v = _session.Vrings[VhostUserProtocol.RxQueue];
        var q = v.Queue;
        if (q is null || !v.Running || _pending.IsEmpty) return;
        bool used = false;
        while (v.Running && _pending.TryPeek(out var frame))
        {
            var outcome = DeliverFrame(v, q, frame[..NetHeaderLength], new FramePieces(frame[NetHeaderLength..]));
            if (outcome == Delivery.NoBuffers)
            {
                // §2.7.10: out of buffers, ask for a kick when the driver adds more (with EVENT_IDX the driver kicks
                // only when asked); if it added some meanwhile, try again at once.
                if (q.ArmAvailEvent()) continue;
                break;
            }
            used |= outcome == Delivery.Delivered || outcome == Delivery.Dropped;
            _pending.Pop();
        }
        if (used) v.PublishUsed();
    }

    private enum Delivery { Delivered, NoBuffers, Dropped, Discarded }

    /// <summary>
    /// Writes a frame (its 12-byte virtio_net_hdr <paramref name="netHeader"/>, then <paramref name="frame"/>'s pieces)
    /// into as many receive chains as it needs (one without MRG_RXBUF), with num_buffers set. Nothing is used when the
    /// chains run out mid-frame: the available index is rolled back and the frame waits.
    /// </summary>
    private Delivery DeliverFrame(Vring v, SplitQueue q, ReadOnlySpan<byte> netHeader, in FramePieces frame)
    {
        var memory = _session.Memory!; // a running queue was built over it
        int header = HeaderLength;
        bool mergeable = _session.Negotiated(VhostUserProtocol.VirtioNetFMrgRxbuf);
        var hdr = netHeader[..header]; // the legacy 10-byte header is the first 10 bytes of the 12
        int total = header + frame.Length; // <= 12 + MaxFrameLength
        ushort savedAvail = q.NextAvail;
        GuestAddress numBuffersLow = default, numBuffersHigh = default;
        int chains = 0;
        int written = 0;
        while (written < total)
        {
            if (chains == _rxHeads.Length || chains >= q.Size)
            {
                // §2.7.6: the driver never makes more buffers available than the ring holds; a frame needing more means
                // the guest keeps adding them while the device writes (a buffer over avail->idx). Refuse the ring.
                q.NextAvail = savedAvail;
                v.Break(VirtqError.AvailIndexJump, "a frame would take more receive buffers than the ring holds");
                return Delivery.Discarded;
            }
            if (!q.TryPop(out var chain, out var ringError))
            {
                q.NextAvail = savedAvail;
                if (ringError != VirtqError.None)
                {
                    v.Break(ringError, "the available ring is broken");
                    return Delivery.Discarded;
                }
                return Delivery.NoBuffers;
            }
            uint chainWritten = 0;
            while (written < total && chain.TryNext(out var d))
            {
                if (!d.Writable)
                {
                    q.NextAvail = savedAvail;
                    v.Break(VirtqError.None, "a receive buffer is device-readable"); // §5.1.6.3: receive buffers are device-writable
                    return Delivery.Discarded;
                }
                int n = (int)Math.Min(d.Length, (uint)(total - written));
                memory.TryGetSpan(d.Address, (uint)n, out var dst); // inside the checked descriptor range
                int o = 0;
                if (written < header)
                {
                    int h = Math.Min(n, header - written);
                    if (written <= NumBuffersOffset && NumBuffersOffset < written + h) numBuffersLow = new GuestAddress(d.Address.Value + (ulong)(NumBuffersOffset - written));
                    if (written <= NumBuffersOffset + 1 && NumBuffersOffset + 1 < written + h) numBuffersHigh = new GuestAddress(d.Address.Value + (ulong)(NumBuffersOffset + 1 - written));
                    hdr.Slice(written, h).CopyTo(dst);
                    o = h;
                }
                if (o < n) frame.CopyTo(written + o - header, dst[o..n]);
                written += n;
                chainWritten += (uint)n;
            }
            if (chain.Error != VirtqError.None)
            {
                q.NextAvail = savedAvail;
                v.Break(chain.Error, "a bad receive chain");
                return Delivery.Discarded;
            }
            _rxHeads[chains] = chain.Head;
            _rxLengths[chains] = chainWritten;
            chains++; // at most q.Size: each pop takes a distinct available entry
            if (!mergeable && written < total)
            {
                // §5.1.6.3.1: without MRG_RXBUF each buffer must hold a whole frame; this one is too small.
                _counters.Drop(DropReason.VirtioBufferTooSmall);
                q.AddUsed(chain.Head, 0);
                return Delivery.Dropped;
            }
        }
        if (header == NetHeaderLength)
        {
            // §5.1.6.4: num_buffers (le16) is the number of buffers the frame spans.
            Span<byte> count = stackalloc byte[2];
            BinaryPrimitives.WriteUInt16LittleEndian(count, (ushort)chains); // chains <= 32768
            memory.TryWrite(numBuffersLow, count[..1]);
            memory.TryWrite(numBuffersHigh, count[1..]);
        }
        for (int i = 0; i < chains; i++) q.AddUsed(_rxHeads[i], _rxLengths[i]);
        return Delivery.Delivered;
    }

    private void OnReceiveBuffersPosted()
    {
        FlushReceive();
        if (_pushedBack && _pending.Count < PendingBufferSize / 2)
        {
            _pushedBack = false;
            Handler?.OnTransmitReady();
        }
    }

    public void OnEndOfBatch()
    {
        foreach (var v in _session.Vrings) v.SignalCall();
    }
}
