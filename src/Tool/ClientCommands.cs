using System.CommandLine;
using System.Globalization;
using System.Text.Json;
using Emunet.Engine.Control;
using Emunet.Engine.Forwarding;

namespace Emunet.Tool;

/// <summary>The commands that talk to a running instance through its control socket.</summary>
internal static partial class EmunetCli
{
    private static readonly Argument<string> ForwardSpecArgument = new("spec")
    {
        Description = "PROTO:[ADDR:]HOSTPORT[:GUESTPORT] (tcp:10977, tcp:127.0.0.1:8080:80, udp:5353:53), PROTO:ADDR:HOSTPORT:GUESTADDR:GUESTPORT for another link's guest (tcp:127.0.0.1:8080:10.0.2.16:80), a range (tcp:8000-8010, tcp:8000-8010:9000-9010), a comma list (tcp:80,443,udp:53) or QEMU's hostfwd=tcp:127.0.0.1:8080-:80. Host port 0 takes any free port.",
    };

    private static readonly Argument<string?> ForwardGuestArgument = new("guest")
    {
        Description = "adb's form: the guest side as PROTO:PORT (emunet forward add tcp:10990 tcp:10990); the first argument is then the host side.",
        Arity = ArgumentArity.ZeroOrOne,
    };

    private static readonly Option<string?> ForwardGuestAddressOption = new("--guest-address")
    {
        Description = "The guest the forwards reach: the address of one of the instance's links (10.0.2.16 for the Android Emulator's Wi-Fi link). Default: the first link's guest (10.0.2.15).",
        HelpName = "ADDR",
    };

    private static readonly Argument<string?> ForwardRemoveArgument = new("forward")
    {
        Description = "The forward to remove: its host port (8080, whatever its address), or PROTO:[ADDR:]PORT (udp:5353, tcp:127.0.0.1:8080).",
        Arity = ArgumentArity.ZeroOrOne,
    };

    private static readonly Option<bool> RemoveAllOption = new("--all", "-a")
    {
        Description = "Remove every forward of the instance.",
    };

    private static readonly Option<bool> ResetConnectionsOption = new("--reset-connections")
    {
        Description = "Also reset the connections that came in through the forward (without it they run on until they close).",
    };

    private static readonly Option<int> StopTimeoutOption = new("--timeout")
    {
        Description = "How long to wait, in seconds, for the instance to be gone (control socket removed, process exited).",
        HelpName = "SECONDS",
        DefaultValueFactory = _ => 15,
    };

    private static readonly Option<string?> ProtocolFilterOption = new("--protocol", "-p")
    {
        Description = "Only flows of this protocol.",
        HelpName = "tcp|udp|icmp",
    };

    private static readonly Option<int?> PortFilterOption = new("--port")
    {
        Description = "Only flows with this port at either end (guest, guest's peer, host local or remote).",
    };

    private static readonly Option<string?> StateFilterOption = new("--state")
    {
        Description = "Only flows in this state (e.g. Established).",
    };

    private static readonly Argument<string> CaptureFileArgument = new("file")
    {
        Description = "The pcap file to write (created or truncated), or - for standard output (a live stream for wireshark -k -i -).",
    };

    private static readonly Argument<string?> CaptureStopFileArgument = new("file")
    {
        Description = "Ignored; accepted so 'capture stop FILE' mirrors 'capture start FILE'.",
        Arity = ArgumentArity.ZeroOrOne,
    };

    static EmunetCli()
    {
        ProtocolFilterOption.AcceptOnlyFromAmong("tcp", "udp", "icmp");
    }

    /// <summary>
    /// A command that talks to one instance. <paramref name="validate"/> checks the command line first (null: valid),
    /// so a bad value is a usage error whether or not an instance runs; then the instance is resolved and connected.
    /// </summary>
    private static Command ClientCommand(string name, string description, Func<ParseResult, ControlClient, int> action,
        Func<ParseResult, string?>? validate = null) =>
        ClientCommand(name, description, (r, client, _) => Task.FromResult(action(r, client)), validate);

    private static Command ClientCommand(string name, string description, Func<ParseResult, ControlClient, CancellationToken, Task<int>> action,
        Func<ParseResult, string?>? validate = null)
    {
        var command = new Command(name, description) { InstanceOption, JsonOption };
        command.SetAction(async (parseResult, token) =>
        {
            if (validate?.Invoke(parseResult) is { } invalid) return Fail(parseResult, ExitCode.UsageError, invalid);
            try
            {
                using var client = ControlClient.ConnectInstance(parseResult.GetValue(InstanceOption));
                return await action(parseResult, client, token).ConfigureAwait(false);
            }
            catch (ControlException e) { return Fail(parseResult, e); }
            catch (ArgumentException e) { return Fail(parseResult, ExitCode.UsageError, e.Message); }
        });
        return command;
    }

    private static readonly Option<bool> WaitOption = new("--wait")
    {
        Description = "Return only once the guest accepts on each TCP port forwarded (probing: a reset means not yet), so scripts need no handshake of their own.",
    };

    private static readonly Option<int> WaitTimeoutOption = new("--timeout")
    {
        Description = "With --wait: give up after this many seconds (exit 12, GuestNotReady; the forward stays).",
        HelpName = "SECONDS",
        DefaultValueFactory = _ => 60,
    };

    private static Command BuildForwardCommand()
    {
        var forward = new Command("forward", "Add, list and remove direct host-to-guest forwards of a running instance.");

        var add = ClientCommand("add", "Listen on host ports and send their connections straight into the guest's ports (all of a list or range, or none).", (r, client) =>
        {
            CombineForwardSpec(r.GetValue(ForwardSpecArgument)!, r.GetValue(ForwardGuestArgument), out string spec);
            spec = WithGuestAddress(spec, r.GetValue(ForwardGuestAddressOption), out _);
            var added = client.AddForwards(spec);
            if (r.GetValue(WaitOption))
            {
                var timeout = TimeSpan.FromSeconds(r.GetValue(WaitTimeoutOption));
                foreach (var f in added)
                {
                    if (!string.Equals(f.Protocol, "tcp", StringComparison.OrdinalIgnoreCase)) continue;
                    if (!ForwardReadiness.WaitUntilAccepting(client, f, timeout))
                        return Fail(r, ExitCode.GuestNotReady,
                            $"the guest did not accept on port {f.GuestPort} within {timeout.TotalSeconds:0} s (the forward {f.Spec} stays; is the app listening, and is a guest attached?)");
                }
            }
            if (r.GetValue(JsonOption))
                return added.Count == 1 ? WriteJson(r, added[0], ControlJsonContext.Indented.ForwardDto) : WriteJson(r, added, ControlJsonContext.Indented.ListForwardDto);
            foreach (var f in added)
                r.InvocationConfiguration.Output.WriteLine(f.GuestAddress is null
                    ? $"Forwarding {f.Protocol} {DisplayText.EndPoint(f.Address, f.HostPort)} -> guest port {f.GuestPort}"
                    : $"Forwarding {f.Protocol} {DisplayText.EndPoint(f.Address, f.HostPort)} -> guest {f.GuestAddress} port {f.GuestPort}");
            return 0;
        }, r => CombineForwardSpec(r.GetValue(ForwardSpecArgument)!, r.GetValue(ForwardGuestArgument), out string spec)
            ? ForwardSpec.TryParseMany(spec, out _, out string? error) ? WithGuestAddressError(spec, r.GetValue(ForwardGuestAddressOption)) : error
            : $"The guest side '{r.GetValue(ForwardGuestArgument)}' is not PROTO:PORT with the host side's protocol (adb's form: forward add tcp:10990 tcp:10990).");
        add.Add(ForwardSpecArgument);
        add.Add(ForwardGuestArgument);
        add.Add(ForwardGuestAddressOption);
        add.Add(WaitOption);
        add.Add(WaitTimeoutOption);

        var list = ClientCommand("list", "List the forwards.", (r, client) =>
        {
            var forwards = client.ListForwards();
            if (r.GetValue(JsonOption)) return WriteJson(r, forwards, ControlJsonContext.Indented.ListForwardDto);
            var table = new TableWriter("PROTO", "HOST", "GUEST PORT", "ACTIVE", "TOTAL", "SINCE");
            foreach (var f in forwards)
            {
                table.Add(f.Protocol, DisplayText.EndPoint(f.Address, f.HostPort), f.GuestPort.ToString(CultureInfo.InvariantCulture),
                    f.ActiveConnections.ToString(CultureInfo.InvariantCulture), f.TotalConnections.ToString(CultureInfo.InvariantCulture),
                    f.Created.ToLocalTime().ToString("HH:mm:ss", CultureInfo.InvariantCulture));
            }
            table.WriteTo(r.InvocationConfiguration.Output);
            return 0;
        });

        var remove = ClientCommand("remove", "Stop forwards' host listeners (their open connections run on unless --reset-connections).", (r, client) =>
        {
            bool reset = r.GetValue(ResetConnectionsOption);
            var removed = new List<ForwardDto>();
            if (r.GetValue(RemoveAllOption))
            {
                foreach (var f in client.ListForwards()) removed.Add(client.RemoveForward(f.Protocol, f.Address, f.HostPort, reset));
            }
            else
            {
                TryParseForwardKey(r.GetValue(ForwardRemoveArgument)!, out string protocol, out string? address, out int port, out _);
                removed.Add(client.RemoveForward(protocol, address, port, reset));
            }
            if (r.GetValue(JsonOption))
                return r.GetValue(RemoveAllOption) ? WriteJson(r, removed, ControlJsonContext.Indented.ListForwardDto) : WriteJson(r, removed[0], ControlJsonContext.Indented.ForwardDto);
            foreach (var f in removed)
                r.InvocationConfiguration.Output.WriteLine($"Removed {f.Protocol} {DisplayText.EndPoint(f.Address, f.HostPort)} -> guest port {f.GuestPort}");
            return 0;
        }, r => (r.GetValue(ForwardRemoveArgument), r.GetValue(RemoveAllOption)) switch
        {
            (null, false) => "Name the forward to remove (its host port, or PROTO:[ADDR:]PORT), or give --all.",
            (not null, true) => "Give either a forward or --all, not both.",
            (null, true) => null,
            ({ } key, false) => TryParseForwardKey(key, out _, out _, out _, out string? error) ? null : error,
        });
        remove.Add(ForwardRemoveArgument);
        remove.Add(RemoveAllOption);
        remove.Add(ResetConnectionsOption);

        forward.Add(add);
        forward.Add(list);
        forward.Add(remove);
        return forward;
    }

    /// <summary>
    /// adb's two-argument form: host side <c>tcp:10990</c> (or <c>tcp:127.0.0.1:8000-8010</c>) and guest side
    /// <c>tcp:10990</c> make <c>tcp:10990:10990</c>. Without a guest side the spec is <paramref name="host"/> as it is.
    /// </summary>
    /// <summary>
    /// <paramref name="spec"/> with every forward aimed at <paramref name="guestAddress"/> (--guest-address); the spec
    /// unchanged when none is given. <paramref name="error"/> when the address is not IPv4 or the spec names another.
    /// </summary>
    internal static string WithGuestAddress(string spec, string? guestAddress, out string? error)
    {
        error = null;
        if (guestAddress is null) return spec;
        if (!Engine.Wire.IPv4Address.TryParseDottedQuad(guestAddress, out var parsed))
        {
            error = $"--guest-address '{guestAddress}' is not an IPv4 address (e.g. 10.0.2.16).";
            return spec;
        }
        var guest = Engine.Wire.IPv4Address.From(parsed);
        var items = new List<string>();
        foreach (var s in ForwardSpec.ParseMany(spec))
        {
            if (s.GuestAddress is { } named && named != guest)
            {
                error = $"The forward {s} names the guest {named} and --guest-address says {guest}; give one.";
                return spec;
            }
            items.Add((s with { GuestAddress = guest }).ToString());
        }
        return string.Join(',', items);
    }

    private static string? WithGuestAddressError(string spec, string? guestAddress)
    {
        WithGuestAddress(spec, guestAddress, out string? error);
        return error;
    }

    internal static bool CombineForwardSpec(string host, string? guest, out string spec)
    {
        spec = host;
        if (guest is null) return true;
        int hc = host.IndexOf(':'), gc = guest.IndexOf(':');
        if (hc < 0 || gc < 0 || !string.Equals(host[..hc], guest[..gc], StringComparison.OrdinalIgnoreCase) || guest[(gc + 1)..].Contains(':'))
            return false;
        spec = host + ":" + guest[(gc + 1)..];
        return true;
    }

    /// <summary>
    /// Reads "8080", "udp:5353", "tcp:127.0.0.1:8080" or a full spec (its host side is used). The address is null when
    /// the text names none: the server then finds the forward on that port whatever its address.
    /// </summary>
    internal static bool TryParseForwardKey(string text, out string protocol, out string? address, out int port, out string? error)
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
        if (!ForwardSpec.TryParse(text, out var spec, out error)) return false;
        protocol = spec!.Protocol == ForwardProtocol.Udp ? "udp" : "tcp";
        port = spec.HostPort;
        if (port == 0)
        {
            error = "Give the forward's bound host port (see 'emunet forward list'), not 0.";
            return false;
        }
        // The host side is what comes after "PROTO:" (and before QEMU's "-"); its first part is an address if it has dots
        // or is an IPv6 one in brackets.
        string hostSide = text.Trim();
        if (hostSide.StartsWith("hostfwd=", StringComparison.OrdinalIgnoreCase)) hostSide = hostSide["hostfwd=".Length..];
        hostSide = hostSide[(hostSide.IndexOf(':') + 1)..];
        if (hostSide.IndexOf('-') is var dash and >= 0) hostSide = hostSide[..dash];
        string first = hostSide.Split(':')[0];
        if (first.Contains('.') || first == "*" || first.StartsWith('[')) address = spec.HostAddress.ToString();
        return true;
    }

    private static Command BuildConnectionsCommand()
    {
        var command = ClientCommand("connections", "List the guest's connections (NAT flows) and forwarded ones; --watch redraws them with bytes per second.", (r, client, token) =>
        {
            if (r.GetValue(WatchOption)) return WatchConnectionsAsync(r, client, token);
            var connections = client.ListConnections(r.GetValue(ProtocolFilterOption), r.GetValue(PortFilterOption), r.GetValue(StateFilterOption));
            if (r.GetValue(JsonOption)) return Task.FromResult(WriteJson(r, connections, ControlJsonContext.Indented.ListConnectionDto));
            var table = new TableWriter("LINK", "PROTO", "DIR", "GUEST", "PEER (AS GUEST SEES IT)", "HOST LOCAL", "HOST REMOTE", "STATE", "TO GUEST", "FROM GUEST", "AGE");
            var now = DateTimeOffset.UtcNow;
            foreach (var c in connections)
            {
                table.Add(c.Link.ToString(CultureInfo.InvariantCulture), c.Protocol, c.Direction == "forwarded" ? "fwd" : "out", c.Guest, c.GuestPeer,
                    c.HostLocal, c.HostRemote, c.State,
                    DisplayText.Bytes(c.BytesToGuest), DisplayText.Bytes(c.BytesFromGuest), DisplayText.Age(now - c.Started));
            }
            table.WriteTo(r.InvocationConfiguration.Output);
            return Task.FromResult(0);
        }, r => r.GetValue(PortFilterOption) is null or (>= 0 and <= 65535) ? ValidateWatch(r) : $"--port {r.GetValue(PortFilterOption)} is not between 0 and 65535.");
        command.Add(ProtocolFilterOption);
        command.Add(PortFilterOption);
        command.Add(StateFilterOption);
        command.Add(WatchOption);
        command.Add(IntervalOption);
        return command;
    }

    private static Command BuildInstancesCommand()
    {
        var command = new Command("instances", "List the running instances (and remove control sockets left by dead ones).") { JsonOption };
        command.SetAction(r =>
        {
            var infos = new List<InstanceDto>();
            foreach (string name in RuntimeDirectory.ListInstances())
            {
                try
                {
                    using var client = ControlClient.Connect(RuntimeDirectory.SocketPathFor(name), TimeSpan.FromSeconds(5));
                    infos.Add(client.Info());
                }
                catch (ControlException e)
                {
                    r.InvocationConfiguration.Error.WriteLine($"emunet: instance '{name}' did not answer: {e.Message}");
                }
            }
            if (r.GetValue(JsonOption)) return WriteJson(r, infos, ControlJsonContext.Indented.ListInstanceDto);
            var table = new TableWriter("NAME", "PID", "DEVICE", "GUEST", "STARTED", "CONTROL SOCKET");
            foreach (var i in infos)
            {
                table.Add(i.Name, i.ProcessId.ToString(CultureInfo.InvariantCulture), i.Device,
                    i.GuestConnected ? i.GuestMac ?? "attached" : "none",
                    i.Started.ToLocalTime().ToString("yyyy-MM-dd HH:mm:ss", CultureInfo.InvariantCulture), i.ControlSocket);
            }
            table.WriteTo(r.InvocationConfiguration.Output);
            return 0;
        });
        return command;
    }

    private static Command BuildInfoCommand() => ClientCommand("info",
        "Show the instance: its links (device, guest address, guest attached) and the emulator arguments that attach to them.", (r, client) =>
        {
            var i = client.Info();
            if (r.GetValue(JsonOption)) return WriteJson(r, i, ControlJsonContext.Indented.InstanceDto);
            var o = r.InvocationConfiguration.Output;
            var links = i.Links ?? [new LinkDto { Index = 0, Device = i.Device, GuestAddress = "10.0.2.15", GuestConnected = i.GuestConnected, GuestMac = i.GuestMac }];
            o.WriteLine($"Instance   {i.Name} (pid {i.ProcessId.ToString(CultureInfo.InvariantCulture)}, version {i.Version})");
            o.WriteLine($"Control    {i.ControlSocket}");
            o.WriteLine($"Outbound   {i.OutboundPolicy ?? "open"}");
            foreach (var l in links)
            {
                o.WriteLine($"Link {l.Index.ToString(CultureInfo.InvariantCulture)}     {l.Device}, guest {l.GuestAddress}, {(l.GuestConnected ? "attached" + (l.GuestMac is null ? "" : " " + l.GuestMac) : "no guest attached")}");
            }
            var devices = links.Select(l => l.Device).ToList();
            o.WriteLine($"QEMU       {string.Join(' ', EmulatorArguments.ForLinks(devices))}");
            if (EmulatorArguments.AndroidForLinks(devices) is { } android) o.WriteLine($"Android    {android}");
            return 0;
        });

    private static Command BuildStatsCommand()
    {
        var command = ClientCommand("stats", "Show frame, byte, flow and drop counters; --watch redraws bytes per second for the instance and each forward.", (r, client, token) =>
        {
            if (r.GetValue(WatchOption)) return WatchStatsAsync(r, client, token);
            var s = client.Stats();
            if (r.GetValue(JsonOption)) return Task.FromResult(WriteJson(r, s, ControlJsonContext.Indented.StatsDto));
            var o = r.InvocationConfiguration.Output;
            var inv = CultureInfo.InvariantCulture;
            o.WriteLine(string.Create(inv, $"Frames from guest  {s.FramesFromGuest,14:N0}   bytes {s.BytesFromGuest,16:N0}"));
            o.WriteLine(string.Create(inv, $"Frames to guest    {s.FramesToGuest,14:N0}   bytes {s.BytesToGuest,16:N0}"));
            if (s.FramesToGuestDirect > 0) o.WriteLine(string.Create(inv, $"  written directly {s.FramesToGuestDirect,14:N0}   (into the guest's receive buffers)"));
            o.WriteLine(string.Create(inv, $"Flows              tcp {s.TcpFlows}, udp {s.UdpFlows}; forwards {s.Forwards}"));
            o.WriteLine(string.Create(inv, $"Capture            {s.CaptureFile ?? "off"}"));
            o.WriteLine(string.Create(inv, $"Drops              {s.TotalDrops:N0}"));
            foreach (var (reason, count) in s.DropsByReason.OrderBy(kv => kv.Key, StringComparer.Ordinal))
                o.WriteLine(string.Create(inv, $"  {reason,-24}{count,14:N0}"));
            return Task.FromResult(0);
        }, ValidateWatch);
        command.Add(WatchOption);
        command.Add(IntervalOption);
        return command;
    }

    private static Command BuildStopCommand()
    {
        var command = ClientCommand("stop", "Stop the instance cleanly (listeners closed, connections reset, sockets removed) and wait until it is gone.", (r, client) =>
        {
            string name = Path.GetFileNameWithoutExtension(client.SocketPath);
            if (!client.ShutdownAndWait(TimeSpan.FromSeconds(r.GetValue(StopTimeoutOption))))
            {
                return Fail(r, ExitCode.StopTimeout,
                    $"instance '{name}' acknowledged the stop but was still there after {r.GetValue(StopTimeoutOption)} s. Its log, if Start-EmuNet started it: {RuntimeDirectory.LogPathFor(name)}.");
            }
            if (!r.GetValue(JsonOption)) r.InvocationConfiguration.Output.WriteLine($"Stopped instance '{name}'.");
            return 0;
        }, r => r.GetValue(StopTimeoutOption) is >= 1 and <= 600 ? null : "--timeout must be between 1 and 600 seconds.");
        command.Add(StopTimeoutOption);
        return command;
    }

    private static Command BuildCaptureCommand()
    {
        var capture = new Command("capture", "Capture the guest's frames to a pcap file (Wireshark, tshark, tcpdump -r) while the instance runs.");
        var start = ClientCommand("start", "Start writing every frame to and from the guest to FILE; with '-', stream the pcap to standard output until Ctrl+C (emunet capture start - | wireshark -k -i -).", async (r, client, token) =>
        {
            if (r.GetValue(CaptureFileArgument) == "-") return await StreamCaptureAsync(r, client, token).ConfigureAwait(false);
            var c = client.StartCapture(Path.GetFullPath(r.GetValue(CaptureFileArgument)!));
            if (r.GetValue(JsonOption)) return WriteJson(r, c, ControlJsonContext.Indented.CaptureDto);
            r.InvocationConfiguration.Output.WriteLine($"Capturing to {c.File}");
            return 0;
        }, r => r.GetValue(CaptureFileArgument) == "-" && r.GetValue(JsonOption)
            ? "--json does not go with '-': standard output carries the pcap stream."
            : null);
        start.Add(CaptureFileArgument);
        var stop = ClientCommand("stop", "Stop the capture and close its file.", (r, client) =>
        {
            var c = client.StopCapture();
            if (r.GetValue(JsonOption)) return WriteJson(r, c, ControlJsonContext.Indented.CaptureDto);
            r.InvocationConfiguration.Output.WriteLine(c.File is null ? "No capture was running." : $"Capture written to {c.File}");
            return 0;
        });
        stop.Add(CaptureStopFileArgument);
        capture.Add(start);
        capture.Add(stop);
        return capture;
    }

    /// <summary>
    /// <c>capture start -</c>: the live pcap stream to standard output, until Ctrl+C, the instance stops, or the reader
    /// closes the pipe. Its own capture, beside any file capture; frames a slow reader misses are counted in stats.
    /// </summary>
    private static async Task<int> StreamCaptureAsync(ParseResult r, ControlClient client, CancellationToken token)
    {
        var output = r.InvocationConfiguration.Output;
        Stream? stream = output switch
        {
            _ when ReferenceEquals(output, Console.Out) => Console.IsOutputRedirected ? Console.OpenStandardOutput() : null,
            StreamWriter w => w.BaseStream,
            _ => null,
        };
        if (stream is null)
        {
            return Fail(r, ExitCode.UsageError,
                "capture start - writes a binary pcap stream: pipe it into a reader (emunet capture start - | wireshark -k -i -, or | tshark -r -), or give a FILE.");
        }
        output.Flush();
        try
        {
            await client.StreamCaptureAsync(stream, token).ConfigureAwait(false);
        }
        catch (IOException)
        {
            // The reader closed the pipe (Wireshark quit): the capture ends with it; that is not a failure.
        }
        return 0;
    }

    private static int WriteJson<T>(ParseResult r, T value, System.Text.Json.Serialization.Metadata.JsonTypeInfo<T> type)
    {
        r.InvocationConfiguration.Output.WriteLine(JsonSerializer.Serialize(value, type));
        return 0;
    }
}
