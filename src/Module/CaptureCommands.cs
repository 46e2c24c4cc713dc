using System.Management.Automation;
using Emunet.Engine.Control;

namespace Emunet.Module;

/// <summary>Starts writing every frame to and from the guest into a pcap file (Wireshark, tshark -r, tcpdump -r).</summary>
[Cmdlet(VerbsLifecycle.Start, "EmuCapture", SupportsShouldProcess = true)]
[OutputType(typeof(EmuCapture))]
public sealed class StartEmuCaptureCommand : EmunetCmdlet
{
    [Parameter(Mandatory = true, Position = 0, HelpMessage = "The pcap file to write (created or truncated).")]
    [ValidateNotNullOrEmpty]
    public string Path { get; set; } = "";

    [Parameter(ValueFromPipelineByPropertyName = true, HelpMessage = InstanceHelp)]
    [ArgumentCompleter(typeof(InstanceNameCompleter))]
    [Alias("Name")]
    public string? Instance { get; set; }

    protected override void ProcessRecord()
    {
        string file = GetUnresolvedProviderPathFromPSPath(Path);
        try
        {
            using var client = ConnectVerbose(Instance, out string name);
            if (!ShouldProcess($"{name}: {file}", "Start capture")) return;
            WriteObject(EmuCapture.From(name, client.StartCapture(file)));
        }
        catch (ControlException e) when (e.Code == ControlErrorCodes.Conflict)
        {
            WriteError(Error(ErrorIds.CaptureRunning, ErrorCategory.ResourceExists, $"{e.Message} (Stop-EmuCapture)", file));
        }
        catch (ControlException e) { WriteError(ToErrorRecord(e, file)); }
    }
}

/// <summary>Stops an instance's capture and closes its file.</summary>
[Cmdlet(VerbsLifecycle.Stop, "EmuCapture", SupportsShouldProcess = true)]
[OutputType(typeof(EmuCapture))]
public sealed class StopEmuCaptureCommand : EmunetCmdlet
{
    [Parameter(Position = 0, ValueFromPipelineByPropertyName = true, HelpMessage = InstanceHelp)]
    [ArgumentCompleter(typeof(InstanceNameCompleter))]
    [Alias("Name")]
    public string? Instance { get; set; }

    protected override void ProcessRecord() => WithInstance(Instance, Instance, (client, name) =>
    {
        if (!ShouldProcess(name, "Stop capture")) return;
        var c = client.StopCapture();
        WriteVerbose(c.File is null ? $"No capture was running on instance '{name}'." : $"Capture written to {c.File}.");
        WriteObject(EmuCapture.From(name, c));
    });
}
