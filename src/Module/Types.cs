using System.Net;
using Emunet.Engine.Control;
using Emunet.Engine.Forwarding;
using Emunet.Engine.Stack.Nat;

namespace Emunet.Module;

/// <summary>A running Emunet instance (Start-EmuNet, Get-EmuNet).</summary>
public sealed class EmuInstance
{
    public required string Name { get; init; }
    public int ProcessId { get; init; }
    public required string Version { get; init; }
    public required string Device { get; init; }
    public required string ControlSocket { get; init; }
    public DateTimeOffset Started { get; init; }
    public bool GuestConnected { get; init; }
    public string? GuestMac { get; init; }

    internal static EmuInstance From(InstanceDto d) => new()
    {
        Name = d.Name, ProcessId = d.ProcessId, Version = d.Version, Device = d.Device, ControlSocket = d.ControlSocket,
        Started = d.Started, GuestConnected = d.GuestConnected, GuestMac = d.GuestMac,
    };

    public override string ToString() => Name;
}

/// <summary>A host-to-guest forward (New-EmuForward, Get-EmuForward).</summary>
public sealed class EmuForward
{
    public required string Instance { get; init; }
    public ForwardProtocol Protocol { get; init; }
    public required string Address { get; init; }
    /// <summary>The port bound on the host.</summary>
    public int HostPort { get; init; }
    public int GuestPort { get; init; }
    public required string Spec { get; init; }
    public int ActiveConnections { get; init; }
    public long TotalConnections { get; init; }
    public DateTimeOffset Created { get; init; }

    internal static EmuForward From(string instance, ForwardDto d) => new()
    {
        Instance = instance,
        Protocol = d.Protocol == "udp" ? ForwardProtocol.Udp : ForwardProtocol.Tcp,
        Address = d.Address, HostPort = d.HostPort, GuestPort = d.GuestPort, Spec = d.Spec,
        ActiveConnections = d.ActiveConnections, TotalConnections = d.TotalConnections, Created = d.Created,
    };

    public override string ToString() => Spec;
}

/// <summary>One flow of an instance's NAT table (Get-EmuConnection).</summary>
public sealed class EmuConnection
{
    public required string Instance { get; init; }
    public long Id { get; init; }
    public FlowProtocol Protocol { get; init; }
    public FlowDirection Direction { get; init; }
    /// <summary>The guest's end (10.0.2.15:43210).</summary>
    public IPEndPoint? GuestEndPoint { get; init; }
    /// <summary>The peer as the guest sees it (10.0.2.2:8080).</summary>
    public IPEndPoint? GuestPeerEndPoint { get; init; }
    public IPEndPoint? HostLocalEndPoint { get; init; }
    public IPEndPoint? HostRemoteEndPoint { get; init; }
    public required string State { get; init; }
    public long BytesFromGuest { get; init; }
    public long BytesToGuest { get; init; }
    public DateTimeOffset Started { get; init; }
    public TimeSpan Age => DateTimeOffset.Now - Started;
    /// <summary>The forward it came in through, for forwarded flows.</summary>
    public string? Forward { get; init; }

    internal static EmuConnection From(string instance, ConnectionDto d) => new()
    {
        Instance = instance, Id = d.Id,
        Protocol = d.Protocol switch { "udp" => FlowProtocol.Udp, "icmp" => FlowProtocol.Icmp, _ => FlowProtocol.Tcp },
        Direction = d.Direction == "forwarded" ? FlowDirection.Forwarded : FlowDirection.Outbound,
        GuestEndPoint = Parse(d.Guest), GuestPeerEndPoint = Parse(d.GuestPeer),
        HostLocalEndPoint = Parse(d.HostLocal), HostRemoteEndPoint = Parse(d.HostRemote),
        State = d.State, BytesFromGuest = d.BytesFromGuest, BytesToGuest = d.BytesToGuest, Started = d.Started, Forward = d.Forward,
    };

    private static IPEndPoint? Parse(string? text) => text is not null && IPEndPoint.TryParse(text, out var ep) ? ep : null;
}
