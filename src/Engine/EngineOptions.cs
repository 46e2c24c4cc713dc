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
    /// <summary>
    /// The guest links, in order (the first is the one forwards reach unless they name a guest address). When empty,
    /// the one link <see cref="StreamSocket"/> or <see cref="VhostUserSocket"/> describes.
    /// </summary>
    public IReadOnlyList<LinkOptions> Links { get; init; } = Array.Empty<LinkOptions>();

    /// <summary>The links this engine serves: <see cref="Links"/>, or the one the single-link properties give.</summary>
    public IReadOnlyList<LinkOptions> EffectiveLinks()
    {
        if (Links.Count > 0)
        {
            if (StreamSocket is not null || VhostUserSocket is not null)
                throw new EngineStartException("Give the guest links either as a list or as one --socket/--vhost-user, not both.");
            return Links;
        }
        if (VhostUserSocket is not null && StreamSocket is not null)
            throw new EngineStartException("Give one guest device: either --socket (QEMU -netdev stream) or --vhost-user (QEMU -netdev vhost-user), not both.");
        if (VhostUserSocket is not null) return [new LinkOptions(LinkKind.VhostUser, LinkMode.Listen, VhostUserSocket)];
        if (StreamSocket is not null) return [new LinkOptions(LinkKind.Stream, LinkMode.Listen, StreamSocket)];
        throw new EngineStartException("No guest device given: use --socket PATH (QEMU -netdev stream), --socket tcp:127.0.0.1:PORT, or --vhost-user PATH (QEMU -netdev vhost-user).");
    }
    public IReadOnlyList<ForwardSpec> Forwards { get; init; } = Array.Empty<ForwardSpec>();
    /// <summary>A pcap file to capture every frame to and from the guest into, from the start.</summary>
    public string? CapturePath { get; init; }
    /// <summary>Path of the control socket the host process serves for this instance (shown in <see cref="Control.InstanceInfo"/>).</summary>
    public string? ControlSocketPath { get; init; }
    public NetworkConfig Network { get; init; } = new();
}
