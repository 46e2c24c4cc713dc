namespace Emunet.Engine.Capture;

/// <summary>
/// The capture an engine can start and stop at run time: a <see cref="PcapWriter"/> fed from the device's frame tap.
/// Owner thread only (start, stop and every frame), like the writer. Buffered frames are written out at least every
/// <see cref="FlushIntervalMs"/> while frames flow, so a capture can be watched while it grows. A file that fails (a
/// full disk) stops the capture, never the engine: <see cref="Failure"/> says why until the next start.
/// Besides the file, up to <see cref="MaxLiveCaptures"/> live captures (<see cref="LiveCapture"/>, streamed to control
/// clients) get every frame; a slow reader loses frames, counted, and never holds the owner thread.
/// </summary>
internal sealed class CaptureTap : IDisposable
{
    public const long FlushIntervalMs = 1000;
    /// <summary>Live captures (clients streaming the pcap, e.g. <c>emunet capture start -</c>) at once.</summary>
    public const int MaxLiveCaptures = 4;

    private readonly Action<string>? _onFailure;
    private PcapWriter? _writer;
    private long _lastFlush;
    private readonly List<LiveCapture> _live = new(MaxLiveCaptures);
    private long _liveDropsClosed;

    /// <param name="onFailure">Told once, with the reason, when a running capture fails and stops.</param>
    public CaptureTap(Action<string>? onFailure = null) => _onFailure = onFailure;

    /// <summary>Why the last capture stopped on its own (its file failed), or null.</summary>
    public string? Failure { get; private set; }

    public bool IsRunning => _writer is not null;

    /// <summary>True while a file or a live capture wants frames (the device's tap is set only then).</summary>
    public bool IsActive => _writer is not null || _live.Count > 0;

    public int LiveCount => _live.Count;

    /// <summary>Frames live captures have dropped because their reader was behind, those closed included.</summary>
    public long LiveFramesDropped
    {
        get
        {
            long sum = _liveDropsClosed;
            foreach (var l in _live) sum += l.FramesDropped;
            return sum;
        }
    }

    /// <summary>Adds a live capture; false when <see cref="MaxLiveCaptures"/> are running.</summary>
    public bool AddLive(LiveCapture live)
    {
        if (_live.Count >= MaxLiveCaptures) return false;
        _live.Add(live);
        return true;
    }

    /// <summary>Closes and removes a live capture (its reader went away, or the engine stops).</summary>
    public void RemoveLive(LiveCapture live)
    {
        if (_live.Remove(live)) _liveDropsClosed += live.FramesDropped;
        live.Close();
    }

    /// <summary>The file being written, or null.</summary>
    public string? FilePath => _writer?.FilePath;

    public long FramesWritten => _writer?.FramesWritten ?? 0;

    /// <summary>Starts writing to <paramref name="path"/> (created or truncated); a running capture is closed first.</summary>
    /// <exception cref="IOException">The file cannot be created.</exception>
    /// <exception cref="UnauthorizedAccessException">The file cannot be created.</exception>
    public void Start(string path)
    {
        var writer = new PcapWriter(path);
        Stop();
        Failure = null;
        _writer = writer;
        _lastFlush = Environment.TickCount64;
    }

    /// <summary>Closes the capture; returns its file, or null if none was running.</summary>
    public string? Stop()
    {
        var writer = _writer;
        if (writer is null) return null;
        _writer = null;
        try { writer.Dispose(); }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            Fail(writer, e);
        }
        return writer.FilePath;
    }

    /// <summary>Records one frame either way (matches the device's tap). Borrows <paramref name="frame"/> for the call.</summary>
    public void OnFrame(ReadOnlySpan<byte> frame, bool toGuest)
    {
        long now = DateTime.UtcNow.Ticks;
        foreach (var live in _live) live.OnFrame(frame, now);
        var writer = _writer;
        if (writer is null) return;
        try
        {
            writer.Write(frame, now);
            long tick = Environment.TickCount64;
            if (tick - _lastFlush >= FlushIntervalMs)
            {
                _lastFlush = tick;
                writer.Flush();
            }
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            _writer = null;
            Fail(writer, e);
        }
    }

    private void Fail(PcapWriter writer, Exception e)
    {
        writer.Abandon();
        Failure = $"The capture to '{writer.FilePath}' failed and stopped after {writer.FramesWritten} frames: {e.Message}";
        _onFailure?.Invoke(Failure);
    }

    public void Dispose()
    {
        Stop();
        while (_live.Count > 0) RemoveLive(_live[^1]);
    }
}
