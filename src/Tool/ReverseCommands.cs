using System.CommandLine;
using System.Globalization;
using Emunet.Engine.Control;
using Emunet.Engine.Stack;

namespace Emunet.Tool;

/// <summary>
/// <c>emunet reverse</c>: guest-to-host remaps, the <c>adb reverse</c> / QEMU <c>guestfwd</c> equivalent — the guest's
/// 10.0.2.2:P (or another free guest-network address) reaches a host address and port chosen here.
/// </summary>
internal static partial class EmunetCli
{
    private static readonly Argument<string> ReverseSpecArgument = new("spec")
    {
        Description = "The guest side and where it goes: tcp:GUESTPORT[:[HOST:]HOSTPORT] (10.0.2.2:GUESTPORT reaches HOST:HOSTPORT, default 127.0.0.1), guestfwd=tcp:ADDR:PORT-HOST:PORT, or adb's tcp:GUESTPORT with the host side as a second argument.",
    };

    private static readonly Argument<string?> ReverseTargetArgument = new("host-side")
    {
        Description = "adb's form: the host side, tcp:PORT or tcp:HOST:PORT (reverse add tcp:8000 tcp:9000).",
        Arity = ArgumentArity.ZeroOrOne,
    };

    private static readonly Argument<string?> ReverseRemoveArgument = new("spec")
    {
        Description = "The remap's guest side: its guest port, PROTO:PORT, or PROTO:ADDR:PORT for an address other than 10.0.2.2.",
        Arity = ArgumentArity.ZeroOrOne,
    };

    private static readonly Option<bool> ReverseRemoveAllOption = new("--all")
    {
        Description = "Remove every remap.",
    };

    internal static readonly Option<string[]> ReverseOption = new("--reverse")
    {
        Description = "A guest-to-host remap at start, repeatable: tcp:8000:9000 makes the guest's 10.0.2.2:8000 reach the host's 127.0.0.1:9000 (as adb reverse; also under --restrict).",
        HelpName = "SPEC",
        Arity = ArgumentArity.OneOrMore,
        DefaultValueFactory = _ => [],
    };

    private static Command BuildReverseCommand()
    {
        var reverse = new Command("reverse", "Remap guest-to-host connections (adb reverse, QEMU guestfwd): the guest's 10.0.2.2:PORT reaches a host address and port you choose.");

        var add = ClientCommand("add", "Send the guest's connections to 10.0.2.2:GUESTPORT (or ADDR:PORT) to a host address and port.", (r, client) =>
        {
            var added = client.AddRemap(r.GetValue(ReverseSpecArgument)!, r.GetValue(ReverseTargetArgument));
            if (r.GetValue(JsonOption)) return WriteJson(r, added, ControlJsonContext.Indented.RemapDto);
            r.InvocationConfiguration.Output.WriteLine($"Remapping the guest's {added.Protocol} {added.GuestAddress}:{added.GuestPort} -> host {added.HostAddress}:{added.HostPort}");
            return 0;
        }, r =>
        {
            // Validated here as the engine would (with the default address plan), before any instance is looked for.
            var gateway = new NetworkConfig().Gateway;
            string spec = r.GetValue(ReverseSpecArgument)!;
            return r.GetValue(ReverseTargetArgument) is { } target
                ? GuestRemap.TryParsePair(spec, target, gateway, out _, out string? e1) ? null : e1
                : GuestRemap.TryParse(spec, gateway, out _, out string? e2) ? null : e2;
        });
        add.Add(ReverseSpecArgument);
        add.Add(ReverseTargetArgument);

        var list = ClientCommand("list", "List the remaps.", (r, client) =>
        {
            var remaps = client.ListRemaps();
            if (r.GetValue(JsonOption)) return WriteJson(r, remaps, ControlJsonContext.Indented.ListRemapDto);
            var table = new TableWriter("PROTO", "GUEST SIDE", "HOST SIDE");
            foreach (var m in remaps)
                table.Add(m.Protocol, $"{m.GuestAddress}:{m.GuestPort.ToString(CultureInfo.InvariantCulture)}", $"{m.HostAddress}:{m.HostPort.ToString(CultureInfo.InvariantCulture)}");
            table.WriteTo(r.InvocationConfiguration.Output);
            return 0;
        });

        var remove = ClientCommand("remove", "Remove remaps (connections already open keep going).", (r, client) =>
        {
            var removed = new List<RemapDto>();
            if (r.GetValue(ReverseRemoveAllOption))
            {
                foreach (var m in client.ListRemaps()) removed.Add(client.RemoveRemap(m.Protocol, m.GuestPort, m.GuestAddress));
            }
            else
            {
                TryParseRemapKey(r.GetValue(ReverseRemoveArgument)!, out string protocol, out string? address, out int port, out _);
                removed.Add(client.RemoveRemap(protocol, port, address));
            }
            if (r.GetValue(JsonOption))
                return r.GetValue(ReverseRemoveAllOption) ? WriteJson(r, removed, ControlJsonContext.Indented.ListRemapDto) : WriteJson(r, removed[0], ControlJsonContext.Indented.RemapDto);
            foreach (var m in removed)
                r.InvocationConfiguration.Output.WriteLine($"Removed the remap of the guest's {m.Protocol} {m.GuestAddress}:{m.GuestPort} -> host {m.HostAddress}:{m.HostPort}");
            return 0;
        }, r => (r.GetValue(ReverseRemoveArgument), r.GetValue(ReverseRemoveAllOption)) switch
        {
            (null, false) => "Name the remap to remove (its guest port, PROTO:PORT or PROTO:ADDR:PORT), or give --all.",
            (not null, true) => "Give either a remap or --all, not both.",
            (null, true) => null,
            ({ } key, false) => TryParseRemapKey(key, out _, out _, out _, out string? error) ? null : error,
        });
        remove.Add(ReverseRemoveArgument);
        remove.Add(ReverseRemoveAllOption);

        reverse.Add(add);
        reverse.Add(list);
        reverse.Add(remove);
        return reverse;
    }

    /// <summary>Reads "8000", "udp:8000", "tcp:10.0.2.100:8000" or a full spec (its guest side is used).</summary>
    internal static bool TryParseRemapKey(string text, out string protocol, out string? address, out int port, out string? error)
    {
        protocol = "tcp";
        address = null;
        error = null;
        if (int.TryParse(text, NumberStyles.None, CultureInfo.InvariantCulture, out port))
        {
            if (port is >= 1 and <= 65535) return true;
            error = $"Port {port} is not between 1 and 65535.";
            return false;
        }
        var parts = text.Trim().Split(':');
        if (parts.Length == 3 && GuestRemap.TryProtocol(parts[0], out _) && Engine.Wire.IPv4Address.TryParseDottedQuad(parts[1], out _)
            && int.TryParse(parts[2], NumberStyles.None, CultureInfo.InvariantCulture, out port) && port is >= 1 and <= 65535)
        {
            protocol = parts[0].ToLowerInvariant();
            address = parts[1];
            return true;
        }
        if (!GuestRemap.TryParse(text, new NetworkConfig().Gateway, out var remap, out error)) return false;
        protocol = remap.ProtocolName;
        port = remap.GuestPort;
        if (text.Trim().StartsWith("guestfwd=", StringComparison.OrdinalIgnoreCase)) address = remap.GuestAddress.ToString();
        return true;
    }

    /// <summary>The --reverse remaps of run and launch; null and a message when one is not valid.</summary>
    private static List<GuestRemap>? ReadRemaps(ParseResult r, NetworkConfig network, out string? error)
    {
        error = null;
        var remaps = new List<GuestRemap>();
        foreach (string text in r.GetValue(ReverseOption) ?? [])
        {
            if (!GuestRemap.TryParse(text, network.Gateway, out var remap, out error))
            {
                error = "--reverse " + error;
                return null;
            }
            remaps.Add(remap);
        }
        return remaps;
    }
}
