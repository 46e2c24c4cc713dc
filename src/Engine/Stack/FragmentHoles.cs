namespace Emunet.Engine.Stack;

/// <summary>
/// The hole tracking IPv4 and IPv6 reassembly share (RFC 815's holes, kept as a bitmap of 8-byte blocks): which blocks
/// of a datagram's fragmentable part have arrived, how far the fragments reach, and where a last fragment ends it.
/// <see cref="Fits"/> refuses what costs the whole datagram (RFC 5722 §4 for IPv6; <see cref="IPv4Reassembly"/> by the
/// same rule): an overlap with what is held, a fragment past the end a last fragment fixed, a last fragment that moves
/// that end or ends before data already held. With no overlap admitted, a byte count equal to the length means no
/// hole is left (<see cref="IsComplete"/>). Fixed size, no allocation after construction. Owner thread only.
/// </summary>
internal sealed class FragmentHoles
{
    private readonly ulong[] _received;

    /// <param name="maxLength">The longest fragmentable part a datagram may have, in bytes.</param>
    public FragmentHoles(int maxLength)
    {
        _received = new ulong[((maxLength + 7) / 8 + 63) / 64];
        Reset();
    }

    /// <summary>The fragmentable part's length, fixed by the last fragment (M clear); -1 until it arrives.</summary>
    public int Length { get; private set; }

    /// <summary>The furthest end of any fragment held.</summary>
    public int HighestEnd { get; private set; }

    public int BytesReceived { get; private set; }

    /// <summary>The last fragment arrived and every byte before its end is held.</summary>
    public bool IsComplete => Length >= 0 && BytesReceived == Length;

    /// <summary>
    /// True when the fragment [<paramref name="offset"/>, <paramref name="end"/>) may join what is held (nothing is
    /// recorded: the caller has its own checks before <see cref="Record"/>); false when it costs the datagram.
    /// </summary>
    public bool Fits(int offset, int end, bool more)
    {
        if (!more)
        {
            // A last fragment fixes the length; nothing may go beyond it, and it may not move.
            if ((Length >= 0 && Length != end) || HighestEnd > end) return false;
        }
        else if (Length >= 0 && end > Length) return false;
        return !AnySet(offset >> 3, (end + 7) >> 3);
    }

    /// <summary>Records a fragment <see cref="Fits"/> admitted.</summary>
    public void Record(int offset, int end, bool more)
    {
        for (int i = offset >> 3, to = (end + 7) >> 3; i < to; i++) _received[i >> 6] |= 1UL << (i & 63);
        BytesReceived += end - offset;
        if (end > HighestEnd) HighestEnd = end;
        if (!more) Length = end;
    }

    public void Reset()
    {
        Length = -1;
        HighestEnd = 0;
        BytesReceived = 0;
        Array.Clear(_received);
    }

    private bool AnySet(int from, int to)
    {
        for (int i = from; i < to; i++)
            if ((_received[i >> 6] & (1UL << (i & 63))) != 0) return true;
        return false;
    }
}
