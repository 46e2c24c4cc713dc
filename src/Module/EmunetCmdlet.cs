using System.Management.Automation;
using Emunet.Engine.Control;

namespace Emunet.Module;

/// <summary>Stable error IDs (the first part of FullyQualifiedErrorId). Scripts and tests match on these.</summary>
public static class ErrorIds
{
    public const string NoInstance = "Emunet.NoInstance";
    public const string AmbiguousInstance = "Emunet.AmbiguousInstance";
    public const string InstanceNotFound = "Emunet.InstanceNotFound";
    public const string InstanceExists = "Emunet.InstanceExists";
    public const string PortInUse = "Emunet.PortInUse";
    public const string ForwardNotFound = "Emunet.ForwardNotFound";
    public const string ForwardConflict = "Emunet.ForwardConflict";
    public const string InvalidArgument = "Emunet.InvalidArgument";
    public const string Unreachable = "Emunet.Unreachable";
    public const string StartFailed = "Emunet.StartFailed";
    public const string StopTimeout = "Emunet.StopTimeout";
    public const string ToolNotFound = "Emunet.ToolNotFound";
    public const string CaptureFailed = "Emunet.CaptureFailed";
    public const string CaptureRunning = "Emunet.CaptureRunning";
    public const string GuestNotReady = "Emunet.GuestNotReady";
    public const string ControlError = "Emunet.ControlError";
    public const string RemapNotFound = "Emunet.RemapNotFound";
    public const string RemapConflict = "Emunet.RemapConflict";
}

/// <summary>What every Emunet cmdlet shares: reaching an instance and turning control failures into error records.</summary>
public abstract class EmunetCmdlet : PSCmdlet
{
    internal const string InstanceHelp = "The instance to use; may be left out when exactly one runs (when several run, the error Emunet.AmbiguousInstance names them). Tab completion offers the running instances.";

    /// <summary>Resolves <paramref name="instance"/> (or the only one running) and connects to it.</summary>
    /// <exception cref="ControlException">No such instance, several, or it does not answer.</exception>
    internal static ControlClient Connect(string? instance, out string name)
    {
        name = RuntimeDirectory.ResolveInstance(instance);
        return ControlClient.Connect(RuntimeDirectory.SocketPathFor(name));
    }

    /// <summary>Connects as <see cref="Connect"/> does and says which instance and socket with -Verbose.</summary>
    internal ControlClient ConnectVerbose(string? instance, out string name)
    {
        var client = Connect(instance, out name);
        WriteVerbose($"Instance '{name}' (control socket {client.SocketPath}).");
        return client;
    }

    /// <summary>
    /// Connects to <paramref name="instance"/> and runs <paramref name="action"/> with the client and the instance's
    /// name; a control failure becomes a non-terminating error for this item (<paramref name="target"/>), so the
    /// pipeline goes on with the next.
    /// </summary>
    /// <param name="notFoundId">The error ID of a <c>not_found</c> reply (the object the cmdlet names: a forward, a remap).</param>
    /// <param name="conflictId">The error ID of a <c>conflict</c> reply.</param>
    internal void WithInstance(string? instance, object? target, Action<ControlClient, string> action,
        string notFoundId = ErrorIds.ForwardNotFound, string conflictId = ErrorIds.ForwardConflict)
    {
        try
        {
            using var client = ConnectVerbose(instance, out string name);
            action(client, name);
        }
        catch (ControlException e) { WriteError(ToErrorRecord(e, target, notFoundId, conflictId)); }
    }

    private readonly ManualResetEventSlim _stopping = new();

    /// <summary>Ctrl+C (or a pipeline that needs no more) ends a -Watch at once.</summary>
    protected override void StopProcessing() => _stopping.Set();

    /// <summary>
    /// -Watch: calls <paramref name="sample"/> now and every <paramref name="intervalSeconds"/> until Ctrl+C or
    /// <paramref name="maxSamples"/> samples.
    /// </summary>
    internal void Repeat(double intervalSeconds, int? maxSamples, Action<DateTimeOffset> sample)
    {
        // Sample n is due n intervals after the first (no drift from the time a sample takes); a timed wait may wake a
        // little early, so it waits again until the clock has really reached the due time.
        // Each sample is stamped on the same monotonic clock the schedule uses.
        var clock = System.Diagnostics.Stopwatch.StartNew();
        var origin = DateTimeOffset.UtcNow;
        var first = TimeSpan.Zero;
        for (int n = 1; ; n++)
        {
            var at = clock.Elapsed;
            if (n == 1) first = at;
            sample(origin + at);
            if (n == maxSamples) return;
            var due = first + TimeSpan.FromSeconds(intervalSeconds * n);
            for (var left = due - clock.Elapsed; left > TimeSpan.Zero; left = due - clock.Elapsed)
                if (_stopping.Wait(left + TimeSpan.FromMilliseconds(1))) return;
        }
    }

    /// <summary>
    /// ShouldProcess, except that <paramref name="force"/> (-Force) answers the confirmation; never -WhatIf, nor an
    /// explicit -Confirm.
    /// </summary>
    internal bool ShouldRemove(bool force, string target, string action)
    {
        var bound = MyInvocation.BoundParameters;
        bool whatIf = bound.TryGetValue("WhatIf", out object? w)
            ? LanguagePrimitives.IsTrue(w)
            : LanguagePrimitives.IsTrue(SessionState.PSVariable.GetValue("WhatIfPreference"));
        if (force && !whatIf && !bound.ContainsKey("Confirm")) return true;
        return ShouldProcess(target, action);
    }

    internal static ErrorRecord ToErrorRecord(ControlException e, object? target,
        string notFoundId = ErrorIds.ForwardNotFound, string conflictId = ErrorIds.ForwardConflict)
    {
        var (id, category) = e.Code switch
        {
            ControlErrorCodes.NoInstance => (ErrorIds.NoInstance, ErrorCategory.ObjectNotFound),
            ControlErrorCodes.InstanceNotFound => (ErrorIds.InstanceNotFound, ErrorCategory.ObjectNotFound),
            ControlErrorCodes.AmbiguousInstance => (ErrorIds.AmbiguousInstance, ErrorCategory.InvalidArgument),
            ControlErrorCodes.PortInUse or ControlErrorCodes.PermissionDenied => (ErrorIds.PortInUse, ErrorCategory.ResourceExists),
            ControlErrorCodes.NotFound => (notFoundId, ErrorCategory.ObjectNotFound),
            ControlErrorCodes.Conflict => (conflictId, ErrorCategory.ResourceExists),
            ControlErrorCodes.BadRequest => (ErrorIds.InvalidArgument, ErrorCategory.InvalidArgument),
            ControlErrorCodes.Unreachable or ControlErrorCodes.Timeout or ControlErrorCodes.ProtocolError or ControlErrorCodes.TooManyClients
                or ControlErrorCodes.UnknownOp or ControlErrorCodes.UnsupportedVersion or ControlErrorCodes.BadJson or ControlErrorCodes.LineTooLong
                => (ErrorIds.Unreachable, ErrorCategory.ConnectionError),
            ControlErrorCodes.CaptureFailed => (ErrorIds.CaptureFailed, ErrorCategory.WriteError),
            _ => (ErrorIds.ControlError, ErrorCategory.NotSpecified),
        };
        return new ErrorRecord(e, id, category, target);
    }

    internal static ErrorRecord Error(string id, ErrorCategory category, string message, object? target) =>
        new(new InvalidOperationException(message), id, category, target);
}

/// <summary>A cmdlet that can sample again and again: -Watch, -IntervalSeconds, -MaxSamples.</summary>
public abstract class EmunetWatchCmdlet : EmunetCmdlet
{
    [Parameter(HelpMessage = "Write a sample every -IntervalSeconds, with bytes per second each way from the second one on, until Ctrl+C (or -MaxSamples).")]
    public SwitchParameter Watch { get; set; }

    [Parameter(HelpMessage = "Seconds between samples with -Watch.")]
    [ValidateRange(0.1, 3600)]
    public double IntervalSeconds { get; set; } = 1;

    [Parameter(HelpMessage = "With -Watch, stop after this many samples.")]
    [ValidateRange(1, int.MaxValue)]
    public int? MaxSamples { get; set; }

    /// <summary>One sample, or with -Watch one every -IntervalSeconds until Ctrl+C or -MaxSamples.</summary>
    internal void RepeatWatch(Action<DateTimeOffset> sample) => Repeat(IntervalSeconds, Watch ? MaxSamples : 1, sample);
}

/// <summary>Completes instance names from the runtime folder.</summary>
public sealed class InstanceNameCompleter : IArgumentCompleter
{
    public IEnumerable<System.Management.Automation.CompletionResult> CompleteArgument(string commandName, string parameterName, string wordToComplete,
        System.Management.Automation.Language.CommandAst commandAst, System.Collections.IDictionary fakeBoundParameters)
    {
        IReadOnlyList<string> names;
        try { names = RuntimeDirectory.ListInstances(removeStale: false); }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException) { yield break; }
        foreach (string n in names)
            if (n.StartsWith(wordToComplete ?? "", StringComparison.OrdinalIgnoreCase))
                yield return new System.Management.Automation.CompletionResult(n, n, CompletionResultType.ParameterValue, n);
    }
}

/// <summary>Completes the host ports of the forwards of the instance given (or the only one running).</summary>
public sealed class ForwardPortCompleter : IArgumentCompleter
{
    public IEnumerable<System.Management.Automation.CompletionResult> CompleteArgument(string commandName, string parameterName, string wordToComplete,
        System.Management.Automation.Language.CommandAst commandAst, System.Collections.IDictionary fakeBoundParameters)
    {
        var results = new List<System.Management.Automation.CompletionResult>();
        try
        {
            string? instance = fakeBoundParameters?["Instance"] as string;
            using var client = EmunetCmdlet.Connect(instance, out _);
            foreach (var f in client.ListForwards())
            {
                string port = f.HostPort.ToString(System.Globalization.CultureInfo.InvariantCulture);
                if (port.StartsWith(wordToComplete ?? "", StringComparison.Ordinal))
                    results.Add(new System.Management.Automation.CompletionResult(port, port, CompletionResultType.ParameterValue, $"{f.Spec}"));
            }
        }
        catch (ControlException) { }
        catch (ArgumentException) { }
        return results;
    }
}
