using Emunet.Engine.Stack.Nat;

namespace Emunet.Engine.Stack.Tcp;

/// <summary>
/// A bounded byte ring, one per direction per connection. <see cref="Capacity"/> is what the connection may hold at
/// most; the memory behind it starts at <see cref="BufferBudget.MinChunk"/> on first use and doubles, when it is full,
/// only while the engine's <see cref="BufferBudget"/> has room (a growth copies the bytes once; nothing per packet).
/// Up to <see cref="RingArrayPool.MaxPooledSize"/> it is a pooled array, above that a <see cref="MappedRingBlock"/>.
/// Bytes are appended at the tail and consumed from the head; the send direction also reads at an offset from the
/// head (unacknowledged data is kept for retransmission). The small arrays come from and go back to the stack's
/// <see cref="RingArrayPool"/>; a mapped block is unmapped when let go. <see cref="Release"/> gives the memory back.
/// Spans it hands out are valid until the next call that may grow or release it. Owner thread only.
/// </summary>
internal sealed class ByteRing
{
    private readonly BufferBudget _budget;
    private readonly RingArrayPool _pool;
    private byte[]? _array;
    private MappedRingBlock? _mapped;
    private int _size;
    private int _head;
    private int _count;

    public ByteRing(int capacity, BufferBudget budget, RingArrayPool? pool = null)
    {
        Capacity = capacity;
        _budget = budget;
        _pool = pool ?? new RingArrayPool();
    }

    /// <summary>The most the ring may hold.</summary>
    public int Capacity { get; }
    public int Count => _count;
    /// <summary>Room before <see cref="Capacity"/> (what a window may promise).</summary>
    public int Free => Capacity - _count;
    public bool IsEmpty => _count == 0;

    /// <summary>The array's size now (0 before first use).</summary>
    public int Allocated => _size;

    /// <summary>What the ring can hold now without passing the budget: its array, plus the growth the budget allows.</summary>
    public int StorableCapacity => Allocated == 0 ? Math.Min(Capacity, BufferBudget.MinChunk + (int)Math.Min(int.MaxValue, _budget.Available))
        : Allocated + (int)Math.Min(Capacity - Allocated, _budget.Available);

    /// <summary>Room now without passing the budget.</summary>
    public int StorableFree => StorableCapacity - _count;

    /// <summary>The memory behind the ring (empty before first use).</summary>
    private Span<byte> Memory => _array is { } a ? a : _mapped is { } m ? m.Span : Span<byte>.Empty;

    /// <summary>Makes the memory at least as large as <paramref name="wanted"/> bytes of data need, as far as the budget allows.</summary>
    private void Grow(int wanted)
    {
        int size = _size;
        if (size == 0)
        {
            int first = Math.Min(BufferBudget.MinChunk, Capacity);
            _budget.ReserveFloor(first);
            _array = _pool.Take(first);
            _size = size = first;
        }
        int target = size;
        while (target < wanted && target < Capacity) target = (int)Math.Min((long)target * 2, Capacity);
        if (target == size || !_budget.TryReserve(target - size)) return;
        byte[]? grownArray = null;
        MappedRingBlock? grownMapped = null;
        if (target <= RingArrayPool.MaxPooledSize) grownArray = _pool.Take(target);
        else if ((grownMapped = MappedRingBlock.TryMap(target)) is null)
        {
            _budget.Release(target - size); // the kernel refused the mapping: the ring stays as it is
            return;
        }
        Span<byte> grown = grownArray ?? grownMapped!.Span;
        // Linearise: the head moves to 0.
        var old = Memory;
        int part = Math.Min(_count, size - _head);
        old.Slice(_head, part).CopyTo(grown);
        old[..(_count - part)].CopyTo(grown[part..]);
        FreeMemory();
        _array = grownArray;
        _mapped = grownMapped;
        _size = target; // the budget already holds the old size; TryReserve took the difference
        _head = 0;
    }

    /// <summary>Hands the memory back: an array to the pool, a mapping to the kernel.</summary>
    private void FreeMemory()
    {
        if (_array is { } a) _pool.Give(a);
        _mapped?.Unmap();
        _array = null;
        _mapped = null;
    }

    /// <summary>The contiguous free space at the tail, growing the memory first when it is full and may grow.</summary>
    public Span<byte> WritableSpan()
    {
        if (_count == Capacity) return Span<byte>.Empty;
        if (_size == 0 || _count == _size) Grow(_count + 1);
        int size = _size;
        if (_count == size) return Span<byte>.Empty;
        if (_count == 0) _head = 0;
        int tail = (_head + _count) % size;
        int len = tail >= _head ? size - tail : _head - tail;
        return Memory.Slice(tail, len);
    }

    /// <summary>Marks <paramref name="n"/> bytes written into <see cref="WritableSpan"/> as data.</summary>
    public void Commit(int n) => _count += n;

    /// <summary>Appends as much of <paramref name="data"/> as fits (capacity and budget); returns the number appended.</summary>
    public int Write(ReadOnlySpan<byte> data)
    {
        int total = 0;
        while (total < data.Length)
        {
            if (_size != 0 && _size - _count < data.Length - total) Grow(_count + data.Length - total);
            var span = WritableSpan();
            if (span.IsEmpty) break;
            int n = Math.Min(span.Length, data.Length - total);
            data.Slice(total, n).CopyTo(span);
            _count += n;
            total += n;
        }
        return total;
    }

    /// <summary>The contiguous readable bytes starting <paramref name="offset"/> bytes after the head.</summary>
    public ReadOnlySpan<byte> ReadableSpan(int offset)
    {
        if (offset >= _count || _size == 0) return ReadOnlySpan<byte>.Empty;
        int size = _size;
        int start = (_head + offset) % size;
        int len = Math.Min(_count - offset, size - start);
        return Memory.Slice(start, len);
    }

    /// <summary>Copies <paramref name="destination"/>.Length bytes starting <paramref name="offset"/> after the head.</summary>
    public void CopyTo(int offset, Span<byte> destination)
    {
        int done = 0;
        while (done < destination.Length)
        {
            var src = ReadableSpan(offset + done);
            if (src.IsEmpty) break;
            int n = Math.Min(src.Length, destination.Length - done);
            src[..n].CopyTo(destination[done..]);
            done += n;
        }
    }

    /// <summary>Drops <paramref name="n"/> bytes from the head.</summary>
    public void Consume(int n)
    {
        if (n == 0) return;
        _head = (_head + n) % _size;
        _count -= n;
        if (_count == 0) _head = 0;
    }

    /// <summary>Gives the memory back to the budget, and to the pool or the kernel.</summary>
    public void Release()
    {
        if (_size != 0)
        {
            _budget.Release(_size);
            FreeMemory();
        }
        _size = 0;
        _head = 0;
        _count = 0;
    }
}
