namespace Emunet.Engine.Devices.Virtio;

/// <summary>Why a virtqueue operation refused the guest's data. Each names the VIRTIO 1.2 rule it enforces.</summary>
internal enum VirtqError
{
    None,
    /// <summary>A ring or table lies outside guest memory (§2.7: the driver places them in memory the device can reach).</summary>
    RingOutOfRange,
    /// <summary>The available index moved further than the queue size since the device last looked (§2.7.6).</summary>
    AvailIndexJump,
    /// <summary>A head or next index is not below the queue size (§2.7.5, §2.7.6).</summary>
    IndexOutOfRange,
    /// <summary>The chain has more descriptors than the table holds: a loop (§2.7.5.2 forbids loops).</summary>
    ChainLoop,
    /// <summary>The chain's lengths sum past 2^32 bytes (§2.7.5.2).</summary>
    LengthOverflow,
    /// <summary>A descriptor's buffer lies outside guest memory.</summary>
    BufferOutOfRange,
    /// <summary>An indirect table inside an indirect table (§2.7.5.3.1: the driver MUST NOT set INDIRECT there).</summary>
    NestedIndirect,
    /// <summary>INDIRECT together with NEXT (§2.7.5.3.1).</summary>
    IndirectWithNext,
    /// <summary>An indirect table whose length is zero or not a multiple of 16 (§2.7.5.3).</summary>
    IndirectBadLength,
    /// <summary>A device-readable descriptor after a device-writable one (§2.7.4.2).</summary>
    ReadableAfterWritable,
    /// <summary>Indirect descriptors used without VIRTIO_F_INDIRECT_DESC negotiated (§2.7.5.3.1).</summary>
    IndirectNotNegotiated,
}

/// <summary>One buffer of a chain, after its checks: inside guest memory, with its direction.</summary>
internal readonly record struct Descriptor(GuestAddress Address, uint Length, bool Writable);

/// <summary>
/// Walks one descriptor chain. The walk has a budget equal to the size of the table it is in, so a loop ends in
/// <see cref="VirtqError.ChainLoop"/> instead of hanging; an indirect table switches the walk to that table once and
/// an indirect table inside it is refused; lengths are summed with an overflow check.
/// </summary>
internal struct DescriptorChain
{
    // VIRTIO 1.2 §2.7.5: struct virtq_desc { le64 addr; le32 len; le16 flags; le16 next; }
    public const int DescriptorSize = 16;
    public const ushort FlagNext = 1;
    public const ushort FlagWrite = 2;
    public const ushort FlagIndirect = 4;
    /// <summary>An indirect table holds at most this many descriptors: indexes are 16-bit.</summary>
    public const uint MaxIndirectCount = 65536;

    private readonly GuestMemory _memory;
    private readonly bool _indirectAllowed;
    private GuestAddress _table;
    private uint _tableSize;
    private uint _next;
    private uint _budget;
    private bool _inIndirect;
    private bool _done;
    private bool _sawWritable;
    private ulong _total;

    internal DescriptorChain(GuestMemory memory, GuestAddress table, ushort queueSize, ushort head, bool indirectAllowed)
    {
        _memory = memory;
        _indirectAllowed = indirectAllowed;
        _table = table;
        _tableSize = queueSize;
        _next = head;
        _budget = queueSize;
        Head = head;
        Error = VirtqError.None;
    }

    /// <summary>The head index: what goes back in the used ring.</summary>
    public ushort Head { get; }

    /// <summary>Why the walk stopped early; <see cref="VirtqError.None"/> at a clean end.</summary>
    public VirtqError Error { get; private set; }

    /// <summary>Sum of the lengths walked so far (fits in 32 bits, checked).</summary>
    public uint TotalLength => (uint)_total;

    /// <summary>The next buffer of the chain; false at its end or on an error (see <see cref="Error"/>).</summary>
    public bool TryNext(out Descriptor descriptor)
    {
        descriptor = default;
        if (_done) return false;
        while (true)
        {
            if (_next >= _tableSize) return Fail(VirtqError.IndexOutOfRange); // §2.7.5: next indexes the same table
            if (_budget == 0) return Fail(VirtqError.ChainLoop); // §2.7.5.2: no loops
            _budget--;
            var at = new GuestAddress(_table.Value + (ulong)_next * DescriptorSize); // table checked whole at start
            if (!_memory.TryReadUInt64(at, out ulong addr) || !_memory.TryReadUInt32(new GuestAddress(at.Value + 8), out uint len)
                || !_memory.TryReadUInt16(new GuestAddress(at.Value + 12), out ushort flags)
                || !_memory.TryReadUInt16(new GuestAddress(at.Value + 14), out ushort next))
                return Fail(VirtqError.RingOutOfRange);

            if ((flags & FlagIndirect) != 0)
            {
                if (!_indirectAllowed) return Fail(VirtqError.IndirectNotNegotiated);
                if (_inIndirect) return Fail(VirtqError.NestedIndirect); // §2.7.5.3.1
                if ((flags & FlagNext) != 0) return Fail(VirtqError.IndirectWithNext); // §2.7.5.3.1
                if (len == 0 || len % DescriptorSize != 0) return Fail(VirtqError.IndirectBadLength); // §2.7.5.3
                if (!_memory.IsValid(new GuestAddress(addr), len)) return Fail(VirtqError.RingOutOfRange);
                // §2.7.5.3.2: the write flag of the descriptor naming the table is ignored; the table starts at index 0.
                _inIndirect = true;
                _table = new GuestAddress(addr);
                _tableSize = Math.Min(len / DescriptorSize, MaxIndirectCount);
                _budget = _tableSize;
                _next = 0;
                continue;
            }

            bool writable = (flags & FlagWrite) != 0;
            if (!writable && _sawWritable) return Fail(VirtqError.ReadableAfterWritable); // §2.7.4.2
            _sawWritable |= writable;
            _total += len; // cannot wrap: at most 65536 * 2 tables of u32 lengths
            if (_total > uint.MaxValue) return Fail(VirtqError.LengthOverflow); // §2.7.5.2
            if (!_memory.IsValid(new GuestAddress(addr), len)) return Fail(VirtqError.BufferOutOfRange);
            if ((flags & FlagNext) != 0) _next = next;
            else _done = true;
            descriptor = new Descriptor(new GuestAddress(addr), len, writable);
            return true;
        }
    }

    private bool Fail(VirtqError error)
    {
        Error = error;
        _done = true;
        return false;
    }
}

/// <summary>
/// Theory of operation: the device side of one split virtqueue (VIRTIO 1.2 §2.7). The driver publishes chain heads in
/// the available ring and bumps <c>avail->idx</c>; the device takes them in order from <see cref="NextAvail"/>, walks
/// each chain (<see cref="DescriptorChain"/>), and hands it back through the used ring with the number of bytes it
/// wrote, publishing <c>used->idx</c> after the elements (release order). Every ring access goes through
/// <see cref="GuestMemory"/>'s range checks; guest values are read once into locals and checked before use.
/// </summary>
internal sealed class SplitQueue
{
    /// <summary>§2.7: the queue size of a split virtqueue is a power of 2, at most 32768.</summary>
    public const int MaxSize = 32768;
    public const ushort AvailFlagNoInterrupt = 1; // §2.7.7 VIRTQ_AVAIL_F_NO_INTERRUPT

    private readonly GuestMemory _memory;
    private readonly GuestAddress _descriptors;
    private readonly GuestAddress _avail;
    private readonly GuestAddress _used;
    private readonly bool _indirectAllowed;
    private ushort _usedShadow;
    private ushort _signalledUsed;
    /// <summary>avail->idx as <see cref="TryPop"/> last read it (what <see cref="ArmAvailEvent"/> asks to hear past).</summary>
    private ushort _availSeen;
    private bool _signalledValid;

    private SplitQueue(GuestMemory memory, ushort size, GuestAddress descriptors, GuestAddress avail, GuestAddress used, ushort nextAvail, ushort nextUsed,
        bool indirectAllowed, bool eventIdx)
    {
        EventIdx = eventIdx;
        _memory = memory;
        Size = size;
        _descriptors = descriptors;
        _avail = avail;
        _used = used;
        NextAvail = nextAvail;
        _availSeen = nextAvail;
        _usedShadow = nextUsed;
        _indirectAllowed = indirectAllowed;
    }

    /// <summary>
    /// Checks the layout against guest memory and makes the queue. <paramref name="nextAvail"/> is the ring base the
    /// front-end set; the used index continues from what the ring holds. With <paramref name="eventIdx"/>
    /// (VIRTIO_F_EVENT_IDX) notifications go by used_event / avail_event (§2.7.10) instead of the flags.
    /// </summary>
    public static SplitQueue? Create(GuestMemory memory, uint size, GuestAddress descriptors, GuestAddress avail, GuestAddress used,
        ushort nextAvail, bool indirectAllowed, out VirtqError error, bool eventIdx = false)
    {
        error = VirtqError.RingOutOfRange;
        if (size == 0 || size > MaxSize || (size & (size - 1)) != 0) { error = VirtqError.IndexOutOfRange; return null; } // §2.7
        // §2.7 alignment: descriptor table 16, available ring 2, used ring 4.
        if (descriptors.Value % 16 != 0 || avail.Value % 2 != 0 || used.Value % 4 != 0) return null;
        // §2.7.5, §2.7.6, §2.7.8 sizes: 16*n; flags+idx+2n (+used_event); flags+idx+8n (+avail_event).
        if (!memory.IsValid(descriptors, 16ul * size) || !memory.IsValid(avail, 6ul + 2ul * size) || !memory.IsValid(used, 6ul + 8ul * size)) return null;
        if (!memory.TryReadUInt16(new GuestAddress(used.Value + 2), out ushort usedIdx)) return null;
        error = VirtqError.None;
        return new SplitQueue(memory, (ushort)size, descriptors, avail, used, nextAvail, usedIdx, indirectAllowed, eventIdx);
    }

    /// <summary>The queue size (a power of 2).</summary>
    public ushort Size { get; }

    /// <summary>Index of the next available entry the device will take (wraps at 2^16; the "vring base").</summary>
    public ushort NextAvail { get; set; }

    /// <summary>Used index as published plus elements added since.</summary>
    public ushort NextUsed => _usedShadow;

    /// <summary>
    /// Takes the next available chain. False with <see cref="VirtqError.None"/> when the ring is empty; false with an
    /// error when the ring itself is broken (the queue should stop).
    /// </summary>
    public bool TryPop(out DescriptorChain chain, out VirtqError error)
    {
        chain = default;
        error = VirtqError.None;
        if (!_memory.TryReadUInt16(new GuestAddress(_avail.Value + 2), out ushort availIdx)) { error = VirtqError.RingOutOfRange; return false; }
        _availSeen = availIdx;
        ushort pending = (ushort)(availIdx - NextAvail);
        if (pending == 0) return false;
        if (pending > Size) { error = VirtqError.AvailIndexJump; return false; } // §2.7.6: at most Size entries outstanding
        // Volatile.Read of idx above orders it before the ring entry read (acquire), §2.7.13.3.
        var slot = new GuestAddress(_avail.Value + 4 + 2ul * (uint)(NextAvail & (Size - 1)));
        if (!_memory.TryReadUInt16(slot, out ushort head)) { error = VirtqError.RingOutOfRange; return false; }
        if (head >= Size) { error = VirtqError.IndexOutOfRange; return false; } // §2.7.6: ring holds descriptor heads
        NextAvail++;
        chain = new DescriptorChain(_memory, _descriptors, Size, head, _indirectAllowed);
        return true;
    }

    /// <summary>Number of chains the driver has made available and the device has not taken (0 when the ring is unreadable or broken).</summary>
    public int AvailableCount()
    {
        if (!_memory.TryReadUInt16(new GuestAddress(_avail.Value + 2), out ushort availIdx)) return 0;
        ushort pending = (ushort)(availIdx - NextAvail);
        return pending > Size ? 0 : pending;
    }

    /// <summary>Writes a used element for <paramref name="head"/> (not yet visible to the driver: see <see cref="PublishUsed"/>).</summary>
    public void AddUsed(ushort head, uint writtenLength)
    {
        // §2.7.8: struct virtq_used_elem { le32 id; le32 len; } at ring[idx % size]; the ring was range-checked at Create.
        var elem = new GuestAddress(_used.Value + 4 + 8ul * (uint)(_usedShadow & (Size - 1)));
        _memory.TryWriteUInt32(elem, head);
        _memory.TryWriteUInt32(new GuestAddress(elem.Value + 4), writtenLength);
        _usedShadow++;
    }

    /// <summary>Makes the added used elements visible: used->idx is written after them with release semantics (§2.7.8.2).</summary>
    public void PublishUsed() => _memory.TryWriteUInt16(new GuestAddress(_used.Value + 2), _usedShadow);

    /// <summary>VIRTIO_F_EVENT_IDX was negotiated for this queue.</summary>
    public bool EventIdx { get; }

    /// <summary>
    /// Whether the driver wants a call for what was published since the last call that went out. Without EVENT_IDX:
    /// unless it set VIRTQ_AVAIL_F_NO_INTERRUPT (§2.7.7). With EVENT_IDX (§2.7.7.2, §2.7.10): only when the used index
    /// moved past the used_event the driver wrote (at the end of the available ring), and never when nothing moved.
    /// </summary>
    public bool NeedsInterrupt()
    {
        Interlocked.MemoryBarrier(); // used->idx store before the flags / used_event load (§2.7.7.2)
        if (!EventIdx) return !_memory.TryReadUInt16(_avail, out ushort flags) || (flags & AvailFlagNoInterrupt) == 0;
        ushort old = _signalledUsed;
        ushort now = _usedShadow;
        bool valid = _signalledValid;
        _signalledUsed = now;
        _signalledValid = true;
        if (!valid) return true; // the first call after the queue started: the driver's used_event may predate it
        if (!_memory.TryReadUInt16(new GuestAddress(_avail.Value + 4 + 2ul * Size), out ushort usedEvent)) return true;
        return NeedEvent(usedEvent, now, old);
    }

    /// <summary>
    /// §2.7.10 (the vring_need_event rule): a notification is due when <paramref name="eventIndex"/> lies in
    /// [<paramref name="old"/>, <paramref name="now"/>), modulo 2^16.
    /// </summary>
    public static bool NeedEvent(ushort eventIndex, ushort now, ushort old) => (ushort)(now - eventIndex - 1) < (ushort)(now - old);

    /// <summary>
    /// EVENT_IDX (§2.7.10): asks the driver to kick when it makes a buffer available past what the device last found
    /// when it looked (<see cref="TryPop"/>'s last read of avail->idx: every entry before it was taken, or was too few
    /// for a frame), then looks again, since the driver may have added buffers before it saw the request. True when
    /// it did: the caller goes on without a kick.
    /// The request is for the index last looked at, not for avail->idx read now: an entry the driver added between
    /// that look and this call was added while avail_event still asked for an older one, so the driver did not kick for
    /// it, and asking only for what comes after it would leave it in the ring until the driver's next buffer (a guest's
    /// FIN sent just after its data waited there, and its connection with it, until the peer gave up).
    /// </summary>
    public bool ArmAvailEvent()
    {
        if (!EventIdx) return false;
        ushort seen = _availSeen;
        _memory.TryWriteUInt16(new GuestAddress(_used.Value + 4 + 8ul * Size), seen); // inside the used ring checked at Create
        Interlocked.MemoryBarrier(); // avail_event store before the avail->idx load
        return _memory.TryReadUInt16(new GuestAddress(_avail.Value + 2), out ushort now) && now != seen;
    }
}
