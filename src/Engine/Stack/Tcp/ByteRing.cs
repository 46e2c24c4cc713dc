using System.Buffers;

namespace Emunet.Engine.Stack.Tcp;

/// <summary>
/// A bounded byte ring over a pooled array: one per direction per connection, so the memory a connection holds is
/// fixed whatever its peers do. Bytes are appended at the tail and consumed from the head; the send direction also
/// reads at an offset from the head (unacknowledged data is kept for retransmission). Owner thread only.
/// </summary>
internal sealed class ByteRing
{
    private byte[]? _buffer;
    private int _head;
    private int _count;

    public ByteRing(int capacity) => Capacity = capacity;

    public int Capacity { get; }
    public int Count => _count;
    public int Free => Capacity - _count;
    public bool IsEmpty => _count == 0;

    /// <summary>Rents the array on first use; returned by <see cref="Release"/>.</summary>
    private byte[] Buffer => _buffer ??= ArrayPool<byte>.Shared.Rent(Capacity);

    /// <summary>The contiguous free space at the tail (may be shorter than <see cref="Free"/> when it wraps).</summary>
    public Span<byte> WritableSpan()
    {
        if (_count == Capacity) return Span<byte>.Empty;
        var buf = Buffer;
        int tail = (_head + _count) % Capacity;
        int len = tail >= _head ? Capacity - tail : _head - tail;
        if (_count == 0) { _head = 0; tail = 0; len = Capacity; }
        return buf.AsSpan(tail, Math.Min(len, Capacity - _count));
    }

    /// <summary>Marks <paramref name="n"/> bytes written into <see cref="WritableSpan"/> as data.</summary>
    public void Commit(int n) => _count += n;

    /// <summary>Appends as much of <paramref name="data"/> as fits; returns the number appended.</summary>
    public int Write(ReadOnlySpan<byte> data)
    {
        int total = 0;
        while (total < data.Length)
        {
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
        if (offset >= _count || _buffer is null) return ReadOnlySpan<byte>.Empty;
        int start = (_head + offset) % Capacity;
        int len = Math.Min(_count - offset, Capacity - start);
        return _buffer.AsSpan(start, len);
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
        _head = (_head + n) % Capacity;
        _count -= n;
        if (_count == 0) _head = 0;
    }

    /// <summary>Returns the array to the pool.</summary>
    public void Release()
    {
        if (_buffer is not null) ArrayPool<byte>.Shared.Return(_buffer);
        _buffer = null;
        _head = 0;
        _count = 0;
    }
}
