using System.Globalization;
using System.Net;
using System.Text.Json;
using System.Text.Json.Serialization;
using Emunet.Engine.Forwarding;
using Emunet.Engine.Stack.Nat;

namespace Emunet.Engine.Control;

/// <summary>
/// The control protocol, version 1 (docs/control-api.md): one JSON object per line over the instance's Unix socket.
/// A request is <c>{"v":1,"id":7,"op":"forward.add","spec":"tcp:8080:80"}</c>; its reply echoes <c>v</c> and <c>id</c>
/// and carries <c>"ok":true</c> with the op's result member, or <c>"ok":false</c> with <c>error.code</c> (one of
/// <see cref="ControlErrorCodes"/>) and <c>error.message</c>. Unknown members are ignored, so later versions can add them.
/// </summary>
public static class ControlProtocol
{
    public const int Version = 1;

    /// <summary>The longest request line (without its newline) the server reads; a longer one is answered with
    /// <see cref="ControlErrorCodes.LineTooLong"/> and the connection is closed.</summary>
    public const int MaxRequestBytes = 64 * 1024;

    public static class Ops
    {
        public const string Info = "info";
        public const string ForwardAdd = "forward.add";
        public const string ForwardList = "forward.list";
        public const string ForwardRemove = "forward.remove";
        public const string ConnectionsList = "connections.list";
        public const string Stats = "stats";
        public const string CaptureStart = "capture.start";
        public const string CaptureStop = "capture.stop";
        public const string RemapAdd = "remap.add";
        public const string RemapList = "remap.list";
        public const string RemapRemove = "remap.remove";
        /// <summary>After its reply, the connection carries a live pcap stream (no more request lines) until either side closes.</summary>
        public const string CaptureStream = "capture.stream";
        public const string Shutdown = "shutdown";

        public static readonly IReadOnlyList<string> All =
            [Info, ForwardAdd, ForwardList, ForwardRemove, ConnectionsList, Stats, CaptureStart, CaptureStop, CaptureStream, RemapAdd, RemapList, RemapRemove, Shutdown];
    }
}

/// <summary>Stable error codes of the control protocol. Clients match on these, never on messages.</summary>
public static class ControlErrorCodes
{
    // Sent by the server.
    public const string BadJson = "bad_json";
    public const string LineTooLong = "line_too_long";
    public const string UnsupportedVersion = "unsupported_version";
    public const string UnknownOp = "unknown_op";
    public const string BadRequest = "bad_request";
    public const string PortInUse = "port_in_use";
    public const string PermissionDenied = "permission_denied";
    public const string NotFound = "not_found";
    public const string Conflict = "conflict";
    public const string CaptureFailed = "capture_failed";
    public const string NotSupported = "not_supported";
    public const string TooManyClients = "too_many_clients";
    public const string Internal = "internal";

    // Raised by the client side before or instead of a reply.
    public const string NoInstance = "no_instance";
    public const string AmbiguousInstance = "ambiguous_instance";
    public const string InstanceNotFound = "instance_not_found";
    public const string Unreachable = "unreachable";
    public const string Timeout = "timeout";
    public const string ProtocolError = "protocol_error";
}

public sealed class ControlRequest
{
    public int V { get; set; }
    /// <summary>Any JSON value; echoed in the reply.</summary>
    public JsonElement? Id { get; set; }
    public string? Op { get; set; }
    /// <summary>forward.add: the forward spec (<c>tcp:8080:80</c>, <c>hostfwd=tcp:127.0.0.1:8080-:80</c>, ...).</summary>
    public string? Spec { get; set; }
    /// <summary>forward.remove: tcp or udp. connections.list: filter, tcp, udp or icmp.</summary>
    public string? Protocol { get; set; }
    /// <summary>forward.remove: the host address (default 127.0.0.1).</summary>
    public string? Address { get; set; }
    /// <summary>forward.remove: the bound host port. connections.list: filter, any port of the flow.</summary>
    public int? Port { get; set; }
    /// <summary>forward.remove: reset its open connections too.</summary>
    public bool Force { get; set; }
    /// <summary>connections.list: filter on the state name (case-insensitive).</summary>
    public string? State { get; set; }
    /// <summary>remap.add: the host side in adb's two-argument form (<c>spec</c> "tcp:8000", <c>target</c> "tcp:9000").</summary>
    public string? Target { get; set; }
    /// <summary>capture.start: the pcap file to write.</summary>
    public string? Path { get; set; }
}

public sealed class ControlError
{
    public required string Code { get; set; }
    public required string Message { get; set; }
}

public sealed class ControlResponse
{
    public int V { get; set; } = ControlProtocol.Version;
    public JsonElement? Id { get; set; }
    public bool Ok { get; set; }
    public ControlError? Error { get; set; }
    public InstanceDto? Instance { get; set; }
    public ForwardDto? Forward { get; set; }
    public List<ForwardDto>? Forwards { get; set; }
    public List<ConnectionDto>? Connections { get; set; }
    public StatsDto? Stats { get; set; }
    public CaptureDto? Capture { get; set; }
    public RemapDto? Remap { get; set; }
    public List<RemapDto>? Remaps { get; set; }

    /// <summary>Server side only: ask the engine to stop once this reply is sent.</summary>
    [JsonIgnore]
    internal bool ShutdownAfterSend { get; set; }

    /// <summary>Server side only: after this reply the connection streams this live capture.</summary>
    [JsonIgnore]
    internal Capture.ILiveCaptureStream? StreamAfterSend { get; set; }

    public static ControlResponse Failure(JsonElement? id, string code, string message) =>
        new() { Id = id, Ok = false, Error = new ControlError { Code = code, Message = message } };
}

public sealed class InstanceDto
{
    public required string Name { get; set; }
    public int ProcessId { get; set; }
    public required string Version { get; set; }
    public required string Device { get; set; }
    public required string ControlSocket { get; set; }
    public DateTimeOffset Started { get; set; }
    public bool GuestConnected { get; set; }
    public string? GuestMac { get; set; }
    public string? OutboundPolicy { get; set; }
    /// <summary>Every guest link, in order; absent from engines older than several links (then <see cref="Device"/> is the one).</summary>
    public List<LinkDto>? Links { get; set; }

    public static InstanceDto From(InstanceInfo i) => new()
    {
        Name = i.Name, ProcessId = i.ProcessId, Version = i.Version, Device = i.Device, ControlSocket = i.ControlSocket,
        Started = i.Started, GuestConnected = i.GuestConnected, GuestMac = i.GuestMac, OutboundPolicy = i.OutboundPolicy,
        Links = i.Links.Count == 0 ? null : i.Links.Select(LinkDto.From).ToList(),
    };
}

public sealed class LinkDto
{
    /// <summary>0 for the first link: the <c>link</c> of the connections that use it.</summary>
    public int Index { get; set; }
    public required string Device { get; set; }
    /// <summary>The address this link's guest is leased, and forwards name (10.0.2.15 for the first link).</summary>
    public required string GuestAddress { get; set; }
    public bool GuestConnected { get; set; }
    public string? GuestMac { get; set; }

    public static LinkDto From(LinkInfo l) => new()
    {
        Index = l.Index, Device = l.Device, GuestAddress = l.GuestAddress, GuestConnected = l.GuestConnected, GuestMac = l.GuestMac,
    };
}

public sealed class ForwardDto
{
    /// <summary>"tcp" or "udp".</summary>
    public required string Protocol { get; set; }
    public required string Address { get; set; }
    /// <summary>The port bound on the host.</summary>
    public int HostPort { get; set; }
    /// <summary>Address and bound port as one endpoint: <c>127.0.0.1:8080</c>, <c>[::1]:8080</c>.</summary>
    public string? HostEndPoint { get; set; }
    /// <summary>The port the spec asked for (0: any free port).</summary>
    public int RequestedHostPort { get; set; }
    public int GuestPort { get; set; }
    /// <summary>The guest address the forward names (another link's guest, e.g. 10.0.2.16); null for the first link's.</summary>
    public string? GuestAddress { get; set; }
    /// <summary>The canonical spec with the bound port, e.g. <c>tcp:127.0.0.1:8080:80</c> or <c>tcp:127.0.0.1:8080:10.0.2.16:80</c>.</summary>
    public required string Spec { get; set; }
    public int ActiveConnections { get; set; }
    public long TotalConnections { get; set; }
    public DateTimeOffset Created { get; set; }

    public static ForwardDto From(ForwardInfo f)
    {
        string proto = ProtocolName(f.Spec.Protocol);
        string address = f.Spec.HostAddress.ToString();
        // An IPv6 host address goes in brackets, in the spec as in the endpoint (the spec parses back the same).
        string hostEndPoint = DisplayText.EndPoint(address, f.BoundPort);
        return new ForwardDto
        {
            Protocol = proto, Address = address, HostPort = f.BoundPort, HostEndPoint = hostEndPoint, RequestedHostPort = f.RequestedHostPort,
            GuestPort = f.Spec.GuestPort, GuestAddress = f.Spec.GuestAddress?.ToString(),
            Spec = f.Spec.GuestAddress is { } guest
                ? string.Create(CultureInfo.InvariantCulture, $"{proto}:{hostEndPoint}:{guest}:{f.Spec.GuestPort}")
                : string.Create(CultureInfo.InvariantCulture, $"{proto}:{hostEndPoint}:{f.Spec.GuestPort}"),
            ActiveConnections = f.ActiveConnections, TotalConnections = f.TotalConnections, Created = f.Created,
        };
    }

    public static string ProtocolName(ForwardProtocol p) => p == ForwardProtocol.Udp ? "udp" : "tcp";
}

public sealed class ConnectionDto
{
    public long Id { get; set; }
    /// <summary>"tcp", "udp" or "icmp".</summary>
    public required string Protocol { get; set; }
    /// <summary>"outbound" or "forwarded".</summary>
    public required string Direction { get; set; }
    public required string Guest { get; set; }
    public required string GuestPeer { get; set; }
    public string? HostLocal { get; set; }
    public string? HostRemote { get; set; }
    public required string State { get; set; }
    public long BytesFromGuest { get; set; }
    public long BytesToGuest { get; set; }
    public DateTimeOffset Started { get; set; }
    public string? Forward { get; set; }
    /// <summary>The guest link the flow uses (0 for the first, 10.0.2.15).</summary>
    public int Link { get; set; }

    public static ConnectionDto From(ConnectionInfo c) => new()
    {
        Id = c.Id,
        Protocol = c.Protocol switch { FlowProtocol.Tcp => "tcp", FlowProtocol.Udp => "udp", _ => "icmp" },
        Direction = c.Direction == FlowDirection.Forwarded ? "forwarded" : "outbound",
        Guest = c.GuestEndPoint.ToString(), GuestPeer = c.GuestPeerEndPoint.ToString(),
        HostLocal = c.HostLocalEndPoint?.ToString(), HostRemote = c.HostRemoteEndPoint?.ToString(),
        State = c.State, BytesFromGuest = c.BytesFromGuest, BytesToGuest = c.BytesToGuest, Started = c.Started,
        Forward = c.Forward, Link = c.Link,
    };

    /// <summary>True when the flow passes every given filter; <paramref name="port"/> matches any of its ports.</summary>
    public static bool Matches(ConnectionInfo c, FlowProtocol? protocol, int? port, string? state)
    {
        if (protocol is { } p && c.Protocol != p) return false;
        if (state is not null && !string.Equals(c.State, state, StringComparison.OrdinalIgnoreCase)) return false;
        if (port is { } n)
        {
            return c.GuestEndPoint.Port == n || c.GuestPeerEndPoint.Port == n
                || c.HostLocalEndPoint?.Port == n || c.HostRemoteEndPoint?.Port == n;
        }
        return true;
    }
}

public sealed class StatsDto
{
    public long FramesFromGuest { get; set; }
    public long FramesToGuest { get; set; }
    public long FramesToGuestDirect { get; set; }
    public long BytesFromGuest { get; set; }
    public long BytesToGuest { get; set; }
    public long TotalDrops { get; set; }
    public Dictionary<string, long> DropsByReason { get; set; } = new();
    public int TcpFlows { get; set; }
    public int UdpFlows { get; set; }
    public int Forwards { get; set; }
    public string? CaptureFile { get; set; }
    public string? CaptureFailure { get; set; }
    public long BufferBytes { get; set; }
    public long BufferBudget { get; set; }
    public long LogLinesSuppressed { get; set; }
    public int LiveCaptures { get; set; }
    public long LiveCaptureFramesDropped { get; set; }

    public static StatsDto From(EngineStatistics s) => new()
    {
        FramesFromGuest = s.FramesFromGuest, FramesToGuest = s.FramesToGuest, FramesToGuestDirect = s.FramesToGuestDirect, BytesFromGuest = s.BytesFromGuest,
        BytesToGuest = s.BytesToGuest, TotalDrops = s.TotalDrops, DropsByReason = new Dictionary<string, long>(s.DropsByReason),
        TcpFlows = s.TcpFlows, UdpFlows = s.UdpFlows, Forwards = s.Forwards, CaptureFile = s.CaptureFile,
        CaptureFailure = s.CaptureFailure, BufferBytes = s.BufferBytes, BufferBudget = s.BufferBudget,
        LogLinesSuppressed = s.LogLinesSuppressed, LiveCaptures = s.LiveCaptures,
        LiveCaptureFramesDropped = s.LiveCaptureFramesDropped,
    };
}

/// <summary>A guest-to-host remap: the guest's <c>guestAddress:guestPort</c> reaches <c>hostAddress:hostPort</c>.</summary>
public sealed class RemapDto
{
    /// <summary>"tcp" or "udp".</summary>
    public required string Protocol { get; set; }
    public required string GuestAddress { get; set; }
    public int GuestPort { get; set; }
    public required string HostAddress { get; set; }
    public int HostPort { get; set; }

    public static RemapDto From(Stack.GuestRemap r) => new()
    {
        Protocol = r.ProtocolName, GuestAddress = r.GuestAddress.ToString(), GuestPort = r.GuestPort,
        HostAddress = r.Host.Address.ToString(), HostPort = r.Host.Port,
    };
}

public sealed class CaptureDto
{
    /// <summary>The file being written (capture.start) or just closed (capture.stop); null when none was running.</summary>
    public string? File { get; set; }
    public bool Running { get; set; }
}

/// <summary>Source-generated serialization for the protocol (no reflection, trimming-safe).</summary>
[JsonSourceGenerationOptions(
    PropertyNamingPolicy = JsonKnownNamingPolicy.CamelCase,
    DefaultIgnoreCondition = JsonIgnoreCondition.WhenWritingNull,
    PropertyNameCaseInsensitive = false)]
[JsonSerializable(typeof(ControlRequest))]
[JsonSerializable(typeof(ControlResponse))]
[JsonSerializable(typeof(List<ForwardDto>))]
[JsonSerializable(typeof(List<ConnectionDto>))]
[JsonSerializable(typeof(List<InstanceDto>))]
[JsonSerializable(typeof(List<RemapDto>))]
[JsonSerializable(typeof(long))]
public sealed partial class ControlJsonContext : JsonSerializerContext
{
    /// <summary>Indented output for people and scripts (the tool's <c>--json</c>).</summary>
    public static ControlJsonContext Indented { get; } = new(new JsonSerializerOptions
    {
        PropertyNamingPolicy = JsonNamingPolicy.CamelCase,
        DefaultIgnoreCondition = JsonIgnoreCondition.WhenWritingNull,
        WriteIndented = true,
    });
}

internal static class EndPointText
{
    public static bool TryParseProtocol(string? text, out FlowProtocol protocol)
    {
        switch (text?.ToLowerInvariant())
        {
            case "tcp": protocol = FlowProtocol.Tcp; return true;
            case "udp": protocol = FlowProtocol.Udp; return true;
            case "icmp": protocol = FlowProtocol.Icmp; return true;
            default: protocol = default; return false;
        }
    }

    public static bool TryParseForwardProtocol(string? text, out ForwardProtocol protocol)
    {
        switch (text?.ToLowerInvariant())
        {
            case "tcp": protocol = ForwardProtocol.Tcp; return true;
            case "udp": protocol = ForwardProtocol.Udp; return true;
            default: protocol = default; return false;
        }
    }

    public static bool TryParseAddress(string? text, out IPAddress address)
    {
        if (string.IsNullOrEmpty(text)) { address = IPAddress.Loopback; return true; }
        if (text == "*") { address = IPAddress.Any; return true; }
        if (Wire.IPv4Address.TryParseDottedQuad(text, out address)) return true;
        // An IPv6 address, bare or in brackets (forwards bound on [::1]); no zone index.
        string bare = text.StartsWith('[') && text.EndsWith(']') ? text[1..^1] : text;
        if (!bare.Contains('%') && IPAddress.TryParse(bare, out var v6) && v6.AddressFamily == System.Net.Sockets.AddressFamily.InterNetworkV6)
        {
            address = v6;
            return true;
        }
        address = IPAddress.None;
        return false;
    }
}
