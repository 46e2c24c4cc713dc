using System.Numerics;

namespace Emunet.Engine.Stack.Tcp;

/// <summary>
/// The arrays behind the connections' <see cref="ByteRing"/>s, kept when a connection closes for the next one instead
/// of left to the GC: a short connection then allocates no ring memory at all, and a bulk one does not put a fresh
/// 1 MiB array on the large-object heap (collected only with generation 2) each time. Only power-of-two sizes from
/// <see cref="Nat.BufferBudget.MinChunk"/> to 1 MiB are kept (the sizes a ring grows through), at most
/// <see cref="MaxRetainedBytes"/> in all; anything else goes back to the GC. Kept arrays count against no budget:
/// the <see cref="Nat.BufferBudget"/> bounds what connections hold, this limit what waits here. Owner thread only
/// (one pool per TCP stack), so no locks.
/// </summary>
internal sealed class RingArrayPool
{
    /// <summary>The most memory kept for reuse: a thousand short connections' first arrays, or a few bulk ones'.</summary>
    public const int MaxRetainedBytes = 4 << 20;
    private const int MinShift = 12; // BufferBudget.MinChunk, 4 KiB
    private const int MaxShift = 20; // 1 MiB, TcpStack's default send ring

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
