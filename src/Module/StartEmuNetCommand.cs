using System.Diagnostics;
using System.Management.Automation;
using System.Runtime.InteropServices;
using Emunet.Engine.Control;

namespace Emunet.Module;

/// <summary>
/// Starts <c>emunet run</c> as its own background process (a new session, so it outlives this PowerShell), waits
/// until its control socket answers, and returns the instance. Its log goes to NAME.log in the runtime folder.
/// Several links (one guest each: 10.0.2.15, 10.0.2.16, ...): give several -Socket, -Connect or -VhostUser values.
/// With -Android it runs the Android Emulator instead (<c>emunet launch --android</c>): the engine serves its radio and
/// Wi-Fi links while it runs, and the emulator's exit code is returned.
/// </summary>
[Cmdlet(VerbsLifecycle.Start, "EmuNet", DefaultParameterSetName = SocketSet, SupportsShouldProcess = true)]
[OutputType(typeof(EmuInstance), ParameterSetName = [SocketSet, VhostUserSet, ConnectSet])]
[OutputType(typeof(int), ParameterSetName = [AndroidSet])]
public sealed class StartEmuNetCommand : EmunetCmdlet
{
    private const string SocketSet = "Socket";
    private const string VhostUserSet = "VhostUser";
    private const string ConnectSet = "Connect";
    private const string AndroidSet = "Android";

    [Parameter(Position = 0, HelpMessage = "The instance name; its control socket is NAME.sock in the runtime folder.")]
    [ValidateNotNullOrEmpty]
    public string Name { get; set; } = "default";

    [Parameter(ParameterSetName = SocketSet,
        HelpMessage = "The QEMU stream sockets to serve, one guest link each: a Unix socket path or tcp:127.0.0.1:PORT. Left out: net/NAME.sock in the runtime folder.")]
    [ValidateNotNullOrEmpty]
    public string[]? Socket { get; set; }

    [Parameter(Mandatory = true, ParameterSetName = VhostUserSet,
        HelpMessage = "Serve vhost-user virtio-net devices on these Unix socket paths instead of stream sockets, one guest link each (the guest's RAM must be a shared memory backend).")]
    [ValidateNotNullOrEmpty]
    public string[]? VhostUser { get; set; }

    [Parameter(Mandatory = true, ParameterSetName = ConnectSet,
        HelpMessage = "Dial emulators that listen, one guest link each (tcp:127.0.0.1:PORT, as the Android Emulator's -net-socket listen=127.0.0.1:PORT and -wifi-socket listen=..., or unix:PATH), retrying until each answers and again whenever its link drops.")]
    [ValidateNotNullOrEmpty]
    public new string[]? Connect { get; set; }

    [Parameter(ParameterSetName = SocketSet, HelpMessage = "The guest address of each link, in order; left out, 10.0.2.15 for the first link, 10.0.2.16 for the second, ...")]
    [Parameter(ParameterSetName = VhostUserSet)]
    [Parameter(ParameterSetName = ConnectSet)]
    [ValidateNotNullOrEmpty]
    public string[]? GuestAddress { get; set; }

    [Parameter(Mandatory = true, ParameterSetName = AndroidSet,
        HelpMessage = "Run the Android Emulator with the engine serving both of its links (radio 10.0.2.15, Wi-Fi 10.0.2.16): -net-socket and -wifi-socket are added, the engine dials them; returns the emulator's exit code when it exits, and the engine stops.")]
    public SwitchParameter Android { get; set; }

    [Parameter(Mandatory = true, ParameterSetName = AndroidSet, HelpMessage = "The Android Emulator's 'emulator' binary (path, or a name on PATH).")]
    [ValidateNotNullOrEmpty]
    public string? Emulator { get; set; }

    [Parameter(ParameterSetName = AndroidSet, HelpMessage = "The emulator's arguments, e.g. -avd Pixel_API_34 -no-snapshot.")]
    public string[] ArgumentList { get; set; } = [];

    [Parameter(HelpMessage = "Forwards to open at start: tcp:10977, tcp:127.0.0.1:8080:80, udp:5353:53 or hostfwd=tcp:127.0.0.1:8080-:80.")]
    public string[] Forward { get; set; } = [];

    [Parameter(HelpMessage = "Capture every frame to and from the guest into this pcap file from the start.")]
    public string? Capture { get; set; }

    [Parameter(HelpMessage = "Upstream DNS servers (ADDR[:PORT]) for the relay at 10.0.2.3; left out, those of /etc/resolv.conf.")]
    public string[] DnsUpstream { get; set; } = [];

    [Parameter(HelpMessage = "The MTU offered to the guest by DHCP (576-65520); left out, 65520.")]
    [ValidateRange(576, 65520)]
    public int? Mtu { get; set; }

    [Parameter(HelpMessage = "Do not map the gateway 10.0.2.2 onto the host's 127.0.0.1.")]
    public SwitchParameter NoHostLoopback { get; set; }

    [Parameter(HelpMessage = "Isolate the guest as QEMU's restrict=on does: it reaches nothing outside, the host's loopback included; forwards and the DNS relay still work.")]
    public SwitchParameter Restrict { get; set; }

    [Parameter(HelpMessage = "Guest destinations to allow, ADDR[/PREFIX][:PORT[-PORT]], IPv4 or IPv6 ([fec0::2]:8080 with a port); checked before -Deny, first match wins (default: allow).")]
    public string[] Allow { get; set; } = [];

    [Parameter(HelpMessage = "Guest destinations to deny, ADDR[/PREFIX][:PORT[-PORT]], e.g. 192.168.0.0/16 or 2001:db8::/32; checked after -Allow.")]
    public string[] Deny { get; set; } = [];

    [Parameter(HelpMessage = "Guest-to-host remaps at start, as New-EmuReverse -Spec takes them: tcp:8000:9000 makes the guest's 10.0.2.2:8000 reach the host's 127.0.0.1:9000 (as adb reverse; also under -Restrict).")]
    public string[] Reverse { get; set; } = [];

    [Parameter(HelpMessage = "MiB all connection buffers together may hold (1-65536); left out, 48.")]
    [ValidateRange(1, 65536)]
    public int? BufferBudgetMiB { get; set; }

    [Parameter(HelpMessage = "Least severe messages written to the instance's log NAME.log in the runtime folder.")]
    [ValidateSet("Trace", "Debug", "Information", "Warning", "Error", "Critical", "None")]
    public string LogLevel { get; set; } = "Information";

    [Parameter(HelpMessage = "How long to wait for the engine's control socket to answer.")]
    [ValidateRange(1, 600)]
    public int TimeoutSeconds { get; set; } = 30;

    protected override void EndProcessing()
    {
        if (!RuntimeDirectory.IsValidName(Name))
        {
            ThrowTerminatingError(Error(ErrorIds.InvalidArgument, ErrorCategory.InvalidArgument,
                $"The instance name '{Name}' is not valid: use letters, digits, '-', '_' or '.'.", Name));
        }
        string controlSocket = RuntimeDirectory.SocketPathFor(Name);
        if (RuntimeDirectory.IsLive(controlSocket))
        {
            ThrowTerminatingError(Error(ErrorIds.InstanceExists, ErrorCategory.ResourceExists,
                $"An Emunet instance named '{Name}' is already running. Stop it with Stop-EmuNet {Name}, or choose another -Name.", Name));
        }
        string folder = Path.GetDirectoryName(typeof(StartEmuNetCommand).Assembly.Location)!;
        string tool = Path.Combine(folder, "Emunet.Tool.dll");
        if (!File.Exists(tool))
        {
            ThrowTerminatingError(Error(ErrorIds.ToolNotFound, ErrorCategory.ObjectNotFound,
                $"The Emunet engine '{tool}' is missing from the module folder; reinstall the module (scripts/build-module.sh lays it out).", tool));
        }

        bool android = ParameterSetName == AndroidSet;
        var args = new List<string> { tool, android ? "launch" : "run", "--name", Name };
        if (android) args.Add("--android");
        var links = new List<(string Option, string Value)>();
        if (VhostUser is not null)
            foreach (string v in VhostUser) links.Add(("--vhost-user", GetUnresolvedProviderPathFromPSPath(v)));
        else if (Connect is not null)
        {
            foreach (string c in Connect)
                links.Add(("--connect", c.StartsWith("unix:", StringComparison.OrdinalIgnoreCase) ? "unix:" + GetUnresolvedProviderPathFromPSPath(c[5..]) : c));
        }
        else if (!android)
        {
            foreach (string s in Socket ?? [RuntimeDirectory.DeviceSocketPathFor(Name)])
                links.Add(("--socket", s.StartsWith("tcp:", StringComparison.OrdinalIgnoreCase) ? s : GetUnresolvedProviderPathFromPSPath(s)));
        }
        if (GuestAddress is { } addresses && addresses.Length > links.Count)
        {
            ThrowTerminatingError(Error(ErrorIds.InvalidArgument, ErrorCategory.InvalidArgument,
                $"-GuestAddress gives {addresses.Length} addresses for {links.Count} link(s); give at most one per link, in order.", GuestAddress));
        }
        for (int i = 0; i < links.Count; i++)
        {
            args.Add(links[i].Option);
            args.Add(links[i].Value);
            if (GuestAddress is { } a && i < a.Length) { args.Add("--guest-address"); args.Add(a[i]); }
        }
        foreach (string f in Forward) { args.Add("--forward"); args.Add(f); }
        if (Capture is not null) { args.Add("--capture"); args.Add(GetUnresolvedProviderPathFromPSPath(Capture)); }
        foreach (string d in DnsUpstream) { args.Add("--dns-upstream"); args.Add(d); }
        if (Mtu is { } mtu) { args.Add("--mtu"); args.Add(mtu.ToString(System.Globalization.CultureInfo.InvariantCulture)); }
        if (NoHostLoopback) args.Add("--no-host-loopback");
        if (Restrict) args.Add("--restrict");
        foreach (string a in Allow) { args.Add("--allow"); args.Add(a); }
        foreach (string d in Deny) { args.Add("--deny"); args.Add(d); }
        foreach (string m in Reverse) { args.Add("--reverse"); args.Add(m); }
        if (BufferBudgetMiB is { } mib) { args.Add("--buffer-budget"); args.Add(mib.ToString(System.Globalization.CultureInfo.InvariantCulture)); }
        args.Add("--log-level"); args.Add(LogLevel);

        if (android)
        {
            args.Add("--");
            args.Add(Emulator!);
            args.AddRange(ArgumentList);
            if (!ShouldProcess(Name, $"Run the Android Emulator '{Emulator}' on Emunet")) return;
            RuntimeDirectory.Ensure();
            WriteObject(RunInForeground(DotnetHost(), args));
            return;
        }
        if (!ShouldProcess(Name, "Start Emunet instance")) return;

        RuntimeDirectory.Ensure();
        string log = RuntimeDirectory.LogPathFor(Name);
        int pid = SpawnDetached(DotnetHost(), args, log);
        WriteVerbose($"Started 'emunet run' as process {pid}; log {log}.");

        var deadline = Stopwatch.StartNew();
        while (deadline.Elapsed < TimeSpan.FromSeconds(TimeoutSeconds))
        {
            if (RuntimeDirectory.IsLive(controlSocket))
            {
                try
                {
                    using var client = ControlClient.Connect(controlSocket);
                    WriteObject(EmuInstance.From(client.Info()));
                    return;
                }
                catch (ControlException e) { WriteVerbose($"Not answering yet: {e.Message}"); }
            }
            if (!ControlClient.IsProcessAlive(pid))
            {
                ThrowTerminatingError(Error(ErrorIds.StartFailed, ErrorCategory.OpenError,
                    $"Emunet instance '{Name}' did not start: {LastLines(log)}", Name));
            }
            Thread.Sleep(50);
        }
        ThrowTerminatingError(Error(ErrorIds.StartFailed, ErrorCategory.OperationTimeout,
            $"Emunet instance '{Name}' did not answer within {TimeoutSeconds} s (process {pid}; log {log}).", Name));
    }

    /// <summary>The dotnet host that runs this PowerShell, else the one on PATH.</summary>
    private static string DotnetHost()
    {
        string? fromEnv = Environment.GetEnvironmentVariable("DOTNET_HOST_PATH");
        if (!string.IsNullOrEmpty(fromEnv) && File.Exists(fromEnv)) return fromEnv;
        // .../dotnet/shared/Microsoft.NETCore.App/<version>/ -> .../dotnet/dotnet
        string runtime = RuntimeEnvironment.GetRuntimeDirectory();
        string candidate = Path.GetFullPath(Path.Combine(runtime, "..", "..", "..", "dotnet"));
        if (File.Exists(candidate)) return candidate;
        return "dotnet";
    }

    /// <summary>
    /// Runs <c>emunet launch</c> attached to this console (the emulator's window and output stay the user's) and
    /// returns its exit code, the emulator's. Ctrl+C reaches both, as when typed at <c>emunet launch</c> itself.
    /// </summary>
    private int RunInForeground(string file, List<string> args)
    {
        var start = new ProcessStartInfo(file) { UseShellExecute = false };
        foreach (string a in args) start.ArgumentList.Add(a);
        using var process = Process.Start(start) ?? throw new InvalidOperationException($"Cannot start '{file}'.");
        WriteVerbose($"Started 'emunet launch --android' as process {process.Id}.");
        process.WaitForExit();
        return process.ExitCode;
    }

    /// <summary>Starts <paramref name="file"/> in a new session with stdio on <paramref name="log"/>; returns its pid.</summary>
    private static int SpawnDetached(string file, List<string> args, string log)
    {
        // sh starts the engine in the background and exits at once: the engine is re-parented and no terminal
        // or pipe of this session stays attached to it.
        var start = new ProcessStartInfo("/bin/sh")
        {
            UseShellExecute = false,
            RedirectStandardOutput = true,
            RedirectStandardInput = true,
        };
        start.ArgumentList.Add("-c");
        start.ArgumentList.Add(File.Exists("/usr/bin/setsid") || File.Exists("/bin/setsid")
            ? "setsid \"$@\" </dev/null >>\"$EMUNET_LOG\" 2>&1 & echo $!"
            : "\"$@\" </dev/null >>\"$EMUNET_LOG\" 2>&1 & echo $!");
        start.ArgumentList.Add("emunet");
        start.ArgumentList.Add(file);
        foreach (string a in args) start.ArgumentList.Add(a);
        start.Environment["EMUNET_LOG"] = log;
        using var sh = Process.Start(start) ?? throw new InvalidOperationException("Cannot start /bin/sh.");
        sh.StandardInput.Close();
        string output = sh.StandardOutput.ReadToEnd();
        sh.WaitForExit();
        return int.TryParse(output.Trim(), out int pid) ? pid : throw new InvalidOperationException($"Cannot start the engine: {output}");
    }

    private static string LastLines(string log)
    {
        try
        {
            var lines = File.ReadAllLines(log);
            return string.Join(" ", lines.Skip(Math.Max(0, lines.Length - 5))).Trim();
        }
        catch (IOException) { return "(no log)"; }
    }
}
