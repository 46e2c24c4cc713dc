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
    /// <summary>What the guest may reach ("open" when nothing is restricted).</summary>
    public string? OutboundPolicy { get; init; }
    /// <summary>
    /// The QEMU arguments that attach a guest to every link of this instance, one card each (netdev n0, n1, ...; for
    /// vhost-user, replace &lt;RAM&gt; with -m's size).
    /// </summary>
    public required string[] EmulatorArguments { get; init; }
    /// <summary>The Android Emulator's flags for the links (-net-socket for the first, -wifi-socket for the second); null when it cannot attach.</summary>
    public string? AndroidArguments { get; init; }
    /// <summary>Every guest link, in order (the first is the one forwards reach unless they name a guest address).</summary>
    public required EmuLink[] Links { get; init; }

    internal static EmuInstance From(InstanceDto d)
    {
        var links = d.Links is { Count: > 0 } list
            ? list.Select(l => new EmuLink
            {
                Index = l.Index, Device = l.Device, GuestAddress = l.GuestAddress, GuestConnected = l.GuestConnected, GuestMac = l.GuestMac,
                EmulatorArguments = Engine.Control.EmulatorArguments.For(l.Device, "n" + l.Index.ToString(System.Globalization.CultureInfo.InvariantCulture)),
            }).ToArray()
            : [new EmuLink { Index = 0, Device = d.Device, GuestAddress = "10.0.2.15", GuestConnected = d.GuestConnected, GuestMac = d.GuestMac, EmulatorArguments = Engine.Control.EmulatorArguments.For(d.Device) }];
        var devices = links.Select(l => l.Device).ToList();
        return new()
        {
            Name = d.Name, ProcessId = d.ProcessId, Version = d.Version, Device = d.Device, ControlSocket = d.ControlSocket,
            Started = d.Started, GuestConnected = d.GuestConnected, GuestMac = d.GuestMac, OutboundPolicy = d.OutboundPolicy,
            EmulatorArguments = Engine.Control.EmulatorArguments.ForLinks(devices),
            AndroidArguments = Engine.Control.EmulatorArguments.AndroidForLinks(devices),
            Links = links,
        };
    }

    public override string ToString() => Name;
}

/// <summary>One guest link of an instance (<see cref="EmuInstance.Links"/>).</summary>
public sealed class EmuLink
{
    /// <summary>0 for the first link: the <c>Link</c> of the connections that use it.</summary>
    public int Index { get; init; }
    public required string Device { get; init; }
    /// <summary>The address this link's guest is leased; forwards name it (New-EmuForward -GuestAddress).</summary>
    public required string GuestAddress { get; init; }
    public bool GuestConnected { get; init; }
    public string? GuestMac { get; init; }
    /// <summary>The QEMU arguments that attach one card to this link.</summary>
    public required string[] EmulatorArguments { get; init; }

    public override string ToString() => $"{Device} ({GuestAddress})";
}

/// <summary>A host-to-guest forward (New-EmuForward, Get-EmuForward).</summary>
public sealed class EmuForward
{
    public required string Instance { get; init; }
    public ForwardProtocol Protocol { get; init; }
    public required string Address { get; init; }
    /// <summary>The port bound on the host.</summary>
    public int HostPort { get; init; }
    /// <summary>The host side as one endpoint (127.0.0.1:8080, [::1]:8080 for IPv6).</summary>
    public required IPEndPoint HostEndPoint { get; init; }
    public int GuestPort { get; init; }
    /// <summary>The guest address the forward names (another link's guest); null for the first link's.</summary>
    public string? GuestAddress { get; init; }
    public required string Spec { get; init; }
    public int ActiveConnections { get; init; }
    public long TotalConnections { get; init; }
    public DateTimeOffset Created { get; init; }

    internal static EmuForward From(string instance, ForwardDto d) => new()
    {
        Instance = instance,
        Protocol = d.Protocol == "udp" ? ForwardProtocol.Udp : ForwardProtocol.Tcp,
        Address = d.Address, HostPort = d.HostPort, HostEndPoint = new IPEndPoint(IPAddress.Parse(d.Address), d.HostPort), GuestPort = d.GuestPort, GuestAddress = d.GuestAddress, Spec = d.Spec,
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
    /// <summary>The guest link the flow uses (0 for the first, whose guest is 10.0.2.15).</summary>
    public int Link { get; init; }
    /// <summary>-Watch: bytes per second to the guest since the previous sample (null on a flow's first).</summary>
    public double? BytesToGuestPerSecond { get; init; }
    /// <summary>-Watch: bytes per second from the guest since the previous sample (null on a flow's first).</summary>
    public double? BytesFromGuestPerSecond { get; init; }

    internal static EmuConnection From(string instance, ConnectionDto d, (double ToGuest, double FromGuest)? rate = null) => new()
    {
        Instance = instance, Id = d.Id,
        Protocol = d.Protocol switch { "udp" => FlowProtocol.Udp, "icmp" => FlowProtocol.Icmp, _ => FlowProtocol.Tcp },
        Direction = d.Direction == "forwarded" ? FlowDirection.Forwarded : FlowDirection.Outbound,
        GuestEndPoint = Parse(d.Guest), GuestPeerEndPoint = Parse(d.GuestPeer),
        HostLocalEndPoint = Parse(d.HostLocal), HostRemoteEndPoint = Parse(d.HostRemote),
        State = d.State, BytesFromGuest = d.BytesFromGuest, BytesToGuest = d.BytesToGuest, Started = d.Started, Forward = d.Forward, Link = d.Link,
        BytesToGuestPerSecond = rate?.ToGuest, BytesFromGuestPerSecond = rate?.FromGuest,
    };

    /// <summary>For the table view: "9999 B", "9999 K", "9999 M".</summary>
    public static string FormatBytes(long bytes) => DisplayText.Bytes(bytes);

    /// <summary>For the table view: "59s", "119m", "26h".</summary>
    public static string FormatAge(TimeSpan age) => DisplayText.Age(age);

    private static IPEndPoint? Parse(string? text) => text is not null && IPEndPoint.TryParse(text, out var ep) ? ep : null;
}

/// <summary>An instance's counters (Get-EmuStat).</summary>
public sealed class EmuStat
{
    public required string Instance { get; init; }
    public long FramesFromGuest { get; init; }
    public long FramesToGuest { get; init; }
    /// <summary>Of <see cref="FramesToGuest"/>, those written straight into the guest's receive buffers (vhost-user direct receive).</summary>
    public long FramesToGuestDirect { get; init; }
    public long BytesFromGuest { get; init; }
    public long BytesToGuest { get; init; }
    public long TotalDrops { get; init; }
    /// <summary>Drop reason → count, non-zero ones only.</summary>
    public required IReadOnlyDictionary<string, long> DropsByReason { get; init; }
    public int TcpFlows { get; init; }
    public int UdpFlows { get; init; }
    public int Forwards { get; init; }
    /// <summary>The pcap file being written, or null.</summary>
    public string? CaptureFile { get; init; }
    /// <summary>Why the last capture stopped on its own (its file failed), or null.</summary>
    public string? CaptureFailure { get; init; }
    /// <summary>Bytes the connection buffers hold now, and the budget they grow under.</summary>
    public long BufferBytes { get; init; }
    public long BufferBudget { get; init; }
    /// <summary>Log lines the engine's rate limit held back.</summary>
    public long LogLinesSuppressed { get; init; }
    public DateTimeOffset Timestamp { get; init; }
    /// <summary>-Watch: bytes per second to the guest since the previous sample (null on the first).</summary>
    public double? BytesToGuestPerSecond { get; init; }
    /// <summary>-Watch: bytes per second from the guest since the previous sample (null on the first).</summary>
    public double? BytesFromGuestPerSecond { get; init; }

    internal static EmuStat From(string instance, StatsDto s, DateTimeOffset sampled, (double ToGuest, double FromGuest)? rate) => new()
    {
        Instance = instance, FramesFromGuest = s.FramesFromGuest, FramesToGuest = s.FramesToGuest, FramesToGuestDirect = s.FramesToGuestDirect, BytesFromGuest = s.BytesFromGuest,
        BytesToGuest = s.BytesToGuest, TotalDrops = s.TotalDrops, DropsByReason = s.DropsByReason, TcpFlows = s.TcpFlows,
        UdpFlows = s.UdpFlows, Forwards = s.Forwards, CaptureFile = s.CaptureFile, CaptureFailure = s.CaptureFailure,
        BufferBytes = s.BufferBytes, BufferBudget = s.BufferBudget, LogLinesSuppressed = s.LogLinesSuppressed, Timestamp = sampled.ToLocalTime(),
        BytesToGuestPerSecond = rate?.ToGuest, BytesFromGuestPerSecond = rate?.FromGuest,
    };
}

/// <summary>An instance's capture (Start-EmuCapture, Stop-EmuCapture).</summary>
public sealed class EmuCapture
{
    public required string Instance { get; init; }
    /// <summary>The file being written (Start-EmuCapture) or just closed (Stop-EmuCapture); null when none was running.</summary>
    public string? File { get; init; }
    public bool Running { get; init; }

    internal static EmuCapture From(string instance, CaptureDto c) => new() { Instance = instance, File = c.File, Running = c.Running };
}
