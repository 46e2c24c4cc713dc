using System.Buffers.Binary;
using Emunet.Engine.Diagnostics;
using Emunet.Engine.Runtime;
using Emunet.Engine.Wire;

namespace Emunet.Engine.Stack.IPv6;

/// <summary>
/// IPv6 reassembly (RFC 8200 §4.5) with the limits of <see cref="IPv4Reassembly"/>: a fixed number of slots, each a
/// 64 KiB buffer made on first use and kept, and the blocks received (<see cref="FragmentHoles"/>, shared with IPv4's). A datagram is keyed by source,
/// destination and identification. An overlap costs the whole datagram (RFC 5722 §4), as does a fragment past the
/// end a last fragment fixed or a datagram over 65535 bytes of payload; a fragment other than the last whose length
/// is not a multiple of 8 is dropped (§4.5). The unfragmentable part (the fixed header and the headers before the
/// fragment header) is that of the first fragment. A datagram not whole within <see cref="TimeoutMs"/> is dropped
/// (§4.5: 60 s). Owner thread only.
/// </summary>
internal sealed class IPv6Reassembly : ITimerClient
{
    public const int MaxDatagramsInFlight = IPv4Reassembly.MaxDatagramsInFlight;
    /// <summary>RFC 8200 §3: the payload length field is 16 bits (jumbograms are not taken).</summary>
    public const int MaxPayloadLength = 65535;
    /// <summary>RFC 8200 §4.5: reassembly gives up 60 seconds after the first fragment.</summary>
    public const int TimeoutMs = 60_000;

    private readonly EventLoop _loop;
    private readonly Counters _counters;
    private readonly Slot[] _slots = new Slot[MaxDatagramsInFlight];

    public IPv6Reassembly(EventLoop loop, Counters counters)
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
        public IPv6Address Source;
        public IPv6Address Destination;
        public uint Identification;
        public long Deadline;
        /// <summary>The fixed header and the unfragmentable headers at 0, the fragmentable data after them.</summary>
        public byte[]? Buffer;
        /// <summary>Fragment data as it arrives, at its offset (copied behind the first fragment's headers at the end).</summary>
        public byte[]? Data;
        public readonly FragmentHoles Holes = new(MaxPayloadLength);
        public int UnfragmentableLength;   // 0 until the first fragment arrives (it is at least the 40-byte header)

        public void Reset()
        {
            InUse = false;
            UnfragmentableLength = 0;
            Holes.Reset();
        }
    }

    /// <summary>
    /// Takes one fragment (borrowed for the call) whose chain <paramref name="chain"/> was walked. True when it completes
    /// a datagram; then <paramref name="datagram"/> is the whole packet without the fragment header, valid until the next call.
    /// </summary>
    public bool Add(in IPv6Packet packet, in IPv6ExtensionHeaders.Chain chain, out ReadOnlySpan<byte> datagram)
    {
        datagram = default;
        var payload = packet.Payload;
        var data = payload[chain.FragmentDataOffset..];
        int offset = chain.FragmentOffsetBytes;   // at most 8191 * 8
        int length = data.Length;                 // at most 65535
        bool more = chain.MoreFragments;
        // RFC 8200 §4.5: every fragment but the last carries a multiple of 8 octets.
        if (more && (length == 0 || (length & 7) != 0)) { _counters.Drop(DropReason.IPv6Malformed); return false; }
        int end = offset + length;                // cannot overflow: both bounded above
        var slot = Find(in packet, chain.FragmentIdentification);
        if (end > MaxPayloadLength)
        {
            _counters.Drop(DropReason.IPv6FragmentTooLarge);
            slot?.Reset();
            return false;
        }
        if (slot is null)
        {
            slot = Allocate(in packet, chain.FragmentIdentification);
            if (slot is null) { _counters.Drop(DropReason.IPv6FragmentTableFull); return false; }
        }

        // RFC 5722 §4: an overlapping fragment discards the datagram and every fragment of it.
        var holes = slot.Holes;
        if (!holes.Fits(offset, end, more)) { Discard(slot, DropReason.IPv6FragmentOverlap); return false; }

        if (offset == 0)
        {
            int unfragmentable = IPv6Packet.HeaderLength + chain.FragmentHeaderOffset;
            if (unfragmentable - IPv6Packet.HeaderLength + Math.Max(holes.HighestEnd, end) > MaxPayloadLength)
            {
                Discard(slot, DropReason.IPv6FragmentTooLarge);
                return false;
            }
            packet.Bytes[..unfragmentable].CopyTo(slot.Buffer);
            slot.UnfragmentableLength = unfragmentable;
            // The header before the fragment header now names what the fragment header named.
            int nextHeaderAt = PreviousNextHeaderField(slot.Buffer, chain.FragmentHeaderOffset);
            slot.Buffer![nextHeaderAt] = chain.FragmentNextHeader;
        }
        else if (slot.UnfragmentableLength != 0 && slot.UnfragmentableLength - IPv6Packet.HeaderLength + end > MaxPayloadLength)
        {
            Discard(slot, DropReason.IPv6FragmentTooLarge);
            return false;
        }

        holes.Record(offset, end, more);
        data.CopyTo(slot.Data.AsSpan(offset));
        if (slot.UnfragmentableLength == 0 || !holes.IsComplete) return false;

        int total = slot.UnfragmentableLength + holes.Length;
        slot.Data.AsSpan(0, holes.Length).CopyTo(slot.Buffer.AsSpan(slot.UnfragmentableLength));
        BinaryPrimitives.WriteUInt16BigEndian(slot.Buffer.AsSpan(IPv6Packet.Offsets.PayloadLength), (ushort)(total - IPv6Packet.HeaderLength));
        datagram = slot.Buffer.AsSpan(0, total);
        slot.Reset();
        return true;
    }

    /// <summary>Where, in a packet's bytes, the Next Header field that names the fragment header is.</summary>
    private static int PreviousNextHeaderField(ReadOnlySpan<byte> packet, int fragmentHeaderOffset)
    {
        if (fragmentHeaderOffset == 0) return IPv6Packet.Offsets.NextHeader;
        // The chain up to the fragment header was walked and bounded already; this walk retraces it.
        int at = 0;
        int previous = 0;
        while (at < fragmentHeaderOffset)
        {
            previous = at;
            at += (packet[IPv6Packet.HeaderLength + at + 1] + 1) * 8;
        }
        return IPv6Packet.HeaderLength + previous;
    }

    public long OnTimer(long nowMs)
    {
        long next = long.MaxValue;
        foreach (var slot in _slots)
        {
            if (!slot.InUse) continue;
            if (slot.Deadline <= nowMs) Discard(slot, DropReason.IPv6FragmentTimeout);
            else if (slot.Deadline < next) next = slot.Deadline;
        }
        return next;
    }

    /// <summary>Forgets every partial datagram (guest gone).</summary>
    public void Clear()
    {
        foreach (var slot in _slots) if (slot.InUse) slot.Reset();
    }

    private Slot? Find(in IPv6Packet p, uint identification)
    {
        foreach (var slot in _slots)
            if (slot.InUse && slot.Identification == identification && slot.Source == p.Source && slot.Destination == p.Destination)
                return slot;
        return null;
    }

    private Slot? Allocate(in IPv6Packet p, uint identification)
    {
        foreach (var slot in _slots)
        {
            if (slot.InUse) continue;
            slot.Reset();
            slot.InUse = true;
            slot.Source = p.Source;
            slot.Destination = p.Destination;
            slot.Identification = identification;
            // Made once per slot and kept: memory is bounded by MaxDatagramsInFlight, not by the fragment rate.
            slot.Buffer ??= new byte[IPv6Packet.HeaderLength + MaxPayloadLength];
            slot.Data ??= new byte[MaxPayloadLength];
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
}
