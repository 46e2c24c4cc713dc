using System.Globalization;
using System.Net;
using System.Net.Sockets;
using Emunet.Engine.Stack.Nat;
using Emunet.Engine.Wire;

namespace Emunet.Engine.Stack;

/// <summary>
/// One rule of the outbound policy: allow or deny guest flows to an address range of one family, optionally a port
/// range. Text form (as <c>--allow</c>/<c>--deny</c> take it): <c>ADDR[/PREFIX][:PORT[-PORT]]</c>, an IPv6 address in
/// brackets when a port follows (RFC 3986 §3.2.2's form), e.g. <c>192.168.0.0/16</c>, <c>10.0.2.2:8080</c>,
/// <c>0.0.0.0/0:25</c>, <c>::1</c>, <c>2001:db8::/32</c>, <c>[fec0::2]:8080</c>, <c>[2001:db8::]/32:443</c>. Matched
/// against the destination as the guest addresses it; an IPv4 rule never matches an IPv6 destination, nor the reverse.
/// </summary>
public sealed record OutboundRule(bool Allow, IPAddress Network, int PrefixLength, int FirstPort, int LastPort)
{
    /// <summary>The network as the flow table keys addresses (IPv4-mapped for IPv4) and the prefix over 128 bits: one match for both families.</summary>
    private readonly FlowAddress _network = ToFlowAddress(Network);
    private readonly int _prefix128 = Network.AddressFamily == AddressFamily.InterNetworkV6 ? PrefixLength : PrefixLength + 96;

    public bool IsIPv6 => Network.AddressFamily == AddressFamily.InterNetworkV6;

    public bool Matches(IPv4Address destination, int port) => Matches(FlowAddress.FromIPv4(destination), port);

    public bool Matches(IPv6Address destination, int port) => Matches(FlowAddress.FromIPv6(destination), port);

    /// <summary>A destination of either family; allocates nothing.</summary>
    internal bool Matches(FlowAddress destination, int port) =>
        destination.IsIPv4 != IsIPv6 && port >= FirstPort && port <= LastPort && InPrefix(destination);

    private bool InPrefix(FlowAddress a)
    {
        ulong highMask = _prefix128 == 0 ? 0 : _prefix128 >= 64 ? ulong.MaxValue : ulong.MaxValue << (64 - _prefix128);
        ulong lowMask = _prefix128 <= 64 ? 0 : _prefix128 == 128 ? ulong.MaxValue : ulong.MaxValue << (128 - _prefix128);
        return (a.High & highMask) == _network.High && (a.Low & lowMask) == _network.Low;
    }

    private static FlowAddress ToFlowAddress(IPAddress address) =>
        address.AddressFamily == AddressFamily.InterNetworkV6 ? FlowAddress.FromIPv6(IPv6Address.From(address)) : FlowAddress.FromIPv4(IPv4Address.From(address));

    /// <summary>Parses a rule; throws <see cref="FormatException"/> naming the expected form.</summary>
    public static OutboundRule Parse(string text, bool allow)
    {
        string s = text?.Trim() ?? "";
        string what = allow ? "--allow" : "--deny";
        FormatException Bad(string why) =>
            new($"{what} '{text}' is not valid ({why}): use ADDR[/PREFIX][:PORT[-PORT]], e.g. 192.168.0.0/16, 10.0.2.2:8080, 2001:db8::/32 or [fec0::2]:8080.");
        string address, prefixText = "", portsText = "";
        bool ipv6;
        if (s.StartsWith('['))
        {
            // [ADDR][/PREFIX][:PORTS]
            int close = s.IndexOf(']');
            if (close < 0) throw Bad("an IPv6 address in brackets lacks its ']'");
            address = s[1..close];
            string rest = s[(close + 1)..];
            if (rest.StartsWith('/'))
            {
                int colon = rest.IndexOf(':');
                prefixText = colon < 0 ? rest[1..] : rest[1..colon];
                rest = colon < 0 ? "" : rest[colon..];
                if (prefixText.Length == 0) throw Bad("the prefix length is missing");
            }
            if (rest.Length > 0)
            {
                if (rest[0] != ':' || rest.Length == 1) throw Bad("a port follows the brackets as :PORT[-PORT]");
                portsText = rest[1..];
            }
            ipv6 = true;
        }
        else if (s.Count(c => c == ':') > 1)
        {
            // An IPv6 address without a port: ADDR[/PREFIX].
            int slash = s.IndexOf('/');
            address = slash < 0 ? s : s[..slash];
            prefixText = slash < 0 ? "" : s[(slash + 1)..];
            if (slash >= 0 && prefixText.Length == 0) throw Bad("the prefix length is missing");
            ipv6 = true;
        }
        else
        {
            int colon = s.IndexOf(':');
            if (colon >= 0)
            {
                portsText = s[(colon + 1)..];
                s = s[..colon];
            }
            int slash = s.IndexOf('/');
            address = slash < 0 ? s : s[..slash];
            prefixText = slash < 0 ? "" : s[(slash + 1)..];
            if (slash >= 0 && prefixText.Length == 0) throw Bad("the prefix length is not 0-32");
            ipv6 = false;
        }

        int firstPort = 0, lastPort = 65535;
        if (portsText.Length > 0 || (!ipv6 && text?.Contains(':') == true))
        {
            int dash = portsText.IndexOf('-');
            string lo = dash < 0 ? portsText : portsText[..dash], hi = dash < 0 ? portsText : portsText[(dash + 1)..];
            if (!int.TryParse(lo, NumberStyles.None, CultureInfo.InvariantCulture, out firstPort) ||
                !int.TryParse(hi, NumberStyles.None, CultureInfo.InvariantCulture, out lastPort) ||
                firstPort > 65535 || lastPort > 65535 || firstPort > lastPort)
                throw Bad("the port range is not N or N-M within 0-65535");
        }

        int maxPrefix = ipv6 ? 128 : 32;
        int prefix = maxPrefix;
        if (prefixText.Length > 0 &&
            (!int.TryParse(prefixText, NumberStyles.None, CultureInfo.InvariantCulture, out prefix) || prefix > maxPrefix))
            throw Bad($"the prefix length is not 0-{maxPrefix}");

        IPAddress network;
        if (ipv6)
        {
            if (address.Contains('%') || !IPAddress.TryParse(address, out var a) || a.AddressFamily != AddressFamily.InterNetworkV6)
                throw Bad($"'{address}' is not an IPv6 address");
            // Guests never reach an IPv4-mapped destination (it is refused whatever the rules say): write the IPv4 form.
            if (a.IsIPv4MappedToIPv6) throw Bad($"'{address}' is IPv4-mapped; write the IPv4 address");
            var v6 = IPv6Address.From(a);
            ulong highMask = prefix == 0 ? 0 : prefix >= 64 ? ulong.MaxValue : ulong.MaxValue << (64 - prefix);
            ulong lowMask = prefix <= 64 ? 0 : prefix == 128 ? ulong.MaxValue : ulong.MaxValue << (128 - prefix);
            network = new IPv6Address(v6.High & highMask, v6.Low & lowMask).ToIPAddress();
        }
        else
        {
            if (!IPv4Address.TryParseDottedQuad(address, out var a)) throw Bad($"'{address}' is not an IPv4 address");
            var v4 = IPv4Address.From(a);
            var mask = prefix == 0 ? 0u : 0xffffffffu << (32 - prefix);
            network = new IPv4Address(v4.Value & mask).ToIPAddress();
        }
        return new OutboundRule(allow, network, prefix, firstPort, lastPort);
    }

    public override string ToString()
    {
        bool anyPort = FirstPort == 0 && LastPort == 65535;
        string ports = anyPort ? "" : FirstPort == LastPort ? $":{FirstPort}" : $":{FirstPort}-{LastPort}";
        string network = IsIPv6 && !anyPort ? $"[{Network}]" : Network.ToString();
        return $"{(Allow ? "allow" : "deny")} {network}/{PrefixLength}{ports}";
    }
}
