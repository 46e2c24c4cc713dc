namespace Emunet.Engine.Stack.Nat;

/// <summary>
/// The one byte budget for every connection buffer of an engine. Rings start at <see cref="MinChunk"/> (always granted,
/// so no connection can stall for want of memory; that floor is the only overcommit, a few KiB per ring) and grow
/// only while the budget has room; when it is spent, connections keep what they have and back-pressure does the
/// rest (a full send ring stops reading its host socket; guest data that cannot be stored is not acknowledged).
/// Released bytes go back to the budget at once; when usage falls far below its peak, the engine asks the GC to give
/// the memory back to the system. Owner thread only.
/// </summary>
internal sealed class BufferBudget
{
    /// <summary>The default budget: tens of MiB, enough for a few connections at full speed and many idle ones.</summary>
    public const long DefaultLimit = 48L << 20;
    /// <summary>What every ring may always have.</summary>
    public const int MinChunk = 4096;

    private long _peakSinceTrim;

    public BufferBudget(long limit = DefaultLimit) => Limit = Math.Max(limit, MinChunk);

    public long Limit { get; }

    /// <summary>Bytes held by rings now (may pass <see cref="Limit"/> by the floor of <see cref="MinChunk"/> per ring).</summary>
    public long Used { get; private set; }

    /// <summary>Growth refused because the budget was spent.</summary>
    public long Refusals { get; private set; }

    /// <summary>Bytes a ring could still grow by now.</summary>
    public long Available => Math.Max(0, Limit - Used);

    /// <summary>Takes <paramref name="bytes"/> for a ring's growth; false (counted) when the budget has no room.</summary>
    public bool TryReserve(int bytes)
    {
        if (bytes > Available) { Refusals++; return false; }
        Take(bytes);
        return true;
    }

    /// <summary>Takes a ring's first array (at most <see cref="MinChunk"/>) whatever the budget says.</summary>
    public void ReserveFloor(int bytes) => Take(Math.Min(bytes, MinChunk));

    private void Take(int bytes)
    {
        Used += bytes;
        if (Used > _peakSinceTrim) _peakSinceTrim = Used;
    }

    public void Release(int bytes)
    {
        Used -= bytes;
        // Far below the peak: connections holding tens of MiB have closed. Their arrays are garbage now; an aggressive
        // collection (blocking, compacting, and decommitting what it frees) returns those pages to the system. An
        // optimized, background one may not run at all, and then an idle engine keeps its peak for good (measured:
        // 1,000 connections took it from 40 to 124 MiB, and it stayed there). Once per drain, a few ms on the loop.
        if (_peakSinceTrim >= 16L << 20 && Used < _peakSinceTrim / 8)
        {
            _peakSinceTrim = Used;
            GC.Collect(2, GCCollectionMode.Aggressive, blocking: true, compacting: true);
        }
    }
}
