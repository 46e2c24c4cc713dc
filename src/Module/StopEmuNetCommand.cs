using System.Diagnostics;
using System.Management.Automation;
using Emunet.Engine.Control;

namespace Emunet.Module;

/// <summary>Stops instances cleanly (control 'shutdown') and waits until their control sockets are gone.</summary>
[Cmdlet(VerbsLifecycle.Stop, "EmuNet", SupportsShouldProcess = true, ConfirmImpact = ConfirmImpact.Medium)]
[OutputType(typeof(void))]
public sealed class StopEmuNetCommand : EmunetCmdlet
{
    [Parameter(Position = 0, ValueFromPipeline = true, ValueFromPipelineByPropertyName = true)]
    [ArgumentCompleter(typeof(InstanceNameCompleter))]
    [Alias("Instance")]
    public string[]? Name { get; set; }

    [Parameter]
    [ValidateRange(1, 600)]
    public int TimeoutSeconds { get; set; } = 15;

    protected override void ProcessRecord()
    {
        if (Name is null || Name.Length == 0)
        {
            try { Stop(RuntimeDirectory.ResolveInstance(null)); }
            catch (ControlException e) { WriteError(ToErrorRecord(e, null)); }
            return;
        }
        foreach (string name in Name)
        {
            try { Stop(RuntimeDirectory.ResolveInstance(name)); }
            catch (ControlException e) { WriteError(ToErrorRecord(e, name)); }
        }
    }

    private void Stop(string name)
    {
        if (!ShouldProcess(name, "Stop Emunet instance")) return;
        string socket = RuntimeDirectory.SocketPathFor(name);
        using (var client = ControlClient.Connect(socket)) client.Shutdown();
        var wait = Stopwatch.StartNew();
        // The control socket goes last, once the engine has closed its listeners and device socket.
        while (File.Exists(socket))
        {
            if (wait.Elapsed > TimeSpan.FromSeconds(TimeoutSeconds))
            {
                WriteError(Error(ErrorIds.StopTimeout, ErrorCategory.OperationTimeout,
                    $"Emunet instance '{name}' acknowledged the shutdown but still answers after {TimeoutSeconds} s.", name));
                return;
            }
            Thread.Sleep(50);
        }
        WriteVerbose($"Stopped Emunet instance '{name}'.");
    }
}
