using System.Buffers.Binary;

namespace Emunet.Engine.Capture;

/// <summary>
/// Writes Ethernet frames to a classic pcap file (LINKTYPE_ETHERNET, microsecond timestamps, host byte order as
/// the format allows: readers detect it from the magic number), the format tcpdump, Wireshark and tshark read.
/// Thread-confined: the engine's owner thread makes it, writes and disposes it; nothing here locks. Frames are
/// gathered in a fixed buffer and written out when it fills, on <see cref="Flush"/> and on <see cref="Dispose"/>,
/// so a frame costs a copy and no allocation.
/// </summary>
internal sealed class PcapWriter : IDisposable
{
    /// <summary>pcap magic for microsecond timestamps (pcap-savefile(5)).</summary>
    public const uint Magic = 0xa1b2c3d4;
    public const int LinkTypeEthernet = 1;
    /// <summary>Frames longer than this are cut (the record keeps their original length). Large enough for the 65520-byte MTU.</summary>
    public const int SnapLength = 262144;
    public const int FileHeaderLength = 24;
    public const int RecordHeaderLength = 16;
    /// <summary>Buffered bytes before a write to the file; a record that does not fit goes out on its own.</summary>
    public const int BufferSize = 256 * 1024;

    private readonly Stream _stream;
    private readonly bool _leaveOpen;
    private readonly byte[] _buffer = new byte[BufferSize];
    private int _used;
    private bool _disposed;

    /// <summary>Creates (or truncates) <paramref name="path"/> and writes the file header.</summary>
    /// <exception cref="IOException">The file cannot be created.</exception>
    /// <exception cref="UnauthorizedAccessException">The file cannot be created.</exception>
    public PcapWriter(string path)
        : this(new FileStream(Path.GetFullPath(path), FileMode.Create, FileAccess.Write, FileShare.Read, bufferSize: 1), leaveOpen: false)
    {
        FilePath = Path.GetFullPath(path);
    }

    /// <summary>Writes to <paramref name="stream"/>, starting with the file header.</summary>
    public PcapWriter(Stream stream, bool leaveOpen = false)
    {
        _stream = stream;
        _leaveOpen = leaveOpen;
        WriteFileHeader(_buffer.AsSpan(0, FileHeaderLength));
        _used = FileHeaderLength;
    }

    /// <summary>The pcap file header (<see cref="FileHeaderLength"/> bytes) into <paramref name="h"/>.</summary>
    public static void WriteFileHeader(Span<byte> h)
    {
        BinaryPrimitives.WriteUInt32LittleEndian(h[0..4], Magic);
        BinaryPrimitives.WriteUInt16LittleEndian(h[4..6], 2);   // version 2.4
        BinaryPrimitives.WriteUInt16LittleEndian(h[6..8], 4);
        BinaryPrimitives.WriteInt32LittleEndian(h[8..12], 0);   // thiszone
        BinaryPrimitives.WriteUInt32LittleEndian(h[12..16], 0); // sigfigs
        BinaryPrimitives.WriteInt32LittleEndian(h[16..20], SnapLength);
        BinaryPrimitives.WriteInt32LittleEndian(h[20..24], LinkTypeEthernet);
    }

    /// <summary>One record's header (<see cref="RecordHeaderLength"/> bytes): when, bytes kept, bytes the frame had.</summary>
    public static void WriteRecordHeader(Span<byte> h, long timestampTicks, int captured, int originalLength)
    {
        long sinceEpoch = timestampTicks - DateTime.UnixEpoch.Ticks;
        if (sinceEpoch < 0) sinceEpoch = 0;
        // A uint of seconds lasts until 2106; the format has no room for more.
        uint seconds = (uint)Math.Min(sinceEpoch / TimeSpan.TicksPerSecond, uint.MaxValue);
        uint micros = (uint)(sinceEpoch % TimeSpan.TicksPerSecond / TimeSpan.TicksPerMicrosecond);
        BinaryPrimitives.WriteUInt32LittleEndian(h[0..4], seconds);
        BinaryPrimitives.WriteUInt32LittleEndian(h[4..8], micros);
        BinaryPrimitives.WriteInt32LittleEndian(h[8..12], captured);
        BinaryPrimitives.WriteInt32LittleEndian(h[12..16], originalLength);
    }

    /// <summary>The file written, when made from a path.</summary>
    public string? FilePath { get; }

    public long FramesWritten { get; private set; }

    /// <summary>Appends one frame.</summary>
    /// <param name="frame">The Ethernet frame; borrowed for the call only.</param>
    /// <param name="timestampTicks">When the frame passed, in UTC <see cref="DateTime.Ticks"/> (<c>DateTime.UtcNow.Ticks</c>).</param>
    public void Write(ReadOnlySpan<byte> frame, long timestampTicks)
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        int captured = Math.Min(frame.Length, SnapLength);
        if (_used + RecordHeaderLength + captured > _buffer.Length) Flush();
        WriteRecordHeader(_buffer.AsSpan(_used, RecordHeaderLength), timestampTicks, captured, frame.Length);
        _used += RecordHeaderLength;
        if (_used + captured <= _buffer.Length)
        {
            frame[..captured].CopyTo(_buffer.AsSpan(_used));
            _used += captured;
        }
        else
        {
            Flush();
            _stream.Write(frame[..captured]);
        }
        FramesWritten++;
    }

    /// <summary>Writes out what is buffered.</summary>
    public void Flush()
    {
        if (_used > 0)
        {
            _stream.Write(_buffer, 0, _used);
            _used = 0;
        }
        _stream.Flush();
    }

    /// <summary>
    /// Closes the file without writing what is buffered (the file failed: a full disk, a vanished mount). Never throws.
    /// </summary>
    public void Abandon()
    {
        if (_disposed) return;
        _disposed = true;
        _used = 0;
        if (_leaveOpen) return;
        try { _stream.Dispose(); }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException or ObjectDisposedException) { }
    }

    public void Dispose()
    {
        if (_disposed) return;
        _disposed = true;
        try { Flush(); }
        finally { if (!_leaveOpen) _stream.Dispose(); }
    }
}
