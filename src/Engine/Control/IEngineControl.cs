using Emunet.Engine.Forwarding;
using Emunet.Engine.Stack.Nat;

namespace Emunet.Engine.Control;

/// <summary>
/// What the control API can ask of a running engine. Every member is thread-safe: the engine marshals each call to
/// its owner thread and answers with a snapshot.
/// </summary>
public interface IEngineControl
{
    InstanceInfo Info { get; }
    Task<ForwardInfo> AddForwardAsync(ForwardSpec spec, CancellationToken cancellationToken = default);
    Task<IReadOnlyList<ForwardInfo>> ListForwardsAsync(CancellationToken cancellationToken = default);
    /// <summary>Removes the forward listening on <paramref name="protocol"/> <paramref name="hostAddress"/>:<paramref name="hostPort"/>; with <paramref name="force"/> its open connections are reset too. Returns it, or null if there is none.</summary>
    Task<ForwardInfo?> RemoveForwardAsync(ForwardProtocol protocol, System.Net.IPAddress hostAddress, int hostPort, bool force, CancellationToken cancellationToken = default);
    Task<IReadOnlyList<ConnectionInfo>> ListConnectionsAsync(CancellationToken cancellationToken = default);
    Task<EngineStatistics> GetStatisticsAsync(CancellationToken cancellationToken = default);
    Task StartCaptureAsync(string path, CancellationToken cancellationToken = default);
    /// <summary>Stops the capture; returns the file written, or null if none was running.</summary>
    Task<string?> StopCaptureAsync(CancellationToken cancellationToken = default);
    /// <summary>Asks the engine to shut down cleanly.</summary>
    void RequestShutdown();
}

public sealed record InstanceInfo
{
    public required string Name { get; init; }
    public required int ProcessId { get; init; }
    public required string Version { get; init; }
    /// <summary>"stream:unix:PATH", "stream:tcp:127.0.0.1:PORT" or "vhost-user:PATH".</summary>
    public required string Device { get; init; }
    public required string ControlSocket { get; init; }
    public required DateTimeOffset Started { get; init; }
    public bool GuestConnected { get; init; }
    public string? GuestMac { get; init; }
    /// <summary>What the guest may reach, in one line ("open" when nothing is restricted).</summary>
    public string OutboundPolicy { get; init; } = "open";
}

public sealed record EngineStatistics
{
    public long FramesFromGuest { get; init; }
    public long FramesToGuest { get; init; }
    public long BytesFromGuest { get; init; }
    public long BytesToGuest { get; init; }
    public long TotalDrops { get; init; }
    public required IReadOnlyDictionary<string, long> DropsByReason { get; init; }
    public int TcpFlows { get; init; }
    public int UdpFlows { get; init; }
    public int Forwards { get; init; }
    /// <summary>Bytes connection buffers hold now, and the budget they grow under.</summary>
    public long BufferBytes { get; init; }
    public long BufferBudget { get; init; }
    public string? CaptureFile { get; init; }
    /// <summary>Why the last capture stopped on its own (its file failed, e.g. a full disk), until the next start.</summary>
    public string? CaptureFailure { get; init; }
    /// <summary>Log lines held back by the engine's rate limit (lines a guest or client could trigger in floods).</summary>
    public long LogLinesSuppressed { get; init; }
}
