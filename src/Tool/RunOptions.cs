using System.CommandLine;
using System.CommandLine.Parsing;
using System.Net;
using Emunet.Engine;
using Emunet.Engine.Control;
using Emunet.Engine.Forwarding;
using Emunet.Engine.Stack;

namespace Emunet.Tool;

/// <summary>run and launch: their command line read into the engine's options (links, forwards, policy), each invalid value named with its fix.</summary>
internal static partial class EmunetCli
{
    /// <summary>Reads the engine options shared by run and launch; null and a message when one is not valid.</summary>
    private static EngineOptions? ReadEngineOptions(ParseResult r, string name, string? streamSocket, string? vhostUser, out string? error)
    {
        error = null;
        if (!RuntimeDirectory.IsValidName(name))
        {
            error = $"The instance name '{name}' is not valid: use 1 to {RuntimeDirectory.MaxNameLength} letters, digits, '-', '_' or '.'.";
            return null;
        }
        var forwards = new List<ForwardSpec>();
        foreach (string text in r.GetValue(ForwardOption) ?? [])
        {
            if (!ForwardSpec.TryParseMany(text, out var specs, out error)) return null;
            forwards.AddRange(specs);
        }
        var dns = new List<IPEndPoint>();
        foreach (string text in r.GetValue(DnsUpstreamOption) ?? [])
        {
            if (!IPEndPoint.TryParse(text, out var ep) || ep.AddressFamily != System.Net.Sockets.AddressFamily.InterNetwork)
            {
                error = $"--dns-upstream '{text}' is not ADDR[:PORT] with an IPv4 address.";
                return null;
            }
            if (ep.Port == 0) ep.Port = 53;
            dns.Add(ep);
        }
        var network = new NetworkConfig();
        int? mtu = r.GetValue(MtuOption);
        if (mtu is { } m && (m < MinMtu || m > MaxMtu))
        {
            error = $"--mtu {m} is not between {MinMtu} and {MaxMtu}.";
            return null;
        }
        var rules = ReadOutboundRules(r, out error);
        if (rules is null) return null;
        int? budget = r.GetValue(BufferBudgetOption);
        if (budget is { } b && (b < 1 || b > 65536))
        {
            error = $"--buffer-budget {b} is not between 1 and 65536 MiB.";
            return null;
        }
        var remaps = ReadRemaps(r, network, out error);
        if (remaps is null) return null;
        network = network with
        {
            Remaps = remaps,
            Mtu = mtu ?? network.Mtu,
            MapGatewayToLoopback = !r.GetValue(NoHostLoopbackOption),
            Restrict = r.GetValue(RestrictOption),
            OutboundRules = rules,
            ConnectionBufferBudget = budget is { } mib ? (long)mib << 20 : network.ConnectionBufferBudget,
            DnsUpstream = dns,
        };
        string? capture = r.GetValue(CaptureOption);
        return new EngineOptions
        {
            Name = name,
            StreamSocket = streamSocket,
            VhostUserSocket = vhostUser,
            Forwards = forwards,
            CapturePath = capture is null ? null : Path.GetFullPath(capture),
            ControlSocketPath = RuntimeDirectory.SocketPathFor(name),
            Network = network,
        };
    }

    /// <summary>
    /// The --allow and --deny rules in command-line order (first match wins), read from the tokens because each option
    /// alone keeps only its own order. Null and a message naming the form when one is not valid.
    /// </summary>
    private static List<OutboundRule>? ReadOutboundRules(ParseResult r, out string? error)
    {
        error = null;
        var rules = new List<OutboundRule>();
        bool? allow = null;
        foreach (var token in r.Tokens)
        {
            if (token.Type == TokenType.Option)
            {
                allow = token.Value == "--allow" ? true : token.Value == "--deny" ? false : null;
                continue;
            }
            if (allow is not { } a || token.Type != TokenType.Argument) continue;
            try { rules.Add(OutboundRule.Parse(token.Value, a)); }
            catch (FormatException e)
            {
                error = e.Message;
                return null;
            }
        }
        return rules;
    }

    /// <summary>
    /// The guest links of <c>run</c>, in command-line order: each --socket, --vhost-user or --connect is one link, and a
    /// --guest-address sets the address of the link just before it. Null and a message naming the fix when a value is
    /// not valid or no link is given.
    /// </summary>
    internal static List<LinkOptions>? ReadLinks(ParseResult r, out string? error)
    {
        error = null;
        var links = new List<LinkOptions>();
        string? option = null;
        bool addressSet = false;
        foreach (var token in r.Tokens)
        {
            if (token.Type == TokenType.Option)
            {
                option = token.Value switch
                {
                    "--socket" or "-s" => "--socket",
                    "--vhost-user" => "--vhost-user",
                    "--connect" => "--connect",
                    "--guest-address" => "--guest-address",
                    _ => null,
                };
                continue;
            }
            if (option is null || token.Type != TokenType.Argument) continue;
            string value = token.Value;
            string current = option;
            option = null; // one value per occurrence
            switch (current)
            {
                case "--socket":
                    links.Add(new LinkOptions(LinkKind.Stream, LinkMode.Listen,
                        value.StartsWith("tcp:", StringComparison.OrdinalIgnoreCase) ? value : Path.GetFullPath(value)));
                    addressSet = false;
                    break;
                case "--vhost-user":
                    links.Add(new LinkOptions(LinkKind.VhostUser, LinkMode.Listen, Path.GetFullPath(value)));
                    addressSet = false;
                    break;
                case "--connect":
                    if (value.StartsWith("unix:", StringComparison.OrdinalIgnoreCase)) value = "unix:" + Path.GetFullPath(value[5..]);
                    else if (!value.StartsWith("tcp:", StringComparison.OrdinalIgnoreCase))
                    {
                        error = $"--connect '{value}' is not tcp:127.0.0.1:PORT or unix:PATH.";
                        return null;
                    }
                    links.Add(new LinkOptions(LinkKind.Stream, LinkMode.Connect, value));
                    addressSet = false;
                    break;
                default:
                    if (links.Count == 0)
                    {
                        error = $"--guest-address {value} comes before any link: put it after the --socket, --connect or --vhost-user it is for.";
                        return null;
                    }
                    if (addressSet)
                    {
                        error = $"--guest-address {value}: link {links.Count} has its address already; give one per link.";
                        return null;
                    }
                    if (!Engine.Wire.IPv4Address.TryParseDottedQuad(value, out var address))
                    {
                        error = $"--guest-address '{value}' is not an IPv4 address (e.g. 10.0.2.16).";
                        return null;
                    }
                    links[^1] = links[^1] with { GuestAddress = Engine.Wire.IPv4Address.From(address) };
                    addressSet = true;
                    break;
            }
        }
        if (links.Count == 0)
        {
            error = "Give the guest device: --socket PATH|tcp:127.0.0.1:PORT (QEMU -netdev stream), --vhost-user PATH, or --connect tcp:127.0.0.1:PORT|unix:PATH (an emulator that listens); repeat them for several links (the Android Emulator's radio and Wi-Fi).";
            return null;
        }
        if (links.Count > MaxLinks)
        {
            error = $"{links.Count} guest links given; one engine serves at most {MaxLinks}.";
            return null;
        }
        return links;
    }
}
