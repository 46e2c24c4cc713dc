using Emunet.Engine.Forwarding;
using Emunet.Engine.Stack;

namespace Emunet.Engine;

/// <summary>How an engine instance is set up.</summary>
public sealed record EngineOptions
{
    /// <summary>The instance name (control socket file name).</summary>
    public string Name { get; init; } = "default";
    /// <summary>QEMU stream-socket device: a Unix socket path, or <c>tcp:127.0.0.1:PORT</c>.</summary>
    public string? StreamSocket { get; init; }
    /// <summary>vhost-user virtio-net device socket path.</summary>
    public string? VhostUserSocket { get; init; }
    public IReadOnlyList<ForwardSpec> Forwards { get; init; } = Array.Empty<ForwardSpec>();
    /// <summary>A pcap file to capture every frame to and from the guest into, from the start.</summary>
    public string? CapturePath { get; init; }
    /// <summary>Path of the control socket the host process serves for this instance (shown in <see cref="Control.InstanceInfo"/>).</summary>
    public string? ControlSocketPath { get; init; }
    public NetworkConfig Network { get; init; } = new();
}
