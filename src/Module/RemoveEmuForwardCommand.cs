using System.Management.Automation;
using Emunet.Engine.Control;
using Emunet.Engine.Forwarding;

namespace Emunet.Module;

/// <summary>Stops forwards' host listeners; with -Force their open connections are reset too and nothing is asked.</summary>
[Cmdlet(VerbsCommon.Remove, "EmuForward", DefaultParameterSetName = PortSet, SupportsShouldProcess = true, ConfirmImpact = ConfirmImpact.Medium)]
[OutputType(typeof(EmuForward))]
public sealed class RemoveEmuForwardCommand : EmunetCmdlet
{
    private const string PortSet = "Port";
    private const string InputObjectSet = "InputObject";

    [Parameter(Mandatory = true, ValueFromPipeline = true, ParameterSetName = InputObjectSet)]
    public EmuForward[]? InputObject { get; set; }

    [Parameter(Mandatory = true, Position = 0, ValueFromPipelineByPropertyName = true, ParameterSetName = PortSet)]
    [ArgumentCompleter(typeof(ForwardPortCompleter))]
    [ValidateRange(1, 65535)]
    [Alias("HostPort")]
    public int Port { get; set; }

    [Parameter(ValueFromPipelineByPropertyName = true, ParameterSetName = PortSet)]
    public ForwardProtocol Protocol { get; set; } = ForwardProtocol.Tcp;

    [Parameter(ValueFromPipelineByPropertyName = true, ParameterSetName = PortSet)]
    [ValidateNotNullOrEmpty]
    public string Address { get; set; } = "127.0.0.1";

    [Parameter(ValueFromPipelineByPropertyName = true, ParameterSetName = PortSet)]
    [ArgumentCompleter(typeof(InstanceNameCompleter))]
    public string? Instance { get; set; }

    /// <summary>Reset the forward's open connections, and do not ask.</summary>
    [Parameter]
    public SwitchParameter Force { get; set; }

    [Parameter]
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

    private void Remove(string? instance, ForwardProtocol protocol, string address, int port)
    {
        string proto = protocol == ForwardProtocol.Udp ? "udp" : "tcp";
        string target = $"{proto}:{address}:{port}";
        try
        {
            using var client = Connect(instance, out string name);
            if (!Force && !ShouldProcess($"{name}: {target}", "Remove forward")) return;
            var removed = client.RemoveForward(proto, address, port, Force);
            if (PassThru) WriteObject(EmuForward.From(name, removed));
        }
        catch (ControlException e) { WriteError(ToErrorRecord(e, target)); }
    }
}
