using Emunet.Engine.Diagnostics;
using System.Buffers.Binary;
using Emunet.Engine.Runtime;
using Emunet.Engine.Wire;

namespace Emunet.Engine.Stack;

/// <summary>
/// IPv4 reassembly (RFC 791 §3.2, RFC 815). A fixed number of slots, each a 64 KiB buffer (made on first use and
/// kept) and the blocks received (<see cref="FragmentHoles"/>, shared with IPv6's reassembly). A datagram is keyed by source, destination, protocol and
/// identification (RFC 791). Fragments that overlap what is already held, go past the end a last fragment fixed,
/// or would make the datagram longer than 65535 bytes cost the whole datagram (as RFC 5722 does for IPv6: an
/// overlap is either an attack or a broken sender). A datagram not complete within <see cref="TimeoutMs"/> is
/// dropped. Owner thread only.
/// </summary>
internal sealed class IPv4Reassembly : ITimerClient
{
    /// <summary>Datagrams being reassembled at once; a sixth of the memory a Linux host allows by default.</summary>
    public const int MaxDatagramsInFlight = 16;
    /// <summary>RFC 791: the total length field is 16 bits.</summary>
    public const int MaxDatagramSize = 65535;
    /// <summary>RFC 791 suggests at least 15 s; Linux uses 30 s (net.ipv4.ipfrag_time).</summary>
    public const int TimeoutMs = 30_000;

    private const int MaxHeaderLength = 60;

    private readonly EventLoop _loop;
    private readonly Counters _counters;
    private readonly Slot[] _slots = new Slot[MaxDatagramsInFlight];

    public IPv4Reassembly(EventLoop loop, Counters counters)
    {
        _loop = loop;
        _counters = counters;
        for (int i = 0; i < _slots.Length; i++) _slots[i] = new Slot();
    }

    public int InFlight
    {
        get { int n = 0; foreach (var s in _slots) if (s.InUse) n++; return n; }
    }

    private sealed class Slot
    {
        public bool InUse;
        public IPv4Address Source;
        public IPv4Address Destination;
        public byte Protocol;
        public ushort Identification;
        public long Deadline;
        /// <summary>Header of the first fragment, then the payload at <see cref="MaxHeaderLength"/>.</summary>
        public byte[]? Buffer;
        public readonly FragmentHoles Holes = new(MaxDatagramSize);
        public int HeaderLength;      // 0 until the fragment at offset 0 arrives

        public void Reset()
        {
            InUse = false;
            HeaderLength = 0;
            Holes.Reset();
        }
    }

    /// <summary>
    /// Takes in one fragment (borrowed for the call). Returns true when it completes a datagram; then
    /// <paramref name="datagram"/> is the whole IPv4 packet (header of the first fragment, flags and offset cleared),
    /// valid until the next call.
    /// </summary>
    public bool Add(in IPv4Packet fragment, out ReadOnlySpan<byte> datagram)
    {
        datagram = default;
        var payload = fragment.Payload;
        int offset = fragment.FragmentOffset;   // at most 8191 * 8
        int length = payload.Length;            // at most 65535 - 20
        bool more = fragment.MoreFragments;
        // RFC 791 §3.2: every fragment but the last carries a multiple of 8 octets.
        if (more && (length == 0 || (length & 7) != 0)) { _counters.Drop(DropReason.IPv4Malformed); return false; }
        int end = offset + length;              // cannot overflow: both bounded above
        if (end > MaxDatagramSize - IPv4Packet.MinHeaderLength)
        {
            _counters.Drop(DropReason.IPv4FragmentTooLarge);
            Release(Find(in fragment));
            return false;
        }

        var slot = Find(in fragment);
        if (slot is null)
        {
            slot = Allocate(in fragment);
            if (slot is null) { _counters.Drop(DropReason.IPv4FragmentTableFull); return false; }
        }

        var holes = slot.Holes;
        if (!holes.Fits(offset, end, more)) { Discard(slot, DropReason.IPv4FragmentOverlap); return false; }

        if (offset == 0)
        {
            int headerLength = fragment.HeaderLength;
            int highest = Math.Max(holes.HighestEnd, end);
            if (headerLength + highest > MaxDatagramSize) { Discard(slot, DropReason.IPv4FragmentTooLarge); return false; }
            slot.HeaderLength = headerLength;
            fragment.Header.CopyTo(slot.Buffer.AsSpan(MaxHeaderLength - headerLength));
        }
        else if (slot.HeaderLength != 0 && slot.HeaderLength + end > MaxDatagramSize)
        {
            Discard(slot, DropReason.IPv4FragmentTooLarge);
            return false;
        }

        holes.Record(offset, end, more);
        payload.CopyTo(slot.Buffer.AsSpan(MaxHeaderLength + offset));
        if (slot.HeaderLength == 0 || !holes.IsComplete) return false;

        int start = MaxHeaderLength - slot.HeaderLength;
        int total = slot.HeaderLength + holes.Length;
        var whole = slot.Buffer.AsSpan(start, total);
        BinaryPrimitives.WriteUInt16BigEndian(whole[IPv4Packet.Offsets.TotalLength..], (ushort)total);
        // Keep DF, clear MF and the offset.
        whole[IPv4Packet.Offsets.FlagsFragment] &= 0x40;
        whole[IPv4Packet.Offsets.FlagsFragment + 1] = 0;
        BinaryPrimitives.WriteUInt16BigEndian(whole[IPv4Packet.Offsets.Checksum..], 0);
        BinaryPrimitives.WriteUInt16BigEndian(whole[IPv4Packet.Offsets.Checksum..], Checksum.Compute(whole[..slot.HeaderLength]));
        slot.Reset();
        datagram = whole;
        return true;
    }

    public long OnTimer(long nowMs)
    {
        long next = long.MaxValue;
        foreach (var slot in _slots)
        {
            if (!slot.InUse) continue;
            if (slot.Deadline <= nowMs) Discard(slot, DropReason.IPv4FragmentTimeout);
            else if (slot.Deadline < next) next = slot.Deadline;
        }
        return next;
    }

    /// <summary>Forgets every partial datagram (guest gone).</summary>
    public void Clear()
    {
        foreach (var slot in _slots) if (slot.InUse) slot.Reset();
    }

    private Slot? Find(in IPv4Packet f)
    {
        foreach (var slot in _slots)
        {
            if (slot.InUse && slot.Identification == f.Identification && slot.Source == f.Source
                && slot.Destination == f.Destination && slot.Protocol == f.Protocol)
                return slot;
        }
        return null;
    }

    private Slot? Allocate(in IPv4Packet f)
    {
        foreach (var slot in _slots)
        {
            if (slot.InUse) continue;
            slot.Reset();
            slot.InUse = true;
            slot.Source = f.Source;
            slot.Destination = f.Destination;
            slot.Protocol = f.Protocol;
            slot.Identification = f.Identification;
            // Made once per slot and kept: memory is bounded by MaxDatagramsInFlight, not by the fragment rate.
            slot.Buffer ??= new byte[MaxHeaderLength + MaxDatagramSize];
            slot.Deadline = _loop.NowMs + TimeoutMs;
            _loop.WakeAt(slot.Deadline);
            return slot;
        }
        return null;
    }

    private void Discard(Slot slot, DropReason reason)
    {
        _counters.Drop(reason);
        slot.Reset();
    }

    private static void Release(Slot? slot) => slot?.Reset();
}
