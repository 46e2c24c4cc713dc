using System.Management.Automation;
using Emunet.Engine.Control;
using Emunet.Engine.Forwarding;

namespace Emunet.Module;

/// <summary>
/// Stops forwards' host listeners. -WhatIf always wins; -Force only skips the confirmation; open connections are reset
/// only with -ResetConnections.
/// </summary>
[Cmdlet(VerbsCommon.Remove, "EmuForward", DefaultParameterSetName = PortSet, SupportsShouldProcess = true, ConfirmImpact = ConfirmImpact.Medium)]
[OutputType(typeof(EmuForward))]
public sealed class RemoveEmuForwardCommand : EmunetCmdlet
{
    private const string PortSet = "Port";
    private const string InputObjectSet = "InputObject";

    [Parameter(Mandatory = true, ValueFromPipeline = true, ParameterSetName = InputObjectSet, HelpMessage = "Forwards from Get-EmuForward or New-EmuForward.")]
    public EmuForward[]? InputObject { get; set; }

    [Parameter(Mandatory = true, Position = 0, ValueFromPipelineByPropertyName = true, ParameterSetName = PortSet, HelpMessage = "The forward's host port.")]
    [ArgumentCompleter(typeof(ForwardPortCompleter))]
    [ValidateRange(1, 65535)]
    [Alias("HostPort")]
    public int Port { get; set; }

    [Parameter(ValueFromPipelineByPropertyName = true, ParameterSetName = PortSet, HelpMessage = "Tcp or Udp.")]
    public ForwardProtocol Protocol { get; set; } = ForwardProtocol.Tcp;

    [Parameter(ValueFromPipelineByPropertyName = true, ParameterSetName = PortSet,
        HelpMessage = "The forward's host address; left out, the forward on that port whatever its address (when several share the port, the error names them).")]
    [ValidateNotNullOrEmpty]
    public string? Address { get; set; }

    [Parameter(ValueFromPipelineByPropertyName = true, ParameterSetName = PortSet, HelpMessage = InstanceHelp)]
    [ArgumentCompleter(typeof(InstanceNameCompleter))]
    public string? Instance { get; set; }

    [Parameter(HelpMessage = "Also reset the connections that came in through the forward (without it they run on until they close).")]
    public SwitchParameter ResetConnections { get; set; }

    [Parameter(HelpMessage = "Do not ask for confirmation. -WhatIf still wins, and connections are reset only with -ResetConnections.")]
    public SwitchParameter Force { get; set; }

    [Parameter(HelpMessage = "Write the removed forwards.")]
    public SwitchParameter PassThru { get; set; }

    protected override void ProcessRecord()
    {
        if (ParameterSetName == InputObjectSet)
        {
            foreach (var f in InputObject ?? []) Remove(f.Instance, f.Protocol, f.Address, f.HostPort);
        }
        else
        {
            Remove(Instance, Protocol, Address, Port);
        }
    }

    private void Remove(string? instance, ForwardProtocol protocol, string? address, int port)
    {
        string proto = protocol == ForwardProtocol.Udp ? "udp" : "tcp";
        string target = address is null ? $"{proto} port {port}" : $"{proto}:{address}:{port}";
        WithInstance(instance, target, (client, name) =>
        {
            if (!ShouldRemove(Force, $"{name}: {target}", ResetConnections ? "Remove forward and reset its connections" : "Remove forward")) return;
            var removed = client.RemoveForward(proto, address, port, ResetConnections);
            WriteVerbose($"Removed {removed.Spec} from instance '{name}'.");
            if (PassThru) WriteObject(EmuForward.From(name, removed));
        });
    }

}
