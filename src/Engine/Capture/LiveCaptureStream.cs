namespace Emunet.Engine.Capture;

/// <summary>A live capture's pcap bytes, read on any thread (one reader); dispose to stop it.</summary>
public interface ILiveCaptureStream : IDisposable
{
    /// <summary>Waits for pcap bytes and copies them into <paramref name="destination"/>; 0 when the engine ended the capture.</summary>
    ValueTask<int> ReadAsync(Memory<byte> destination, CancellationToken cancellationToken);
}

/// <summary>The reader's end of a <see cref="LiveCapture"/>; disposing it asks the owner thread to remove the capture.</summary>
internal sealed class LiveCaptureStream : ILiveCaptureStream
{
    private readonly LiveCapture _live;
    private Action? _remove;

    public LiveCaptureStream(LiveCapture live, Action remove)
    {
        _live = live;
        _remove = remove;
    }

    public ValueTask<int> ReadAsync(Memory<byte> destination, CancellationToken cancellationToken) =>
        _live.ReadAsync(destination, cancellationToken);

    public void Dispose()
    {
        _live.Close();
        Interlocked.Exchange(ref _remove, null)?.Invoke();
    }
}
