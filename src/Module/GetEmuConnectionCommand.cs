using System.Management.Automation;
using Emunet.Engine.Control;
using Emunet.Engine.Stack.Nat;

namespace Emunet.Module;

/// <summary>
/// Lists the flows of an instance's NAT table: the guest's own connections and forwarded ones. Takes instances
/// (Get-EmuNet) from the pipeline, and forwards (Get-EmuForward): then only the flows that came in through them.
/// </summary>
[Cmdlet(VerbsCommon.Get, "EmuConnection", DefaultParameterSetName = FilterSet)]
[OutputType(typeof(EmuConnection))]
public sealed class GetEmuConnectionCommand : EmunetWatchCmdlet
{
    private const string FilterSet = "Filter";
    private const string ForwardSet = "Forward";

    [Parameter(Position = 0, ValueFromPipelineByPropertyName = true, ParameterSetName = FilterSet, HelpMessage = InstanceHelp)]
    [ArgumentCompleter(typeof(InstanceNameCompleter))]
    [Alias("Name")]
    public string? Instance { get; set; }

    [Parameter(Mandatory = true, ValueFromPipeline = true, ParameterSetName = ForwardSet,
        HelpMessage = "Forwards (from Get-EmuForward or New-EmuForward): only the flows that came in through them.")]
    public EmuForward[]? Forward { get; set; }

    [Parameter(ParameterSetName = FilterSet, HelpMessage = "Only Tcp, Udp or Icmp flows.")]
    public FlowProtocol? Protocol { get; set; }

    [Parameter(ParameterSetName = FilterSet, HelpMessage = "Only flows with this port at either end (guest, guest's peer, host local or remote).")]
    [ArgumentCompleter(typeof(ForwardPortCompleter))]
    [ValidateRange(0, 65535)]
    public int? Port { get; set; }

    [Parameter(HelpMessage = "Only flows in this state, e.g. Established (case-insensitive).")]
    public string? State { get; set; }


    protected override void ProcessRecord()
    {
        if (ParameterSetName == ForwardSet)
        {
            foreach (var f in Forward ?? [])
            {
                string protocol = f.Protocol.ToString().ToLowerInvariant();
                List(f.Instance, protocol, f.HostPort, c => c.Forward == f.Spec, f);
            }
            return;
        }
        List(Instance, Protocol?.ToString().ToLowerInvariant(), Port, null, Instance);
    }

    private void List(string? instance, string? protocol, int? port, Func<ConnectionDto, bool>? keep, object? target) =>
        WithInstance(instance, target, (client, name) =>
        {
            var rates = new TrafficRates<long>();
            RepeatWatch(now =>
            {
                var flows = client.ListConnections(protocol, port, State);
                WriteVerbose($"Instance '{name}' returned {flows.Count} flow(s).");
                var perFlow = rates.Sample(now, flows.Select(c => (c.Id, c.BytesToGuest, c.BytesFromGuest)));
                foreach (var c in flows)
                    if (keep is null || keep(c)) WriteObject(EmuConnection.From(name, c, perFlow.TryGetValue(c.Id, out var r) ? r : null));
            });
        });
}
