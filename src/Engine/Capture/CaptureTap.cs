namespace Emunet.Engine.Capture;

/// <summary>
/// The capture an engine can start and stop at run time: a <see cref="PcapWriter"/> fed from the device's frame tap.
/// Owner thread only (start, stop and every frame), like the writer. Buffered frames are written out at least every
/// <see cref="FlushIntervalMs"/> while frames flow, so a capture can be watched while it grows. A file that fails (a
/// full disk) stops the capture, never the engine: <see cref="Failure"/> says why until the next start.
/// </summary>
internal sealed class CaptureTap : IDisposable
{
    public const long FlushIntervalMs = 1000;

    private readonly Action<string>? _onFailure;
    private PcapWriter? _writer;
    private long _lastFlush;

    /// <param name="onFailure">Told once, with the reason, when a running capture fails and stops.</param>
    public CaptureTap(Action<string>? onFailure = null) => _onFailure = onFailure;

    /// <summary>Why the last capture stopped on its own (its file failed), or null.</summary>
    public string? Failure { get; private set; }

    public bool IsRunning => _writer is not null;

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
        var writer = _writer;
        if (writer is null) return;
        try
        {
            writer.Write(frame, DateTime.UtcNow.Ticks);
            long now = Environment.TickCount64;
            if (now - _lastFlush >= FlushIntervalMs)
            {
                _lastFlush = now;
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

    public void Dispose() => Stop();
}
