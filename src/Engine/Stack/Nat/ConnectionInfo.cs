using System.Net;

namespace Emunet.Engine.Stack.Nat;

public enum FlowProtocol { Tcp, Udp, Icmp }

/// <summary>Outbound: the guest opened it (to the host or beyond). Forwarded: a host client came in through a forward.</summary>
public enum FlowDirection { Outbound, Forwarded }

/// <summary>A snapshot of one flow of the NAT table, as the control API shows it.</summary>
public sealed record ConnectionInfo
{
    public required long Id { get; init; }
    public required FlowProtocol Protocol { get; init; }
    public required FlowDirection Direction { get; init; }
    /// <summary>The guest's end (e.g. 10.0.2.15:43210).</summary>
    public required IPEndPoint GuestEndPoint { get; init; }
    /// <summary>The address the guest sees as its peer (e.g. 10.0.2.2:8080).</summary>
    public required IPEndPoint GuestPeerEndPoint { get; init; }
    /// <summary>The host socket's local end, when it has one.</summary>
    public IPEndPoint? HostLocalEndPoint { get; init; }
    /// <summary>The host socket's remote end (the server reached, or the forwarded client).</summary>
    public IPEndPoint? HostRemoteEndPoint { get; init; }
    public required string State { get; init; }
    public long BytesFromGuest { get; init; }
    public long BytesToGuest { get; init; }
    public required DateTimeOffset Started { get; init; }
    /// <summary>The forward it came through (its spec string), for forwarded flows.</summary>
    public string? Forward { get; init; }
    /// <summary>The guest link the flow uses: 0 for the engine's first link (10.0.2.15), 1 for the second, ...</summary>
    public int Link { get; init; }
}

