using System.Management.Automation;
using Emunet.Engine.Control;

namespace Emunet.Module;

/// <summary>Stops instances cleanly (control 'shutdown') and returns once each is gone: socket removed, process exited.</summary>
[Cmdlet(VerbsLifecycle.Stop, "EmuNet", SupportsShouldProcess = true, ConfirmImpact = ConfirmImpact.Medium)]
[OutputType(typeof(void))]
public sealed class StopEmuNetCommand : EmunetCmdlet
{
    [Parameter(Position = 0, ValueFromPipeline = true, ValueFromPipelineByPropertyName = true,
        HelpMessage = "The instances to stop; may be left out when exactly one runs. Takes names, or Get-EmuNet's objects, from the pipeline.")]
    [ArgumentCompleter(typeof(InstanceNameCompleter))]
    [Alias("Instance")]
    public string[]? Name { get; set; }

    [Parameter(HelpMessage = "How long to wait for each instance to be gone; then the error Emunet.StopTimeout is written.")]
    [ValidateRange(1, 600)]
    public int TimeoutSeconds { get; set; } = 15;

    protected override void ProcessRecord()
    {
        foreach (string? name in Name is { Length: > 0 } ? Name : new string?[] { null })
        {
            try { Stop(RuntimeDirectory.ResolveInstance(name)); }
            catch (ControlException e) { WriteError(ToErrorRecord(e, name)); }
        }
    }

    private void Stop(string name)
    {
        if (!ShouldProcess(name, "Stop Emunet instance")) return;
        using var client = ConnectVerbose(name, out _);
        if (!client.ShutdownAndWait(TimeSpan.FromSeconds(TimeoutSeconds)))
        {
            WriteError(Error(ErrorIds.StopTimeout, ErrorCategory.OperationTimeout,
                $"Emunet instance '{name}' acknowledged the shutdown but was still there after {TimeoutSeconds} s. Its log is {RuntimeDirectory.LogPathFor(name)}; raise -TimeoutSeconds, or end its process.", name));
            return;
        }
        WriteVerbose($"Stopped Emunet instance '{name}'.");
    }
}
