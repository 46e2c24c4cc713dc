using System.CommandLine;
using System.CommandLine.Parsing;
using System.ComponentModel;
using System.Diagnostics;
using System.Net;
using System.Runtime.InteropServices;
using Emunet.Engine;
using Emunet.Engine.Control;
using Microsoft.Extensions.Logging;

namespace Emunet.Tool;

/// <summary><c>emunet run</c> (an engine in the foreground) and <c>emunet launch</c> (an engine around one emulator run).</summary>
internal static partial class EmunetCli
{
    public const string DefaultInstanceName = "default";
    public const int MinMtu = 576;   // RFC 791: every host must take 576-byte datagrams
    public const int MaxMtu = 65520;

    // The link options may be repeated: each occurrence is one guest link, in command-line order (the first link's
    // guest is 10.0.2.15, the next 10.0.2.16, ...; --guest-address after a link sets that link's).
    private static readonly Option<string[]> SocketOption = new("--socket", "-s")
    {
        Description = "The QEMU stream socket to serve: a Unix socket path, or tcp:127.0.0.1:PORT. QEMU attaches with -netdev stream,id=n0,server=off,addr.type=unix,addr.path=PATH. Repeatable, as --connect and --vhost-user: one guest link each.",
        HelpName = "PATH|tcp:127.0.0.1:PORT",
        DefaultValueFactory = _ => [],
    };

    private static readonly Option<string[]> VhostUserOption = new("--vhost-user")
    {
        Description = "Serve a vhost-user virtio-net device on this Unix socket path instead. The guest's RAM must be shared, the size equal to -m: QEMU attaches with -object memory-backend-memfd,id=mem,size=<RAM>,share=on -numa node,memdev=mem -chardev socket,id=c0,path=PATH -netdev vhost-user,id=n0,chardev=c0 -device virtio-net-pci,netdev=n0 (add vectors=0 to -device under TCG).",
        HelpName = "PATH",
        DefaultValueFactory = _ => [],
    };

    private static readonly Option<string[]> ConnectOption = new("--connect")
    {
        Description = "Dial an emulator that listens, instead of waiting for it: tcp:127.0.0.1:PORT (QEMU -netdev socket,id=n0,listen=127.0.0.1:PORT; the Android Emulator's -net-socket listen=127.0.0.1:PORT) or unix:PATH (-netdev stream,id=n0,server=on,addr.type=unix,addr.path=PATH). Retries until it answers and dials again whenever the link drops, so the emulator may start first and survives engine restarts. Repeatable.",
        HelpName = "tcp:127.0.0.1:PORT|unix:PATH",
        DefaultValueFactory = _ => [],
    };

    private static readonly Option<string[]> GuestAddressOption = new("--guest-address")
    {
        Description = "The guest address of the link given just before it (default: 10.0.2.15 for the first link, 10.0.2.16 for the second, ...), e.g. --connect tcp:127.0.0.1:40001 --connect tcp:127.0.0.1:40002 --guest-address 10.0.2.16.",
        HelpName = "ADDR",
        DefaultValueFactory = _ => [],
    };

    private static readonly Option<bool> AndroidOption = new("--android")
    {
        Description = "launch: the emulator is the Android Emulator: serve its two links (radio 10.0.2.15, Wi-Fi 10.0.2.16) by appending -net-socket listen=127.0.0.1:P1 -wifi-socket listen=127.0.0.1:P2 (before any -qemu) and dialling them, on ports outside its console/adb range 5554-5585.",
    };

    private static readonly Option<string?> NameOption = new("--name", "-n")
    {
        Description = "The instance name (its control socket is NAME.sock in the runtime folder). Default: 'default' for run, 'launch-PID' for launch.",
        HelpName = "NAME",
    };

    private static readonly Option<string[]> ForwardOption = new("--forward", "-f")
    {
        Description = "Host-to-guest forwards, repeatable: tcp:10977, tcp:127.0.0.1:8080:80, udp:5353:53, a range (tcp:8000-8010, tcp:8000-8010:9000-9010), a comma list (tcp:80,443) or hostfwd=tcp:127.0.0.1:8080-:80.",
        HelpName = "SPEC",
        Arity = ArgumentArity.OneOrMore,
        DefaultValueFactory = _ => [],
    };

    private static readonly Option<string?> CaptureOption = new("--capture")
    {
        Description = "Capture every frame to and from the guest into this pcap file from the start.",
        HelpName = "FILE",
    };

    private static readonly Option<string[]> DnsUpstreamOption = new("--dns-upstream")
    {
        Description = "Upstream DNS server for the relay at 10.0.2.3, repeatable (default: those of /etc/resolv.conf).",
        HelpName = "ADDR[:PORT]",
        Arity = ArgumentArity.OneOrMore,
        DefaultValueFactory = _ => [],
    };

    private static readonly Option<int?> MtuOption = new("--mtu")
    {
        Description = $"The MTU offered to the guest by DHCP ({MinMtu}-{MaxMtu}, default {MaxMtu}).",
        HelpName = "N",
    };

    private static readonly Option<bool> NoHostLoopbackOption = new("--no-host-loopback")
    {
        Description = "Do not map the gateway 10.0.2.2 onto the host's 127.0.0.1.",
    };

    private static readonly Option<bool> RestrictOption = new("--restrict")
    {
        Description = "Isolate the guest as QEMU's restrict=on does: it reaches nothing outside, the host's loopback included; forwards and the DNS relay still work.",
    };

    private static readonly Option<string[]> AllowOption = new("--allow")
    {
        Description = "Allow guest flows to ADDR[/PREFIX][:PORT[-PORT]], IPv4 or IPv6 (an IPv6 address in brackets before a port: [fec0::2]:8080, [2001:db8::]/32:443), repeatable; with --deny, the first matching rule wins, in command-line order (default: allow).",
        HelpName = "RULE",
        Arity = ArgumentArity.OneOrMore,
        DefaultValueFactory = _ => [],
    };

    private static readonly Option<string[]> DenyOption = new("--deny")
    {
        Description = "Deny guest flows to ADDR[/PREFIX][:PORT[-PORT]], IPv4 or IPv6, repeatable (e.g. --deny 192.168.0.0/16 --deny 2001:db8::/32); the host itself is only ever reachable as 10.0.2.2 and fec0::2.",
        HelpName = "RULE",
        Arity = ArgumentArity.OneOrMore,
        DefaultValueFactory = _ => [],
    };

    private static readonly Option<int?> BufferBudgetOption = new("--buffer-budget")
    {
        Description = "MiB all connection buffers together may hold (default 48); past it, connections slow down instead of the engine growing.",
        HelpName = "MIB",
    };

    private static readonly Option<LogLevel> LogLevelOption = new("--log-level")
    {
        Description = "Least severe log messages written to stderr.",
        HelpName = "Trace|Debug|Information|Warning|Error|Critical|None",
        DefaultValueFactory = _ => LogLevel.Information,
    };

    private static readonly Argument<string[]> EmulatorArgument = new("emulator")
    {
        Description = "The emulator command line, after '--' (e.g. -- qemu-system-x86_64 -m 1G disk.img).",
        Arity = ArgumentArity.OneOrMore,
    };

    private static Command BuildRunCommand()
    {
        var command = new Command("run", "Run an engine in the foreground until SIGINT/SIGTERM or a control 'shutdown'.")
        {
            SocketOption, VhostUserOption, ConnectOption, GuestAddressOption, NameOption, ForwardOption, CaptureOption, DnsUpstreamOption, MtuOption,
            NoHostLoopbackOption, RestrictOption, AllowOption, DenyOption, ReverseOption, BufferBudgetOption, LogLevelOption,
        };
        command.SetAction(RunAsync);
        return command;
    }

    private static Command BuildLaunchCommand()
    {
        var command = new Command("launch",
            "Start an engine on a fresh socket, run the emulator attached to it (-netdev stream,id=emunet0,... -device virtio-net-pci,netdev=emunet0 are appended; with --android, -net-socket and -wifi-socket), stop the engine when it exits, and exit with its exit code.")
        {
            AndroidOption, NameOption, ForwardOption, CaptureOption, DnsUpstreamOption, MtuOption, NoHostLoopbackOption, RestrictOption,
            AllowOption, DenyOption, ReverseOption, BufferBudgetOption, LogLevelOption, EmulatorArgument,
        };
        command.SetAction(LaunchAsync);
        return command;
    }

    /// <summary>An engine with its control server, as run and launch hold it.</summary>
    private sealed class RunningInstance : IAsyncDisposable
    {
        public required EmunetEngine Engine { get; init; }
        public required ControlServer Server { get; init; }

        /// <summary>
        /// The engine first (listeners, connections and the device socket closed), then the control socket, so a client
        /// that sees the control socket gone knows the instance is fully stopped. A request that arrives in between
        /// waits for nothing: the server cancels it when it is disposed.
        /// </summary>
        public ValueTask DisposeAsync()
        {
            lock (this) _disposal ??= DisposeOnceAsync();
            return new ValueTask(_disposal);
        }

        private Task? _disposal;

        private async Task DisposeOnceAsync()
        {
            Engine.RequestShutdown();
            Engine.Dispose();
            await Server.DisposeAsync().ConfigureAwait(false);
        }
    }

    /// <summary>Starts the engine and its control server; on failure writes the reason and returns null.</summary>
    private static RunningInstance? StartInstance(ParseResult r, EngineOptions options, ILoggerFactory loggerFactory, out ExitCode failure)
    {
        failure = ExitCode.StartFailed;
        var error = r.InvocationConfiguration.Error;
        string controlPath = options.ControlSocketPath!;
        try { RuntimeDirectory.Ensure(); }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            error.WriteLine($"emunet: cannot create the runtime folder '{RuntimeDirectory.GetPath()}': {e.Message}. Set {RuntimeDirectory.OverrideVariable} to a writable folder.");
            return null;
        }
        if (RuntimeDirectory.IsLive(controlPath))
        {
            error.WriteLine($"emunet: an instance named '{options.Name}' is already running ({controlPath}). Stop it, or choose another name with --name.");
            return null;
        }

        EmunetEngine engine;
        try
        {
            engine = new EmunetEngine(options, loggerFactory);
        }
        catch (EngineStartException e)
        {
            error.WriteLine($"emunet: {e.Message}");
            return null;
        }
        try
        {
            engine.Start();
        }
        catch (EngineStartException e)
        {
            engine.Dispose();
            error.WriteLine($"emunet: {e.Message}");
            if (e.InnerException is not null && ControlServer.Classify(e.InnerException).Code == ControlErrorCodes.PortInUse)
                failure = ExitCode.PortInUse;
            return null;
        }
        var server = new ControlServer(engine, controlPath, loggerFactory.CreateLogger("Emunet.Control"));
        try
        {
            server.Start();
        }
        catch (IOException e)
        {
            engine.Dispose();
            error.WriteLine($"emunet: {e.Message}");
            return null;
        }
        return new RunningInstance { Engine = engine, Server = server };
    }

    private static async Task<int> RunAsync(ParseResult r, CancellationToken cancellationToken)
    {
        List<LinkOptions>? links;
        string name = r.GetValue(NameOption) ?? DefaultInstanceName;
        EngineOptions? options;
        try
        {
            links = ReadLinks(r, out string? linkError);
            if (links is null) return Fail(r, ExitCode.UsageError, linkError!);
            options = ReadEngineOptions(r, name, null, null, out string? error);
            if (options is null) return Fail(r, ExitCode.UsageError, error!);
            options = options with { Links = links };
        }
        catch (ArgumentException e) { return Fail(r, ExitCode.UsageError, e.Message); }

        using var loggerFactory = ToolLog.CreateFactory(r.GetValue(LogLevelOption));
        var logger = loggerFactory.CreateLogger("Emunet");
        using var stop = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);
        using var sigint = PosixSignalRegistration.Create(PosixSignal.SIGINT, c => { c.Cancel = true; stop.Cancel(); });
        using var sigterm = PosixSignalRegistration.Create(PosixSignal.SIGTERM, c => { c.Cancel = true; stop.Cancel(); });

        var instance = StartInstance(r, options, loggerFactory, out var failure);
        if (instance is null) return (int)failure;
        await using (instance.ConfigureAwait(false))
        {
            var info = instance.Engine.Info;
            logger.InstanceReady(name, string.Join(", ", info.Links.Select(l => l.Device)), options.ControlSocketPath!,
                string.Join(' ', EmulatorArguments.ForLinks(info.Links.Select(l => l.Device).ToList())));
            if (EmulatorArguments.AndroidForLinks(info.Links.Select(l => l.Device).ToList()) is { } android) logger.AndroidHint(android);
            await WaitAsync(instance.Engine.Completion, stop.Token).ConfigureAwait(false);
            logger.InstanceStopping(name);
        }
        if (instance.Engine.Completion.IsFaulted)
            return Fail(r, ExitCode.Failure, $"the engine failed: {instance.Engine.Completion.Exception?.InnerException?.Message}");
        return (int)ExitCode.Success;
    }

    /// <summary>Waits until <paramref name="task"/> ends or <paramref name="token"/> is cancelled, without throwing.</summary>
    private static async Task WaitAsync(Task task, CancellationToken token)
    {
        var cancelled = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        await using (token.Register(() => cancelled.TrySetResult()).ConfigureAwait(false))
            await Task.WhenAny(task, cancelled.Task).ConfigureAwait(false);
    }

    /// <summary>The most guest links one engine serves (the engine's own limit).</summary>
    internal const int MaxLinks = 8;

    /// <summary>The Android Emulator's console and adb ports (a pair per emulator): launch --android keeps clear of them.</summary>
    internal const int AndroidFirstPort = 5554, AndroidLastPort = 5585;

    /// <summary>A free loopback TCP port outside <see cref="AndroidFirstPort"/>..<see cref="AndroidLastPort"/> and not in <paramref name="taken"/>.</summary>
    internal static int FreeAndroidLinkPort(ICollection<int> taken)
    {
        for (int attempt = 0; attempt < 64; attempt++)
        {
            using var probe = new System.Net.Sockets.Socket(System.Net.Sockets.AddressFamily.InterNetwork, System.Net.Sockets.SocketType.Stream, System.Net.Sockets.ProtocolType.Tcp);
            probe.Bind(new IPEndPoint(IPAddress.Loopback, 0));
            int port = ((IPEndPoint)probe.LocalEndPoint!).Port;
            if (port is >= AndroidFirstPort and <= AndroidLastPort || taken.Contains(port)) continue;
            return port;
        }
        throw new IOException("no free loopback port outside 5554-5585 was found for the emulator's links.");
    }

    /// <summary>
    /// The Android Emulator's command line with its two links added: <c>-net-socket listen=127.0.0.1:RADIO
    /// -wifi-socket listen=127.0.0.1:WIFI</c>, before <c>-qemu</c> when there is one (what follows it goes to QEMU).
    /// </summary>
    internal static List<string> AndroidCommandLine(IReadOnlyList<string> emulator, int radioPort, int wifiPort)
    {
        var result = new List<string>(emulator.Count + 4);
        int qemu = -1;
        for (int i = 1; i < emulator.Count; i++) if (emulator[i] == "-qemu") { qemu = i; break; }
        int insertAt = qemu < 0 ? emulator.Count : qemu;
        for (int i = 0; i < insertAt; i++) result.Add(emulator[i]);
        result.Add("-net-socket");
        result.Add(string.Create(System.Globalization.CultureInfo.InvariantCulture, $"listen=127.0.0.1:{radioPort}"));
        result.Add("-wifi-socket");
        result.Add(string.Create(System.Globalization.CultureInfo.InvariantCulture, $"listen=127.0.0.1:{wifiPort}"));
        for (int i = insertAt; i < emulator.Count; i++) result.Add(emulator[i]);
        return result;
    }

    /// <summary>The arguments appended to the emulator's command line to attach it to <paramref name="socketPath"/>.</summary>
    internal static string[] EmulatorNetworkArguments(string socketPath) => EmulatorArguments.For("stream:unix:" + socketPath, "emunet0");

    private static async Task<int> LaunchAsync(ParseResult r, CancellationToken cancellationToken)
    {
        string[] emulator = r.GetValue(EmulatorArgument) ?? [];
        if (emulator.Length == 0) return Fail(r, ExitCode.UsageError, "Give the emulator command after '--', e.g. emunet launch -- qemu-system-x86_64 -m 1G disk.img.");
        string name = r.GetValue(NameOption) ?? $"launch-{Environment.ProcessId}";
        bool android = r.GetValue(AndroidOption);
        string socketPath;
        EngineOptions? options;
        List<string> commandLine;
        try
        {
            socketPath = RuntimeDirectory.DeviceSocketPathFor(name);
            options = ReadEngineOptions(r, name, android ? null : socketPath, null, out string? error);
            if (options is null) return Fail(r, ExitCode.UsageError, error!);
            if (android)
            {
                // Dial-out: the emulator listens on both links and the engine connects, so the emulator may outlive an
                // engine restart (its -net-socket connect= never reconnects).
                int radio = FreeAndroidLinkPort([]);
                int wifi = FreeAndroidLinkPort([radio]);
                options = options with
                {
                    Links =
                    [
                        new LinkOptions(LinkKind.Stream, LinkMode.Connect, $"tcp:127.0.0.1:{radio}"),
                        new LinkOptions(LinkKind.Stream, LinkMode.Connect, $"tcp:127.0.0.1:{wifi}"),
                    ],
                };
                commandLine = AndroidCommandLine(emulator, radio, wifi);
                socketPath = $"radio tcp:127.0.0.1:{radio}, Wi-Fi tcp:127.0.0.1:{wifi}";
            }
            else
            {
                commandLine = [.. emulator, .. EmulatorNetworkArguments(socketPath)];
            }
        }
        catch (ArgumentException e) { return Fail(r, ExitCode.UsageError, e.Message); }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            return Fail(r, ExitCode.StartFailed, $"cannot create the runtime folder '{RuntimeDirectory.GetPath()}': {e.Message}. Set {RuntimeDirectory.OverrideVariable} to a writable folder.");
        }

        using var loggerFactory = ToolLog.CreateFactory(r.GetValue(LogLevelOption));
        var logger = loggerFactory.CreateLogger("Emunet");
        using var stop = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);
        // SIGINT reaches the emulator too (same process group): let it decide; SIGTERM ends the emulator.
        using var sigint = PosixSignalRegistration.Create(PosixSignal.SIGINT, c => c.Cancel = true);
        using var sigterm = PosixSignalRegistration.Create(PosixSignal.SIGTERM, c => { c.Cancel = true; stop.Cancel(); });

        if (!android && File.Exists(socketPath) && !RuntimeDirectory.IsLive(socketPath)) File.Delete(socketPath);
        var instance = StartInstance(r, options, loggerFactory, out var failure);
        if (instance is null) return (int)failure;
        await using (instance.ConfigureAwait(false))
        {
            var start = new ProcessStartInfo(commandLine[0]) { UseShellExecute = false };
            for (int i = 1; i < commandLine.Count; i++) start.ArgumentList.Add(commandLine[i]);
            Process? process;
            try { process = Process.Start(start); }
            catch (Win32Exception e)
            {
                return Fail(r, ExitCode.StartFailed, $"cannot start the emulator '{emulator[0]}': {e.Message}. Check the path, or put it on PATH.");
            }
            if (process is null) return Fail(r, ExitCode.StartFailed, $"cannot start the emulator '{emulator[0]}'.");
            using (process)
            {
                logger.EmulatorStarted(name, process.Id, socketPath);
                // A control 'shutdown' stops the engine while the emulator runs on (without network): the instance
                // goes away at once, and launch still returns the emulator's exit code.
                _ = instance.Engine.Completion.ContinueWith(_ => instance.DisposeAsync().AsTask(), TaskScheduler.Default).Unwrap();
                try
                {
                    await process.WaitForExitAsync(stop.Token).ConfigureAwait(false);
                }
                catch (OperationCanceledException)
                {
                    logger.EmulatorStopping(process.Id);
                    try { process.Kill(entireProcessTree: true); } catch (InvalidOperationException) { }
                    await process.WaitForExitAsync(CancellationToken.None).ConfigureAwait(false);
                }
                logger.EmulatorExited(process.ExitCode, name);
                return process.ExitCode;
            }
        }
    }
}
