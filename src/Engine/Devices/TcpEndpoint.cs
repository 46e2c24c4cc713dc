using System.Net;

namespace Emunet.Engine.Devices;

/// <summary>The <c>tcp:ADDR:PORT</c> form both emulator sources take.</summary>
internal static class TcpEndpoint
{
    /// <summary>
    /// Reads <c>tcp:ADDR:PORT</c>: ADDR an IPv4 literal or a bracketed IPv6 one, PORT 1–65535. With
    /// <paramref name="loopbackShorthands"/>, also <c>tcp:PORT</c> (127.0.0.1) and <c>localhost</c> (127.0.0.1).
    /// </summary>
    public static bool TryParse(string endpoint, bool loopbackShorthands, out IPAddress address, out int port)
    {
        address = IPAddress.None;
        port = 0;
        if (!endpoint.StartsWith("tcp:", StringComparison.OrdinalIgnoreCase)) return false;
        var rest = endpoint.AsSpan(4);
        int colon = rest.LastIndexOf(':');
        if (colon < 0 && !loopbackShorthands) return false;
        var host = colon < 0 ? "127.0.0.1".AsSpan() : rest[..colon];
        if (host.Length > 1 && host[0] == '[' && host[^1] == ']') host = host[1..^1];
        if (!int.TryParse(rest[(colon + 1)..], out port) || port is < 1 or > 65535) return false;
        if (loopbackShorthands && host.Equals("localhost", StringComparison.OrdinalIgnoreCase))
        {
            address = IPAddress.Loopback;
            return true;
        }
        if (!IPAddress.TryParse(host, out var parsed)) return false;
        address = parsed;
        return true;
    }
}
