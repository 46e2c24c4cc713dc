using System.Globalization;
using System.Net;

namespace Emunet.Engine.Forwarding;

public enum ForwardProtocol { Tcp, Udp }

/// <summary>
/// One forward: a host listener whose connections (or datagrams) go straight into the guest's port.
/// Spec forms: <c>tcp:10977</c>, <c>tcp:127.0.0.1:8080:80</c>, <c>udp:5353:53</c>, and QEMU's
/// <c>hostfwd=tcp:127.0.0.1:8080-:80</c> (or without the <c>hostfwd=</c> prefix).
/// The host address defaults to 127.0.0.1: nothing listens on other interfaces unless asked.
/// </summary>
public sealed record ForwardSpec(ForwardProtocol Protocol, IPAddress HostAddress, int HostPort, int GuestPort)
{
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
            return new ForwardSpec(protocol, addr, hp, gp);
        }
        var parts = rest.Split(':');
        return parts.Length switch
        {
            1 => Checked(text, protocol, IPAddress.Loopback, ParsePort(text, parts[0], "host port", false), null),
            2 when parts[0].Contains('.') => Checked(text, protocol, ParseAddress(text, parts[0]), ParsePort(text, parts[1], "host port", false), null),
            // Host port 0 asks for any free port; it needs an explicit guest port.
            2 => Checked(text, protocol, IPAddress.Loopback, ParsePort(text, parts[0], "host port", true), ParsePort(text, parts[1], "guest port", false)),
            3 => Checked(text, protocol, ParseAddress(text, parts[0]), ParsePort(text, parts[1], "host port", true), ParsePort(text, parts[2], "guest port", false)),
            _ => throw Bad(text, "it has too many parts"),
        };
    }

    private static ForwardSpec Checked(string text, ForwardProtocol p, IPAddress a, int hp, int? gp) => new(p, a, hp, gp ?? hp);

    private static IPAddress ParseAddress(string text, string a)
    {
        if (a == "*" ) return IPAddress.Any;
        // Dotted-quad only: IPAddress.TryParse also takes "1.2.3" (as 1.2.0.3) and "127.1", which hide typos.
        if (a.Count(c => c == '.') != 3 || !IPAddress.TryParse(a, out var ip) || ip.AddressFamily != System.Net.Sockets.AddressFamily.InterNetwork)
            throw Bad(text, $"'{a}' is not an IPv4 address");
        return ip;
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
        new($"The forward spec '{text}' is not valid: {why}. Use PROTO:[ADDR:]HOSTPORT[:GUESTPORT] (e.g. tcp:10977, tcp:127.0.0.1:8080:80, udp:5353:53) or QEMU's hostfwd=tcp:127.0.0.1:8080-:80.");

    /// <summary>The canonical spec text, e.g. <c>tcp:127.0.0.1:8080:80</c>.</summary>
    public override string ToString() => $"{Protocol.ToString().ToLowerInvariant()}:{HostAddress}:{HostPort}:{GuestPort}";
}

/// <summary>A forward as the engine holds it.</summary>
public sealed record ForwardInfo
{
    public required ForwardSpec Spec { get; init; }
    /// <summary>The port actually bound (differs from the spec when it asked for port 0).</summary>
    public required int BoundPort { get; init; }
    public int ActiveConnections { get; init; }
    public long TotalConnections { get; init; }
    public required DateTimeOffset Created { get; init; }
}
