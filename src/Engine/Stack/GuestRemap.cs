using System.Diagnostics.CodeAnalysis;
using System.Globalization;
using System.Net;
using Emunet.Engine.Wire;

namespace Emunet.Engine.Stack;

/// <summary>The transport a <see cref="GuestRemap"/> applies to.</summary>
public enum RemapProtocol
{
    Tcp,
    Udp,
}

/// <summary>
/// A guest-to-host remap, as <c>adb reverse</c> and QEMU's <c>guestfwd</c>: the guest's flows to
/// <see cref="GuestAddress"/>:<see cref="GuestPort"/> (by default the host alias, 10.0.2.2) reach <see cref="Host"/>
/// instead of 127.0.0.1 on the same port. A remap is an explicit grant: it works under <c>--restrict</c>,
/// <c>--no-host-loopback</c> and deny rules, for that one port only.
/// <para>Spec forms (the guest side first, as in <c>adb reverse REMOTE LOCAL</c>):</para>
/// <list type="bullet">
/// <item><c>tcp:8000</c> — 10.0.2.2:8000 reaches 127.0.0.1:8000 (an explicit grant of one host port);</item>
/// <item><c>tcp:8000:9000</c> — 10.0.2.2:8000 reaches 127.0.0.1:9000;</item>
/// <item><c>tcp:8000:HOST:9000</c> — 10.0.2.2:8000 reaches HOST:9000 (an IPv4 address or <c>localhost</c>);</item>
/// <item><c>guestfwd=tcp:10.0.2.100:8000-127.0.0.1:9000</c> — QEMU's form, any free guest-network address
/// (<c>-tcp:127.0.0.1:9000</c> as QEMU's chardev is accepted too);</item>
/// <item>two specs, adb style: <c>tcp:8000 tcp:9000</c> (see <see cref="TryParsePair"/>).</item>
/// </list>
/// </summary>
public sealed record GuestRemap(RemapProtocol Protocol, IPv4Address GuestAddress, int GuestPort, IPEndPoint Host)
{
    public string ProtocolName => Protocol == RemapProtocol.Tcp ? "tcp" : "udp";

    /// <summary>The guest side as the guest dials it, e.g. <c>10.0.2.2:8000</c>.</summary>
    public string GuestEndPoint => $"{GuestAddress}:{GuestPort.ToString(CultureInfo.InvariantCulture)}";

    public override string ToString() => $"{ProtocolName}:{GuestEndPoint}-{Host}";

    /// <summary>Parses one spec; <paramref name="gateway"/> is the guest side's address when the spec names none.</summary>
    public static bool TryParse(string? spec, IPv4Address gateway, [NotNullWhen(true)] out GuestRemap? remap, [NotNullWhen(false)] out string? error)
    {
        remap = null;
        if (string.IsNullOrWhiteSpace(spec)) { error = "A remap spec is required, e.g. tcp:8000:9000 (the guest's 10.0.2.2:8000 reaches the host's 127.0.0.1:9000)."; return false; }
        string s = spec.Trim();
        if (s.StartsWith("guestfwd=", StringComparison.OrdinalIgnoreCase)) return TryParseGuestFwd(s["guestfwd=".Length..], spec, out remap, out error);
        var parts = s.Split(':');
        if (!TryProtocol(parts[0], out var protocol))
        {
            error = $"'{spec}': the remap must start with tcp: or udp: (e.g. tcp:8000:9000).";
            return false;
        }
        int guestPort, hostPort;
        IPAddress host = IPAddress.Loopback;
        switch (parts.Length)
        {
            case 2:
                if (!TryPort(parts[1], spec, "guest port", out guestPort, out error)) return false;
                hostPort = guestPort;
                break;
            case 3:
                if (!TryPort(parts[1], spec, "guest port", out guestPort, out error)) return false;
                if (!TryPort(parts[2], spec, "host port", out hostPort, out error)) return false;
                break;
            case 4:
                if (!TryPort(parts[1], spec, "guest port", out guestPort, out error)) return false;
                if (!TryHost(parts[2], spec, out host, out error)) return false;
                if (!TryPort(parts[3], spec, "host port", out hostPort, out error)) return false;
                break;
            default:
                error = $"'{spec}' is not a remap: use tcp:GUESTPORT[:[HOST:]HOSTPORT] or guestfwd=tcp:ADDR:PORT-HOST:PORT.";
                return false;
        }
        remap = new GuestRemap(protocol, gateway, guestPort, new IPEndPoint(host, hostPort));
        error = null;
        return true;
    }

    /// <summary>
    /// adb's two-argument form, <c>reverse tcp:8000 tcp:9000</c> (guest side, then host side): the host side is
    /// <c>tcp:PORT</c> or <c>tcp:HOST:PORT</c> with the same protocol.
    /// </summary>
    public static bool TryParsePair(string guestSide, string hostSide, IPv4Address gateway, [NotNullWhen(true)] out GuestRemap? remap, [NotNullWhen(false)] out string? error)
    {
        remap = null;
        var g = guestSide.Trim().Split(':');
        var h = hostSide.Trim().Split(':');
        if (g.Length != 2 || !TryProtocol(g[0], out var protocol))
        {
            error = $"'{guestSide}': the guest side is tcp:PORT or udp:PORT (as in adb reverse tcp:8000 tcp:9000).";
            return false;
        }
        if (h.Length is < 2 or > 3 || !TryProtocol(h[0], out var hostProtocol) || hostProtocol != protocol)
        {
            error = $"'{hostSide}': the host side is {g[0].ToLowerInvariant()}:PORT or {g[0].ToLowerInvariant()}:HOST:PORT, with the guest side's protocol.";
            return false;
        }
        if (!TryPort(g[1], guestSide, "guest port", out int guestPort, out error)) return false;
        IPAddress host = IPAddress.Loopback;
        if (h.Length == 3 && !TryHost(h[1], hostSide, out host, out error)) return false;
        if (!TryPort(h[^1], hostSide, "host port", out int hostPort, out error)) return false;
        remap = new GuestRemap(protocol, gateway, guestPort, new IPEndPoint(host, hostPort));
        return true;
    }

    private static bool TryParseGuestFwd(string body, string spec, [NotNullWhen(true)] out GuestRemap? remap, [NotNullWhen(false)] out string? error)
    {
        // [tcp]:ADDR:PORT-[tcp:]HOST:PORT (QEMU: guestfwd=[tcp]:server:port-dev, dev a tcp: chardev).
        remap = null;
        int dash = body.IndexOf('-');
        if (dash < 0) { error = $"'{spec}': guestfwd needs both sides, e.g. guestfwd=tcp:10.0.2.100:8000-127.0.0.1:9000."; return false; }
        var g = body[..dash].Split(':');
        string hostText = body[(dash + 1)..];
        if (hostText.StartsWith("tcp:", StringComparison.OrdinalIgnoreCase)) hostText = hostText[4..];
        if (g.Length == 3 && g[0].Length == 0) g = g[1..];          // ":ADDR:PORT" (protocol left out)
        else if (g.Length == 3 && !g[0].Equals("tcp", StringComparison.OrdinalIgnoreCase))
        {
            error = $"'{spec}': guestfwd forwards TCP only (as in QEMU); for UDP use udp:GUESTPORT:HOST:PORT.";
            return false;
        }
        else if (g.Length == 3) g = g[1..];
        if (g.Length != 2 || !IPv4Address.TryParseDottedQuad(g[0], out var guestIp))
        {
            error = $"'{spec}': the guest side is ADDR:PORT with an IPv4 address of the guest network, e.g. 10.0.2.100:8000.";
            return false;
        }
        if (!TryPort(g[1], spec, "guest port", out int guestPort, out error)) return false;
        var h = hostText.Split(':');
        if (h.Length != 2) { error = $"'{spec}': the host side is HOST:PORT, e.g. 127.0.0.1:9000."; return false; }
        if (!TryHost(h[0], spec, out var host, out error)) return false;
        if (!TryPort(h[1], spec, "host port", out int hostPort, out error)) return false;
        remap = new GuestRemap(RemapProtocol.Tcp, IPv4Address.From(guestIp), guestPort, new IPEndPoint(host, hostPort));
        return true;
    }

    /// <summary>"tcp" or "udp", any case.</summary>
    public static bool TryProtocol(string text, out RemapProtocol protocol)
    {
        protocol = RemapProtocol.Tcp;
        if (text.Equals("tcp", StringComparison.OrdinalIgnoreCase)) return true;
        protocol = RemapProtocol.Udp;
        return text.Equals("udp", StringComparison.OrdinalIgnoreCase);
    }

    private static bool TryPort(string text, string spec, string what, out int port, [NotNullWhen(false)] out string? error)
    {
        if (int.TryParse(text, NumberStyles.None, CultureInfo.InvariantCulture, out port) && port is >= 1 and <= 65535)
        {
            error = null;
            return true;
        }
        error = $"'{spec}': the {what} '{text}' is not a port between 1 and 65535.";
        return false;
    }

    private static bool TryHost(string text, string spec, out IPAddress host, [NotNullWhen(false)] out string? error)
    {
        error = null;
        host = IPAddress.Loopback;
        if (text.Equals("localhost", StringComparison.OrdinalIgnoreCase)) return true;
        if (IPv4Address.TryParseDottedQuad(text, out host)) return true;
        error = $"'{spec}': the host '{text}' is not an IPv4 address (or localhost).";
        return false;
    }
}
