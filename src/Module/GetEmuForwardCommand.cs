using System.Management.Automation;
using Emunet.Engine.Control;
using Emunet.Engine.Forwarding;

namespace Emunet.Module;

/// <summary>Lists an instance's forwards; takes instances (Get-EmuNet) from the pipeline.</summary>
[Cmdlet(VerbsCommon.Get, "EmuForward")]
[OutputType(typeof(EmuForward))]
public sealed class GetEmuForwardCommand : EmunetCmdlet
{
    [Parameter(Position = 0, ValueFromPipelineByPropertyName = true, HelpMessage = "Only forwards on these host ports.")]
    [ArgumentCompleter(typeof(ForwardPortCompleter))]
    [Alias("HostPort")]
    public int[]? Port { get; set; }

    [Parameter(HelpMessage = "Only Tcp or only Udp forwards.")]
    public ForwardProtocol? Protocol { get; set; }

    [Parameter(ValueFromPipelineByPropertyName = true, HelpMessage = InstanceHelp)]
    [ArgumentCompleter(typeof(InstanceNameCompleter))]
    [Alias("Name")]
    public string? Instance { get; set; }

    protected override void ProcessRecord() => WithInstance(Instance, Instance, (client, name) =>
    {
        var forwards = client.ListForwards();
        WriteVerbose($"Instance '{name}' has {forwards.Count} forward(s).");
        foreach (var f in forwards)
        {
            var forward = EmuForward.From(name, f);
            if (Protocol is { } p && forward.Protocol != p) continue;
            if (Port is { Length: > 0 } && !Port.Contains(forward.HostPort)) continue;
            WriteObject(forward);
        }
    });
}
