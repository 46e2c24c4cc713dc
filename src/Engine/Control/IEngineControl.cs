using Emunet.Engine.Stack;
using Emunet.Engine.Capture;
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
    /// <summary>
    /// Adds a guest-to-host remap (<c>adb reverse</c>, QEMU's <c>guestfwd</c>) from its spec (<see cref="GuestRemap"/>;
    /// with <paramref name="target"/>, adb's two-argument form); flows opened after it use it.
    /// </summary>
    /// <exception cref="ArgumentException">The spec is not valid (the message says why).</exception>
    Task<GuestRemap> AddRemapAsync(string spec, string? target, CancellationToken cancellationToken = default) =>
        throw new NotSupportedException("This engine has no guest-to-host remaps.");
    Task<IReadOnlyList<GuestRemap>> ListRemapsAsync(CancellationToken cancellationToken = default) =>
        throw new NotSupportedException("This engine has no guest-to-host remaps.");
    /// <summary>
    /// Removes the remap of that guest side (the gateway alias when <paramref name="guestAddress"/> is null; flows already
    /// open keep their host end); returns it, or null.
    /// </summary>
    Task<GuestRemap?> RemoveRemapAsync(RemapProtocol protocol, Wire.IPv4Address? guestAddress, int guestPort, CancellationToken cancellationToken = default) =>
        throw new NotSupportedException("This engine has no guest-to-host remaps.");
    /// <summary>
    /// Starts a live capture: the pcap stream (file header, then a record per frame either way) read from the returned
    /// stream until it is disposed or the engine stops. A reader that falls behind loses frames, counted in
    /// <see cref="EngineStatistics.LiveCaptureFramesDropped"/>; the engine never waits for it.
    /// </summary>
    Task<ILiveCaptureStream> OpenLiveCaptureAsync(CancellationToken cancellationToken = default) =>
        throw new NotSupportedException("This engine does not stream live captures.");
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
    /// <summary>
    /// Every guest link, in order (<see cref="Device"/>, <see cref="GuestConnected"/> and <see cref="GuestMac"/> sum
    /// them up: the first link's device and MAC, connected when any link is).
    /// </summary>
    public IReadOnlyList<LinkInfo> Links { get; init; } = Array.Empty<LinkInfo>();
}

/// <summary>One guest link of an engine.</summary>
public sealed record LinkInfo
{
    /// <summary>0 for the first link; the <c>link</c> of the flows that use it.</summary>
    public required int Index { get; init; }
    /// <summary>The device string, as <see cref="InstanceInfo.Device"/>.</summary>
    public required string Device { get; init; }
    /// <summary>The address this link's guest is leased (10.0.2.15 for the first) and forwards name.</summary>
    public required string GuestAddress { get; init; }
    public bool GuestConnected { get; init; }
    public string? GuestMac { get; init; }
}

public sealed record EngineStatistics
{
    public long FramesFromGuest { get; init; }
    public long FramesToGuest { get; init; }
    /// <summary>Of <see cref="FramesToGuest"/>, those written straight into the guest's receive buffers (vhost-user direct receive).</summary>
    public long FramesToGuestDirect { get; init; }
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
    /// <summary>Live captures streaming to control clients now, and the frames they dropped because a reader was behind.</summary>
    public int LiveCaptures { get; init; }
    public long LiveCaptureFramesDropped { get; init; }
    /// <summary>Log lines held back by the engine's rate limit (lines a guest or client could trigger in floods).</summary>
    public long LogLinesSuppressed { get; init; }
}
