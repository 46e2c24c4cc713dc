using Emunet.Engine.Wire;

namespace Emunet.Engine;

/// <summary>How frames cross between the emulator and the engine.</summary>
public enum LinkKind
{
    /// <summary>QEMU's stream framing (4-byte big-endian length + frame): <c>-netdev stream</c> / <c>-netdev socket</c>.</summary>
    Stream,
    /// <summary>A vhost-user virtio-net back-end: frames in the guest's shared memory.</summary>
    VhostUser,
}

/// <summary>Who opens the connection.</summary>
public enum LinkMode
{
    /// <summary>The engine listens; the emulator connects (<c>-netdev stream,server=off</c>, <c>-netdev socket,connect=</c>).</summary>
    Listen,
    /// <summary>
    /// The engine dials an emulator that listens (<c>-netdev socket,listen=</c>, <c>-net-socket listen=</c>,
    /// <c>-netdev stream,server=on</c>), retries until it answers and dials again whenever the link drops: the emulator
    /// may start first and survives engine restarts.
    /// </summary>
    Connect,
}

/// <summary>
/// One guest link of an engine. <see cref="Endpoint"/>: for <see cref="LinkMode.Listen"/> a Unix socket path or
/// <c>tcp:127.0.0.1:PORT</c>; for <see cref="LinkMode.Connect"/> <c>tcp:HOST:PORT</c> or <c>unix:PATH</c>.
/// </summary>
public sealed record LinkOptions(LinkKind Kind, LinkMode Mode, string Endpoint)
{
    /// <summary>The guest address this link's DHCP leases and its forwards reach; null for the engine's plan (10.0.2.15, then .16, ...).</summary>
    public IPv4Address? GuestAddress { get; init; }
}
