using System.Buffers.Binary;

namespace Emunet.Engine.Capture;

/// <summary>
/// A capture streamed to a reader on another thread (a control client piping it into <c>wireshark -k -i -</c>): the
/// owner thread appends whole pcap records to a fixed ring of <see cref="Capacity"/> bytes and never waits; the
/// reader drains it with <see cref="ReadAsync"/>. A record that does not fit (the reader is slow or stopped) is
/// dropped whole and counted in <see cref="FramesDropped"/>, so the stream stays a valid pcap and the engine never
/// blocks on a pipe. The ring starts with the pcap file header (the same header <see cref="PcapWriter"/> writes).
/// </summary>
internal sealed class LiveCapture : IDisposable
{
    /// <summary>Bytes the ring holds before frames are dropped.</summary>
    public const int Capacity = 4 * 1024 * 1024;

    private readonly byte[] _ring = new byte[Capacity];
    private readonly object _lock = new();
    private readonly SemaphoreSlim _ready = new(0, 1);
    private int _head;   // next byte to read
    private int _count;  // bytes held
    private bool _closed;
    private long _framesWritten;
    private long _framesDropped;

    public LiveCapture()
    {
        Span<byte> header = stackalloc byte[PcapWriter.FileHeaderLength];
        PcapWriter.WriteFileHeader(header);
        lock (_lock) Append(header);
    }

    public long FramesWritten => Interlocked.Read(ref _framesWritten);
    public long FramesDropped => Interlocked.Read(ref _framesDropped);

    /// <summary>True once the engine has closed the stream (stopped or shut down); the reader sees the end of it.</summary>
    public bool IsClosed { get { lock (_lock) return _closed; } }

    /// <summary>Appends one frame's record, or drops it when the ring has no room for all of it. Owner thread; never blocks.</summary>
    public void OnFrame(ReadOnlySpan<byte> frame, long timestampTicks)
    {
        int captured = Math.Min(frame.Length, PcapWriter.SnapLength);
        int need = PcapWriter.RecordHeaderLength + captured;
        Span<byte> header = stackalloc byte[PcapWriter.RecordHeaderLength];
        PcapWriter.WriteRecordHeader(header, timestampTicks, captured, frame.Length);
        bool wake;
        lock (_lock)
        {
            if (_closed) return;
            if (Capacity - _count < need)
            {
                _framesDropped++;
                return;
            }
            wake = _count == 0;
            Append(header);
            Append(frame[..captured]);
            _framesWritten++;
        }
        if (wake) Wake();
    }

    /// <summary>Ends the stream: the reader gets what is held, then 0.</summary>
    public void Close()
    {
        lock (_lock)
        {
            if (_closed) return;
            _closed = true;
        }
        Wake();
    }

    /// <summary>
    /// Copies held bytes into <paramref name="destination"/>, waiting until there are some; 0 once the stream is closed
    /// and drained. One reader at a time.
    /// </summary>
    public async ValueTask<int> ReadAsync(Memory<byte> destination, CancellationToken cancellationToken)
    {
        while (true)
        {
            lock (_lock)
            {
                if (_count > 0)
                {
                    int n = Math.Min(destination.Length, _count);
                    int first = Math.Min(n, Capacity - _head);
                    _ring.AsSpan(_head, first).CopyTo(destination.Span);
                    if (n > first) _ring.AsSpan(0, n - first).CopyTo(destination.Span[first..]);
                    _head = (_head + n) % Capacity;
                    _count -= n;
                    return n;
                }
                if (_closed) return 0;
            }
            await _ready.WaitAsync(cancellationToken).ConfigureAwait(false);
        }
    }

    private void Append(ReadOnlySpan<byte> data)
    {
        int tail = (_head + _count) % Capacity;
        int first = Math.Min(data.Length, Capacity - tail);
        data[..first].CopyTo(_ring.AsSpan(tail));
        if (data.Length > first) data[first..].CopyTo(_ring);
        _count += data.Length;
    }

    private void Wake()
    {
        // At most one pending signal: the reader re-checks the ring after every wake.
        try { if (_ready.CurrentCount == 0) _ready.Release(); }
        catch (SemaphoreFullException) { }
        catch (ObjectDisposedException) { }
    }

    public void Dispose()
    {
        Close();
    }
}
