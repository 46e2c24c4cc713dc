using System.Management.Automation;
using Emunet.Engine.Control;

namespace Emunet.Module;

/// <summary>An instance's frame, byte, flow and drop counters; takes instances (Get-EmuNet) from the pipeline.</summary>
[Cmdlet(VerbsCommon.Get, "EmuStat")]
[OutputType(typeof(EmuStat))]
public sealed class GetEmuStatCommand : EmunetWatchCmdlet
{
    [Parameter(Position = 0, ValueFromPipelineByPropertyName = true, HelpMessage = InstanceHelp)]
    [ArgumentCompleter(typeof(InstanceNameCompleter))]
    [Alias("Name")]
    public string? Instance { get; set; }

    protected override void ProcessRecord() => WithInstance(Instance, Instance, (client, name) =>
    {
        var rates = new TrafficRates<string>();
        RepeatWatch(now =>
        {
            var s = client.Stats();
            var rate = rates.Sample(now, [(name, s.BytesToGuest, s.BytesFromGuest)]);
            WriteObject(EmuStat.From(name, s, now, rate.TryGetValue(name, out var r) ? r : null));
        });
    });
}
