using System.CommandLine;
using System.CommandLine.Help;
using System.CommandLine.Invocation;
using System.Reflection;
using Emunet.Engine.Control;

namespace Emunet.Tool;

/// <summary>
/// The <c>emunet</c> command line: one factory method per command, options as static fields, an
/// <see cref="ExitCode"/> for every outcome. Commands write only to the <see cref="InvocationConfiguration"/>'s
/// Output and Error, so tests run them in-process with string writers.
/// </summary>
internal static partial class EmunetCli
{
    internal const string ExitCodesEpilog = """
        Exit codes:
          0  Success            done
          1  Failure            an unexpected failure (the message says what)
          2  UsageError         the command line or a value in it is not valid
          3  NoInstance         no instance runs, or none by the name given
          4  AmbiguousInstance  several instances run: choose one with --instance NAME
          5  NotFound           the forward named does not exist
          6  PortInUse          the host port is taken, or binding it was refused
          7  StartFailed        the engine could not start (device or control socket, name taken)
          8  Unreachable        the instance did not answer (or refused this client, or speaks another protocol version)
          9  CaptureFailed      the capture file could not be written
         10  Conflict           it exists already: a forward on that port, or a running capture
         11  StopTimeout        the instance acknowledged the stop but was still there after --timeout
         12  GuestNotReady      forward add --wait: the guest did not accept on the port within --timeout
          emunet launch exits with the emulator's own exit code once the emulator has run.

        Instances keep their control sockets in $EMUNET_RUNTIME_DIR, else $XDG_RUNTIME_DIR/emunet, else ~/.emunet/run.
        """;

    /// <summary>The command users type (the package's ToolCommandName).</summary>
    internal const string ToolName = "emunet";

    internal static readonly Option<string?> InstanceOption = new("--instance", "-i")
    {
        Description = "The instance to talk to (see 'emunet instances'); may be left out when exactly one runs.",
        HelpName = "NAME",
    };

    internal static readonly Option<bool> JsonOption = new("--json")
    {
        Description = "Write JSON (the control API's objects) instead of a table.",
    };

    /// <summary>The root is a plain command named <c>emunet</c>, so help shows the tool's name whatever host runs it.</summary>
    public static RootCommand BuildRoot()
    {
        var root = new RootCommand("Emunet: a network backend for QEMU and the Android Emulator (user-mode NAT, direct host-to-guest forwards).");
        foreach (var option in root.Options)
            if (option is VersionOption version) version.Action = new PrintVersionAction();
        root.Add(BuildRunCommand());
        root.Add(BuildLaunchCommand());
        root.Add(BuildForwardCommand());
        root.Add(BuildReverseCommand());
        root.Add(BuildConnectionsCommand());
        root.Add(BuildInstancesCommand());
        root.Add(BuildInfoCommand());
        root.Add(BuildStatsCommand());
        root.Add(BuildCaptureCommand());
        root.Add(BuildStopCommand());
        root.Add(BuildCompletionCommand());

        foreach (var option in root.Options)
        {
            if (option is HelpOption help && help.Action is HelpAction inner)
                help.Action = new EpilogHelpAction(inner);
        }
        return root;
    }

    /// <summary>Parses and runs <paramref name="args"/>, writing to the given writers.</summary>
    public static async Task<int> InvokeAsync(string[] args, TextWriter output, TextWriter error, CancellationToken cancellationToken)
    {
        var root = BuildRoot();
        var result = root.Parse(args);
        var config = new InvocationConfiguration
        {
            Output = output,
            Error = error,
            // `run` and `launch` handle SIGINT/SIGTERM themselves (PosixSignalRegistration).
            ProcessTerminationTimeout = null,
        };
        if (result.Errors.Count > 0 && result.Action is ParseErrorAction)
        {
            foreach (var e in result.Errors) await error.WriteLineAsync($"emunet: {e.Message}").ConfigureAwait(false);
            await error.WriteLineAsync("Run 'emunet --help' (or 'emunet COMMAND --help') for usage.").ConfigureAwait(false);
            return (int)ExitCode.UsageError;
        }
        return await result.InvokeAsync(config, cancellationToken).ConfigureAwait(false);
    }

    public static string Version =>
        typeof(EmunetCli).Assembly.GetCustomAttribute<AssemblyInformationalVersionAttribute>()?.InformationalVersion
        ?? typeof(EmunetCli).Assembly.GetName().Version?.ToString() ?? "0.0.0";

    /// <summary>Prints this tool's version (the default prints the entry assembly's, which is the test host in tests).</summary>
    private sealed class PrintVersionAction : SynchronousCommandLineAction
    {
        public override int Invoke(ParseResult parseResult)
        {
            parseResult.InvocationConfiguration.Output.WriteLine(Version);
            return 0;
        }
    }

    /// <summary>
    /// The default help with the tool's own name in its usage lines (a <see cref="RootCommand"/> is named after the
    /// entry assembly, "Emunet.Tool", or the test host), then the exit codes under the root command's help.
    /// </summary>
    private sealed class EpilogHelpAction(HelpAction inner) : SynchronousCommandLineAction
    {
        public override int Invoke(ParseResult parseResult)
        {
            var config = parseResult.InvocationConfiguration;
            var output = config.Output;
            var help = new StringWriter();
            config.Output = help;
            int rc;
            try { rc = inner.Invoke(parseResult); }
            finally { config.Output = output; }
            string rootName = parseResult.RootCommandResult.Command.Name;
            output.Write(help.ToString().Replace("\n  " + rootName + " ", "\n  " + ToolName + " ", StringComparison.Ordinal));
            if (parseResult.CommandResult.Command is RootCommand)
                output.WriteLine(ExitCodesEpilog);
            return rc;
        }
    }

    /// <summary>Writes "emunet: MESSAGE" and returns the exit code of a control failure.</summary>
    internal static int Fail(ParseResult parseResult, ControlException e)
    {
        parseResult.InvocationConfiguration.Error.WriteLine($"emunet: {e.Message}");
        return (int)ToExitCode(e.Code);
    }

    internal static int Fail(ParseResult parseResult, ExitCode code, string message)
    {
        parseResult.InvocationConfiguration.Error.WriteLine($"emunet: {message}");
        return (int)code;
    }

    internal static ExitCode ToExitCode(string code) => code switch
    {
        ControlErrorCodes.NoInstance or ControlErrorCodes.InstanceNotFound => ExitCode.NoInstance,
        ControlErrorCodes.AmbiguousInstance => ExitCode.AmbiguousInstance,
        ControlErrorCodes.NotFound => ExitCode.NotFound,
        ControlErrorCodes.PortInUse or ControlErrorCodes.PermissionDenied => ExitCode.PortInUse,
        ControlErrorCodes.BadRequest => ExitCode.UsageError,
        // Refused, or answered outside this version of the protocol: the instance cannot serve this client.
        ControlErrorCodes.Unreachable or ControlErrorCodes.Timeout or ControlErrorCodes.ProtocolError or ControlErrorCodes.TooManyClients
            or ControlErrorCodes.UnknownOp or ControlErrorCodes.UnsupportedVersion or ControlErrorCodes.BadJson or ControlErrorCodes.LineTooLong => ExitCode.Unreachable,
        ControlErrorCodes.CaptureFailed => ExitCode.CaptureFailed,
        ControlErrorCodes.Conflict => ExitCode.Conflict,
        _ => ExitCode.Failure,
    };
}
