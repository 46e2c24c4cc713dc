using System.Globalization;
using System.Net;
using Emunet.Engine.Wire;

namespace Emunet.Engine.Stack;

/// <summary>
/// One rule of the outbound policy: allow or deny guest flows to an address range, optionally a port range.
/// Text form (as <c>--allow</c>/<c>--deny</c> take it): <c>ADDR[/PREFIX][:PORT[-PORT]]</c>, e.g. <c>192.168.0.0/16</c>,
/// <c>10.0.2.2:8080</c>, <c>0.0.0.0/0:25</c>. Matched against the destination as the guest addresses it.
/// </summary>
public sealed record OutboundRule(bool Allow, IPv4Address Network, int PrefixLength, int FirstPort, int LastPort)
{
    public bool Matches(IPv4Address destination, int port) =>
        destination.InSubnet(Network, PrefixLength) && port >= FirstPort && port <= LastPort;

    /// <summary>Parses a rule; throws <see cref="FormatException"/> naming the expected form.</summary>
    public static OutboundRule Parse(string text, bool allow)
    {
        string s = text?.Trim() ?? "";
        string what = allow ? "--allow" : "--deny";
        FormatException Bad(string why) =>
            new($"{what} '{text}' is not valid ({why}): use ADDR[/PREFIX][:PORT[-PORT]], e.g. 192.168.0.0/16 or 10.0.2.2:8080.");
        int firstPort = 0, lastPort = 65535;
        int colon = s.IndexOf(':');
        if (colon >= 0)
        {
            string ports = s[(colon + 1)..];
            s = s[..colon];
            int dash = ports.IndexOf('-');
            string lo = dash < 0 ? ports : ports[..dash], hi = dash < 0 ? ports : ports[(dash + 1)..];
            if (!int.TryParse(lo, NumberStyles.None, CultureInfo.InvariantCulture, out firstPort) ||
                !int.TryParse(hi, NumberStyles.None, CultureInfo.InvariantCulture, out lastPort) ||
                firstPort > 65535 || lastPort > 65535 || firstPort > lastPort)
                throw Bad("the port range is not N or N-M within 0-65535");
        }
        int prefix = 32;
        int slash = s.IndexOf('/');
        if (slash >= 0)
        {
            if (!int.TryParse(s[(slash + 1)..], NumberStyles.None, CultureInfo.InvariantCulture, out prefix) || prefix > 32)
                throw Bad("the prefix length is not 0-32");
            s = s[..slash];
        }
        if (!IPv4Address.TryParseDottedQuad(s, out var address)) throw Bad($"'{s}' is not an IPv4 address");
        var network = IPv4Address.From(address);
        var mask = prefix == 0 ? 0u : 0xffffffffu << (32 - prefix);
        return new OutboundRule(allow, new IPv4Address(network.Value & mask), prefix, firstPort, lastPort);
    }

    public override string ToString()
    {
        string ports = FirstPort == 0 && LastPort == 65535 ? "" : FirstPort == LastPort ? $":{FirstPort}" : $":{FirstPort}-{LastPort}";
        return $"{(Allow ? "allow" : "deny")} {Network}/{PrefixLength}{ports}";
    }
}
