using System.Numerics;

namespace Emunet.Engine.Stack.Tcp;

/// <summary>
/// The small arrays behind the connections' <see cref="ByteRing"/>s, kept when a connection closes for the next one
/// instead of left to the GC: a short connection then allocates no ring memory at all. Only power-of-two sizes from
/// <see cref="Nat.BufferBudget.MinChunk"/> to <see cref="MaxPooledSize"/> are kept (the sizes a ring grows through
/// first), at most <see cref="MaxRetainedBytes"/> in all; a ring larger than that lives in a
/// <see cref="MappedRingBlock"/>, given back to the kernel when let go. Kept arrays count against no budget: the
/// <see cref="Nat.BufferBudget"/> bounds what connections hold, this limit what waits here. Owner thread only (one
/// pool per TCP stack), so no locks.
/// </summary>
internal sealed class RingArrayPool
{
    /// <summary>The most memory kept for reuse: five hundred short connections' first arrays.</summary>
    public const int MaxRetainedBytes = 2 << 20;
    /// <summary>The largest ring array on the managed heap (and in this pool); larger rings are mapped.</summary>
    public const int MaxPooledSize = 1 << MaxShift;
    private const int MinShift = 12; // BufferBudget.MinChunk, 4 KiB
    private const int MaxShift = 16; // 64 KiB: below the large-object heap's 85,000 bytes

    private readonly Stack<byte[]>[] _buckets = new Stack<byte[]>[MaxShift - MinShift + 1];
    private int _retained;

    public RingArrayPool()
    {
        for (int i = 0; i < _buckets.Length; i++) _buckets[i] = new Stack<byte[]>();
    }

    /// <summary>Bytes kept for reuse now.</summary>
    public int RetainedBytes => _retained;

    /// <summary>An array of exactly <paramref name="size"/> bytes (contents undefined); the caller owns it.</summary>
    public byte[] Take(int size)
    {
        int b = Bucket(size);
        if (b >= 0 && _buckets[b].TryPop(out var array))
        {
            _retained -= size;
            return array;
        }
        return GC.AllocateUninitializedArray<byte>(size);
    }

    /// <summary>Takes ownership of <paramref name="array"/>: kept for a later <see cref="Take"/>, or dropped to the GC.</summary>
    public void Give(byte[] array)
    {
        int b = Bucket(array.Length);
        if (b < 0 || _retained + array.Length > MaxRetainedBytes) return;
        _buckets[b].Push(array);
        _retained += array.Length;
    }

    private static int Bucket(int size) =>
        size >= 1 << MinShift && size <= 1 << MaxShift && BitOperations.IsPow2(size) ? BitOperations.Log2((uint)size) - MinShift : -1;
}
