using System.Management.Automation;
using Emunet.Engine.Control;

namespace Emunet.Module;

/// <summary>Lists running instances (removing control sockets left by dead ones).</summary>
[Cmdlet(VerbsCommon.Get, "EmuNet")]
[OutputType(typeof(EmuInstance))]
public sealed class GetEmuNetCommand : EmunetCmdlet
{
    [Parameter(Position = 0, ValueFromPipelineByPropertyName = true, HelpMessage = "Only these instances; wildcards are allowed.")]
    [ArgumentCompleter(typeof(InstanceNameCompleter))]
    [SupportsWildcards]
    [Alias("Instance")]
    public string[]? Name { get; set; }

    protected override void ProcessRecord()
    {
        var running = RuntimeDirectory.ListInstances();
        WriteVerbose($"{running.Count} instance(s) answer in {RuntimeDirectory.GetPath()}.");
        var patterns = Name?.Select(n => new WildcardPattern(n, WildcardOptions.IgnoreCase)).ToArray();
        foreach (string name in running)
        {
            if (patterns is not null && !patterns.Any(p => p.IsMatch(name))) continue;
            try
            {
                using var client = ControlClient.Connect(RuntimeDirectory.SocketPathFor(name));
                WriteObject(EmuInstance.From(client.Info()));
            }
            catch (ControlException e) { WriteError(ToErrorRecord(e, name)); }
        }
        foreach (string n in Name ?? [])
        {
            if (!WildcardPattern.ContainsWildcardCharacters(n) && !running.Contains(n, StringComparer.OrdinalIgnoreCase))
            {
                WriteError(Error(ErrorIds.InstanceNotFound, ErrorCategory.ObjectNotFound,
                    $"No Emunet instance named '{n}' is running.", n));
            }
        }
    }
}
