using System.Management.Automation;
using Emunet.Engine.Control;
using Emunet.Engine.Forwarding;

namespace Emunet.Module;

/// <summary>Lists an instance's forwards.</summary>
[Cmdlet(VerbsCommon.Get, "EmuForward")]
[OutputType(typeof(EmuForward))]
public sealed class GetEmuForwardCommand : EmunetCmdlet
{
    [Parameter(Position = 0, ValueFromPipelineByPropertyName = true)]
    [ArgumentCompleter(typeof(ForwardPortCompleter))]
    [Alias("HostPort")]
    public int[]? Port { get; set; }

    [Parameter]
    public ForwardProtocol? Protocol { get; set; }

    [Parameter(ValueFromPipelineByPropertyName = true)]
    [ArgumentCompleter(typeof(InstanceNameCompleter))]
    [Alias("Name")]
    public string? Instance { get; set; }

    protected override void ProcessRecord()
    {
        try
        {
            using var client = Connect(Instance, out string name);
            foreach (var f in client.ListForwards())
            {
                var forward = EmuForward.From(name, f);
                if (Protocol is { } p && forward.Protocol != p) continue;
                if (Port is { Length: > 0 } && !Port.Contains(forward.HostPort)) continue;
                WriteObject(forward);
            }
        }
        catch (ControlException e) { ThrowTerminatingError(ToErrorRecord(e, Instance)); }
    }
}
