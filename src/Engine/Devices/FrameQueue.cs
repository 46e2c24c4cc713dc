using Emunet.Engine.Link;
using System.Buffers.Binary;

namespace Emunet.Engine.Devices;

/// <summary>
/// Frames on their way to the guest, held in one pinned buffer as QEMU's stream framing has them on the wire: a
/// 4-byte big-endian length, then the frame. The stack writes each frame in place (<see cref="Reserve"/>, then
/// <see cref="TryCommit"/>); a device drains the bytes as they are (<see cref="Queued"/>, the stream socket) or frame by
/// frame (<see cref="TryPeek"/>, virtqueues). No allocation after construction. Owner thread only.
/// </summary>
internal sealed class FrameQueue
{
    private const int PrefixLength = 4;
    private readonly byte[] _buffer;
    private int _start;
    private int _end;
    private int _reserved = -1;
    private int _generation;

    public FrameQueue(int capacity) => _buffer = GC.AllocateUninitializedArray<byte>(capacity, pinned: true);

    public int Capacity => _buffer.Length;

    /// <summary>Bytes queued, length prefixes included.</summary>
    public int Count => _end - _start;

    public bool IsEmpty => _end == _start;

    /// <summary>Bytes of frames (with their prefixes) that can still be queued.</summary>
    public int Space => _buffer.Length - Count;

    /// <summary>The queued bytes, in stream framing.</summary>
    public ReadOnlySpan<byte> Queued => _buffer.AsSpan(_start, _end - _start);

    /// <summary>
    /// Room for one frame of up to <paramref name="length"/> bytes at the tail, moving what is queued to the front when
    /// that makes room; empty when it does not fit. <paramref name="token"/> names this reservation for
    /// <see cref="TryCommit"/>; a new reservation ends the last one.
    /// </summary>
    public Span<byte> Reserve(int length, out int token)
    {
        token = ++_generation;
        if (_buffer.Length - _end < PrefixLength + length && _start > 0)
        {
            _buffer.AsSpan(_start, _end - _start).CopyTo(_buffer);
            _end -= _start;
            _start = 0;
        }
        if (_buffer.Length - _end < PrefixLength + length)
        {
            _reserved = -1;
            return Span<byte>.Empty;
        }
        _reserved = _end;
        return _buffer.AsSpan(_end + PrefixLength, length);
    }

    /// <summary>
    /// Queues the first <paramref name="length"/> bytes of the reservation <paramref name="token"/>; false when that is
    /// not the open reservation (committed, cleared, or replaced by a newer one). <paramref name="frame"/> is the queued
    /// frame, still the reserving device's to finish (a header it keeps in front of the frame) until it is peeked.
    /// </summary>
    public bool TryCommit(int token, int length, out Span<byte> frame)
    {
        if (_reserved < 0 || token != _generation)
        {
            frame = default;
            return false;
        }
        BinaryPrimitives.WriteUInt32BigEndian(_buffer.AsSpan(_reserved), (uint)length);
        frame = _buffer.AsSpan(_reserved + PrefixLength, length);
        _end = _reserved + PrefixLength + length;
        _reserved = -1;
        return true;
    }

    /// <summary>The frame at the head, if any; <see cref="Pop"/> removes it.</summary>
    public bool TryPeek(out ReadOnlySpan<byte> frame)
    {
        if (_end - _start < PrefixLength)
        {
            frame = default;
            return false;
        }
        // The length was written by Commit, never by the guest: it fits the buffer.
        int length = (int)BinaryPrimitives.ReadUInt32BigEndian(_buffer.AsSpan(_start));
        frame = _buffer.AsSpan(_start + PrefixLength, length);
        return true;
    }

    /// <summary>Removes the frame at the head.</summary>
    public void Pop()
    {
        if (TryPeek(out var frame)) Consume(PrefixLength + frame.Length);
    }

    /// <summary>Removes <paramref name="bytes"/> queued bytes from the head (as a socket took them).</summary>
    public void Consume(int bytes)
    {
        _start += bytes;
        // Back to the front once empty, unless a reservation still points behind the tail.
        if (_start >= _end && _reserved < 0) _start = _end = 0;
    }

    public void Clear()
    {
        _start = _end = 0;
        _reserved = -1;
    }
}
