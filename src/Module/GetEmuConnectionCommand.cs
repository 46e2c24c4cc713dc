using System.Management.Automation;
using Emunet.Engine.Control;
using Emunet.Engine.Stack.Nat;

namespace Emunet.Module;

/// <summary>Lists the flows of an instance's NAT table: the guest's own connections and forwarded ones.</summary>
[Cmdlet(VerbsCommon.Get, "EmuConnection")]
[OutputType(typeof(EmuConnection))]
public sealed class GetEmuConnectionCommand : EmunetCmdlet
{
    [Parameter(Position = 0, ValueFromPipelineByPropertyName = true)]
    [ArgumentCompleter(typeof(InstanceNameCompleter))]
    [Alias("Name")]
    public string? Instance { get; set; }

    [Parameter]
    public FlowProtocol? Protocol { get; set; }

    /// <summary>Only flows with this port at either end.</summary>
    [Parameter]
    [ArgumentCompleter(typeof(ForwardPortCompleter))]
    [ValidateRange(0, 65535)]
    public int? Port { get; set; }

    /// <summary>Only flows in this state (e.g. Established).</summary>
    [Parameter]
    public string? State { get; set; }

    protected override void ProcessRecord()
    {
        try
        {
            using var client = Connect(Instance, out string name);
            string? protocol = Protocol?.ToString().ToLowerInvariant();
            foreach (var c in client.ListConnections(protocol, Port, State))
                WriteObject(EmuConnection.From(name, c));
        }
        catch (ControlException e) { ThrowTerminatingError(ToErrorRecord(e, Instance)); }
    }
}
