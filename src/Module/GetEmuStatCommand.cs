using System.Management.Automation;
using Emunet.Engine.Control;

namespace Emunet.Module;

/// <summary>An instance's frame, byte, flow and drop counters; takes instances (Get-EmuNet) from the pipeline.</summary>
[Cmdlet(VerbsCommon.Get, "EmuStat")]
[OutputType(typeof(EmuStat))]
public sealed class GetEmuStatCommand : EmunetCmdlet
{
    [Parameter(Position = 0, ValueFromPipelineByPropertyName = true, HelpMessage = InstanceHelp)]
    [ArgumentCompleter(typeof(InstanceNameCompleter))]
    [Alias("Name")]
    public string? Instance { get; set; }

    [Parameter(HelpMessage = "Write a sample every -IntervalSeconds, with bytes per second each way, until Ctrl+C (or -MaxSamples).")]
    public SwitchParameter Watch { get; set; }

    [Parameter(HelpMessage = "Seconds between samples with -Watch.")]
    [ValidateRange(0.1, 3600)]
    public double IntervalSeconds { get; set; } = 1;

    [Parameter(HelpMessage = "With -Watch, stop after this many samples.")]
    [ValidateRange(1, int.MaxValue)]
    public int? MaxSamples { get; set; }

    protected override void ProcessRecord() => WithInstance(Instance, Instance, (client, name) =>
    {
        if (!Watch)
        {
            WriteObject(EmuStat.From(name, client.Stats(), null));
            return;
        }
        var rates = new TrafficRates<string>();
        Repeat(IntervalSeconds, MaxSamples, now =>
        {
            var s = client.Stats();
            var rate = rates.Sample(now, [(name, s.BytesToGuest, s.BytesFromGuest)]);
            WriteObject(EmuStat.From(name, s, rate.TryGetValue(name, out var r) ? r : null));
        });
    });
}
