using System.Globalization;
using System.Net;

namespace Emunet.Engine.Forwarding;

public enum ForwardProtocol { Tcp, Udp }

/// <summary>
/// One forward: a host listener whose connections (or datagrams) go straight into the guest's port.
/// Spec forms: <c>tcp:10977</c>, <c>tcp:127.0.0.1:8080:80</c>, <c>udp:5353:53</c>, and QEMU's
/// <c>hostfwd=tcp:127.0.0.1:8080-:80</c> (or without the <c>hostfwd=</c> prefix). A forward reaches the engine's first
/// link's guest (10.0.2.15) unless it names another link's: <c>tcp:127.0.0.1:8080:10.0.2.16:80</c> or
/// <c>hostfwd=tcp:127.0.0.1:8080-10.0.2.16:80</c>.
/// The host address defaults to 127.0.0.1: nothing listens on other interfaces unless asked.
/// <see cref="ParseMany"/> also reads lists and ranges as passt users type them: <c>tcp:8000-8010</c>,
/// <c>tcp:8000-8010:9000-9010</c>, <c>tcp:8080:80,8443:443,udp:5353:53</c>.
/// </summary>
public sealed record ForwardSpec(ForwardProtocol Protocol, IPAddress HostAddress, int HostPort, int GuestPort)
{
    /// <summary>
    /// The guest the forward reaches: the configured address of one of the engine's links (10.0.2.16 for the Android
    /// Emulator's Wi-Fi link); null for the first link's guest.
    /// </summary>
    public Wire.IPv4Address? GuestAddress { get; init; }

    /// <summary>The most forwards one spec text may stand for (a range of 4096 ports, or a list).</summary>
    public const int MaxForwardsPerSpec = 4096;

    public static bool TryParseMany(string? text, out IReadOnlyList<ForwardSpec> specs, out string? error)
    {
        try { specs = ParseMany(text!); error = null; return true; }
        catch (FormatException e) { specs = []; error = e.Message; return false; }
    }

    /// <summary>
    /// Reads a list of forwards separated by commas, each a spec as <see cref="Parse"/> reads it or a port range:
    /// <c>[ADDR:]FIRST-LAST</c> (the same ports in the guest) or <c>[ADDR:]FIRST-LAST:GFIRST-GLAST</c> (as many guest
    /// ports). An item without <c>PROTO:</c> takes the protocol of the item before it (<c>tcp:80,443</c>).
    /// </summary>
    /// <exception cref="FormatException">An item is not valid, a range is reversed or uneven, or there are more than <see cref="MaxForwardsPerSpec"/>.</exception>
    public static IReadOnlyList<ForwardSpec> ParseMany(string text)
    {
        if (string.IsNullOrWhiteSpace(text)) return [Parse(text)];
        var specs = new List<ForwardSpec>();
        string? protocol = null;
        foreach (string raw in text.Split(','))
        {
            string item = raw.Trim();
            if (item.Length == 0) throw Bad(text, "it has an empty item between commas");
            int colon = item.IndexOf(':');
            bool hasProtocol = item.StartsWith("hostfwd=", StringComparison.OrdinalIgnoreCase)
                || (colon > 0 && item[..colon].All(char.IsAsciiLetter));
            if (!hasProtocol)
            {
                if (protocol is null) throw Bad(text, $"'{item}' has no protocol (start the list with tcp: or udp:)");
                item = protocol + ":" + item;
            }
            string body = item.StartsWith("hostfwd=", StringComparison.OrdinalIgnoreCase) ? item["hostfwd=".Length..] : item;
            if (body.IndexOf(':') is var c and > 0) protocol = body[..c].ToLowerInvariant();
            if (TryParseRange(text, item, out var range)) specs.AddRange(range);
            else specs.Add(Parse(item));
            if (specs.Count > MaxForwardsPerSpec) throw Bad(text, $"it stands for more than {MaxForwardsPerSpec} forwards");
        }
        return specs;
    }

    /// <summary>PROTO:[ADDR:]A-B[:C-D]; false when <paramref name="item"/> is not a range (QEMU's hostfwd form has a
    /// '-' too, but what follows it is empty, ':' or an address).</summary>
    private static bool TryParseRange(string text, string item, out List<ForwardSpec> specs)
    {
        specs = [];
        if (item.StartsWith("hostfwd=", StringComparison.OrdinalIgnoreCase)) return false;
        int colon = item.IndexOf(':');
        var protocol = item[..colon].ToLowerInvariant() == "udp" ? ForwardProtocol.Udp : ForwardProtocol.Tcp;
        var parts = item[(colon + 1)..].Split(':');
        IPAddress address = IPAddress.Loopback;
        int first = 0;
        if (parts.Length > 1 && (parts[0].Contains('.') || parts[0] == "*"))
        {
            if (!parts[0].Contains('-')) { address = ParseAddress(text, parts[0]); first = 1; }
        }
        int count = parts.Length - first;
        if (count is < 1 or > 2 || !IsRangeText(parts[first])) return false;
        var (hostFirst, hostLast) = ParseRange(text, parts[first], "host port");
        int guestFirst = hostFirst;
        if (count == 2)
        {
            if (!IsRangeText(parts[first + 1])) throw Bad(text, $"the host ports {parts[first]} need a guest range of as many ports, e.g. {parts[first]}:{parts[first]}");
            var (gf, gl) = ParseRange(text, parts[first + 1], "guest port");
            if (gl - gf != hostLast - hostFirst) throw Bad(text, $"the host range {parts[first]} and the guest range {parts[first + 1]} differ in length");
            guestFirst = gf;
        }
        if (hostLast - hostFirst + 1 > MaxForwardsPerSpec) throw Bad(text, $"the range {parts[first]} is more than {MaxForwardsPerSpec} ports");
        for (int p = hostFirst; p <= hostLast; p++) specs.Add(new ForwardSpec(protocol, address, p, guestFirst + (p - hostFirst)));
        return true;
    }

    private static bool IsRangeText(string s)
    {
        int dash = s.IndexOf('-');
        return dash > 0 && dash < s.Length - 1 && s.AsSpan(0, dash).IndexOfAnyExceptInRange('0', '9') < 0
            && s.AsSpan(dash + 1).IndexOfAnyExceptInRange('0', '9') < 0;
    }

    private static (int First, int Last) ParseRange(string text, string range, string what)
    {
        int dash = range.IndexOf('-');
        int a = ParsePort(text, range[..dash], what, allowZero: false), b = ParsePort(text, range[(dash + 1)..], what, allowZero: false);
        if (b < a) throw Bad(text, $"the range {range} ends before it starts");
        return (a, b);
    }

    public static ForwardSpec Create(ForwardProtocol protocol, int hostPort, int? guestPort = null, IPAddress? hostAddress = null)
    {
        CheckPort(hostPort, "host port", allowZero: true);
        int g = guestPort ?? hostPort;
        CheckPort(g, "guest port", allowZero: false);
        return new ForwardSpec(protocol, hostAddress ?? IPAddress.Loopback, hostPort, g);
    }

    public static bool TryParse(string? text, out ForwardSpec? spec, out string? error)
    {
        try { spec = Parse(text!); error = null; return true; }
        catch (FormatException e) { spec = null; error = e.Message; return false; }
    }

    public static ForwardSpec Parse(string text)
    {
        if (string.IsNullOrWhiteSpace(text)) throw new FormatException("A forward spec is empty. Use PROTO:[ADDR:]HOSTPORT[:GUESTPORT], e.g. tcp:10977 or tcp:127.0.0.1:8080:80.");
        string s = text.Trim();
        if (s.StartsWith("hostfwd=", StringComparison.OrdinalIgnoreCase)) s = s["hostfwd=".Length..];
        int colon = s.IndexOf(':');
        if (colon < 0) throw Bad(text, "it has no protocol");
        var protocol = s[..colon].ToLowerInvariant() switch
        {
            "tcp" => ForwardProtocol.Tcp,
            "udp" => ForwardProtocol.Udp,
            var p => throw Bad(text, $"protocol '{p}' is not tcp or udp"),
        };
        string rest = s[(colon + 1)..];
        if (rest.StartsWith('[') && rest.IndexOf('-') < 0)
        {
            // An IPv6 host address in brackets (RFC 3986 §3.2.2's form): tcp:[::1]:8080:80, tcp:[::1]:8080.
            int close = rest.IndexOf(']');
            if (close < 0 || close + 1 >= rest.Length || rest[close + 1] != ':') throw Bad(text, "an IPv6 address goes in brackets followed by a port, e.g. tcp:[::1]:8080:80");
            var address6 = ParseAddress(text, rest[..(close + 1)]);
            var ports = rest[(close + 2)..].Split(':');
            return ports.Length switch
            {
                1 => Checked(text, protocol, address6, ParsePort(text, ports[0], "host port", false), null),
                2 => Checked(text, protocol, address6, ParsePort(text, ports[0], "host port", true), ParsePort(text, ports[1], "guest port", false)),
                _ => throw Bad(text, "it has too many parts"),
            };
        }
        int dash = rest.IndexOf('-');
        if (dash >= 0)
        {
            // QEMU hostfwd: [hostaddr]:hostport-[guestaddr]:guestport
            string host = rest[..dash], guest = rest[(dash + 1)..];
            int hc = host.LastIndexOf(':');
            int gc = guest.LastIndexOf(':');
            if (hc < 0 || gc < 0) throw Bad(text, "QEMU's form is hostfwd=tcp:[HOSTADDR]:HOSTPORT-[GUESTADDR]:GUESTPORT");
            var addr = host[..hc].Length == 0 ? IPAddress.Loopback : ParseAddress(text, host[..hc]);
            int hp = ParsePort(text, host[(hc + 1)..], "host port", allowZero: true);
            int gp = guest[(gc + 1)..].Length == 0 ? hp : ParsePort(text, guest[(gc + 1)..], "guest port", allowZero: false);
            var guestAddress = guest[..gc].Length == 0 ? (Wire.IPv4Address?)null : ParseGuestAddress(text, guest[..gc]);
            return new ForwardSpec(protocol, addr, hp, gp) { GuestAddress = guestAddress };
        }
        var parts = rest.Split(':');
        return parts.Length switch
        {
            1 => Checked(text, protocol, IPAddress.Loopback, ParsePort(text, parts[0], "host port", false), null),
            2 when parts[0].Contains('.') => Checked(text, protocol, ParseAddress(text, parts[0]), ParsePort(text, parts[1], "host port", false), null),
            // Host port 0 asks for any free port; it needs an explicit guest port.
            2 => Checked(text, protocol, IPAddress.Loopback, ParsePort(text, parts[0], "host port", true), ParsePort(text, parts[1], "guest port", false)),
            3 => Checked(text, protocol, ParseAddress(text, parts[0]), ParsePort(text, parts[1], "host port", true), ParsePort(text, parts[2], "guest port", false)),
            // ADDR:HOSTPORT:GUESTADDR:GUESTPORT: a guest other than the first link's.
            4 => Checked(text, protocol, ParseAddress(text, parts[0]), ParsePort(text, parts[1], "host port", true), ParsePort(text, parts[3], "guest port", false))
                with { GuestAddress = ParseGuestAddress(text, parts[2]) },
            _ => throw Bad(text, "it has too many parts"),
        };
    }

    private static ForwardSpec Checked(string text, ForwardProtocol p, IPAddress a, int hp, int? gp) => new(p, a, hp, gp ?? hp);

    private static IPAddress ParseAddress(string text, string a)
    {
        if (a == "*" ) return IPAddress.Any;
        if (a.StartsWith('[') && a.EndsWith(']'))
        {
            // IPv6 in brackets: a forward from [::1] reaches the guest's IPv6 address (learned by NDP).
            if (!IPAddress.TryParse(a[1..^1], out var ip6) || ip6.AddressFamily != System.Net.Sockets.AddressFamily.InterNetworkV6 || ip6.ScopeId != 0)
                throw Bad(text, $"'{a}' is not an IPv6 address");
            return ip6;
        }
        if (!Wire.IPv4Address.TryParseDottedQuad(a, out var ip)) throw Bad(text, $"'{a}' is not an IPv4 address");
        return ip;
    }

    private static Wire.IPv4Address ParseGuestAddress(string text, string a)
    {
        if (!Wire.IPv4Address.TryParseDottedQuad(a, out var ip)) throw Bad(text, $"guest address '{a}' is not an IPv4 address");
        return Wire.IPv4Address.From(ip);
    }

    private static int ParsePort(string text, string p, string what, bool allowZero)
    {
        if (!int.TryParse(p, NumberStyles.None, CultureInfo.InvariantCulture, out int port)) throw Bad(text, $"{what} '{p}' is not a number");
        CheckPort(port, what, allowZero, text);
        return port;
    }

    private static void CheckPort(int port, string what, bool allowZero, string? text = null)
    {
        if (port < (allowZero ? 0 : 1) || port > 65535)
            throw text is null ? new ArgumentOutOfRangeException(what, port, $"The {what} must be between 1 and 65535.") : Bad(text, $"{what} {port} is not between {(allowZero ? 0 : 1)} and 65535");
    }

    private static FormatException Bad(string text, string why) =>
        new($"The forward spec '{text}' is not valid: {why}. Use PROTO:[ADDR:]HOSTPORT[:GUESTPORT] (e.g. tcp:10977, tcp:127.0.0.1:8080:80, udp:5353:53), PROTO:ADDR:HOSTPORT:GUESTADDR:GUESTPORT for another link's guest (tcp:127.0.0.1:8080:10.0.2.16:80), a range (tcp:8000-8010, tcp:8000-8010:9000-9010), a comma list (tcp:80,443) or QEMU's hostfwd=tcp:127.0.0.1:8080-:80.");

    /// <summary>The canonical spec text, e.g. <c>tcp:127.0.0.1:8080:80</c>.</summary>
    public override string ToString()
    {
        string proto = Protocol.ToString().ToLowerInvariant();
        string host = HostAddress.AddressFamily == System.Net.Sockets.AddressFamily.InterNetworkV6 ? $"[{HostAddress}]" : HostAddress.ToString();
        return GuestAddress is { } g ? $"{proto}:{host}:{HostPort}:{g}:{GuestPort}" : $"{proto}:{host}:{HostPort}:{GuestPort}";
    }
}

/// <summary>A forward as the engine holds it.</summary>
public sealed record ForwardInfo
{
    public required ForwardSpec Spec { get; init; }
    /// <summary>The port actually bound (the spec carries it too, once bound).</summary>
    public required int BoundPort { get; init; }
    /// <summary>The host port asked for: 0 when any free port was.</summary>
    public int RequestedHostPort { get; init; }
    public int ActiveConnections { get; init; }
    public long TotalConnections { get; init; }
    public required DateTimeOffset Created { get; init; }
}
