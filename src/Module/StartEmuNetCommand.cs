using System.Diagnostics;
using System.Management.Automation;
using System.Runtime.InteropServices;
using Emunet.Engine.Control;

namespace Emunet.Module;

/// <summary>
/// Starts <c>emunet run</c> as its own background process (a new session, so it outlives this PowerShell), waits
/// until its control socket answers, and returns the instance. Its log goes to NAME.log in the runtime folder.
/// </summary>
[Cmdlet(VerbsLifecycle.Start, "EmuNet", DefaultParameterSetName = SocketSet, SupportsShouldProcess = true)]
[OutputType(typeof(EmuInstance))]
public sealed class StartEmuNetCommand : EmunetCmdlet
{
    private const string SocketSet = "Socket";
    private const string VhostUserSet = "VhostUser";

    [Parameter(Position = 0)]
    [ValidateNotNullOrEmpty]
    public string Name { get; set; } = "default";

    /// <summary>The QEMU stream socket: a Unix path or tcp:127.0.0.1:PORT. Default: net/NAME.sock in the runtime folder.</summary>
    [Parameter(ParameterSetName = SocketSet)]
    [ValidateNotNullOrEmpty]
    public string? Socket { get; set; }

    [Parameter(Mandatory = true, ParameterSetName = VhostUserSet)]
    [ValidateNotNullOrEmpty]
    public string? VhostUser { get; set; }

    [Parameter]
    public string[] Forward { get; set; } = [];

    [Parameter]
    public string? Capture { get; set; }

    /// <summary>Least severe messages written to the instance's log.</summary>
    [Parameter]
    [ValidateSet("Trace", "Debug", "Information", "Warning", "Error", "Critical", "None")]
    public string LogLevel { get; set; } = "Information";

    /// <summary>How long to wait for the control socket to answer.</summary>
    [Parameter]
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

        var args = new List<string> { tool, "run", "--name", Name };
        if (VhostUser is not null) { args.Add("--vhost-user"); args.Add(GetUnresolvedProviderPathFromPSPath(VhostUser)); }
        else
        {
            string socket = Socket ?? RuntimeDirectory.DeviceSocketPathFor(Name);
            if (!socket.StartsWith("tcp:", StringComparison.OrdinalIgnoreCase)) socket = GetUnresolvedProviderPathFromPSPath(socket);
            args.Add("--socket"); args.Add(socket);
        }
        foreach (string f in Forward) { args.Add("--forward"); args.Add(f); }
        if (Capture is not null) { args.Add("--capture"); args.Add(GetUnresolvedProviderPathFromPSPath(Capture)); }
        args.Add("--log-level"); args.Add(LogLevel);

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
            if (!IsAlive(pid))
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

    /// <summary>True while the process exists and is not a zombie.</summary>
    internal static bool IsAlive(int pid)
    {
        try
        {
            string stat = File.ReadAllText($"/proc/{pid}/stat");
            int close = stat.LastIndexOf(')');
            return close > 0 && close + 2 < stat.Length && stat[close + 2] != 'Z';
        }
        catch (IOException) { return false; }
        catch (UnauthorizedAccessException) { return true; }
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
