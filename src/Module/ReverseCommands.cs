using System.Globalization;
using System.Management.Automation;
using Emunet.Engine.Control;
using Emunet.Engine.Stack;

namespace Emunet.Module;

/// <summary>A guest-to-host remap (New-EmuReverse, Get-EmuReverse): the guest's GuestAddress:GuestPort reaches HostAddress:HostPort.</summary>
public sealed class EmuReverse
{
    public required string Instance { get; init; }
    public RemapProtocol Protocol { get; init; }
    /// <summary>The address the guest dials (10.0.2.2, the host alias, unless the remap names another).</summary>
    public required string GuestAddress { get; init; }
    public int GuestPort { get; init; }
    public required string HostAddress { get; init; }
    public int HostPort { get; init; }

    internal static EmuReverse From(string instance, RemapDto d) => new()
    {
        Instance = instance,
        Protocol = d.Protocol == "udp" ? RemapProtocol.Udp : RemapProtocol.Tcp,
        GuestAddress = d.GuestAddress, GuestPort = d.GuestPort, HostAddress = d.HostAddress, HostPort = d.HostPort,
    };

    public override string ToString() =>
        string.Create(CultureInfo.InvariantCulture, $"{(Protocol == RemapProtocol.Udp ? "udp" : "tcp")}:{GuestAddress}:{GuestPort}-{HostAddress}:{HostPort}");
}

/// <summary>Makes the guest's connections to 10.0.2.2:GuestPort (or another guest-network address) reach a host address and port: adb reverse, QEMU's guestfwd.</summary>
[Cmdlet(VerbsCommon.New, "EmuReverse", DefaultParameterSetName = PortSet, SupportsShouldProcess = true)]
[OutputType(typeof(EmuReverse))]
public sealed class NewEmuReverseCommand : EmunetCmdlet
{
    private const string PortSet = "Port";
    private const string SpecSet = "Spec";

    [Parameter(Mandatory = true, ParameterSetName = SpecSet,
        HelpMessage = "Remaps as the emunet tool writes them: tcp:8000:9000, tcp:8000:HOST:9000, udp:5353:53 or guestfwd=tcp:10.0.2.100:80-127.0.0.1:8080.")]
    [ValidateNotNullOrEmpty]
    public string[]? Spec { get; set; }

    [Parameter(Mandatory = true, Position = 0, ValueFromPipelineByPropertyName = true, ParameterSetName = PortSet, HelpMessage = "The port the guest dials on -GuestAddress.")]
    [ValidateRange(1, 65535)]
    public int GuestPort { get; set; }

    [Parameter(Position = 1, ValueFromPipelineByPropertyName = true, ParameterSetName = PortSet, HelpMessage = "The host port it reaches; left out, the same as -GuestPort.")]
    [ValidateRange(1, 65535)]
    public int? HostPort { get; set; }

    [Parameter(ValueFromPipelineByPropertyName = true, ParameterSetName = PortSet, HelpMessage = "The host IPv4 address it reaches.")]
    [ValidateNotNullOrEmpty]
    public string HostAddress { get; set; } = "127.0.0.1";

    [Parameter(ValueFromPipelineByPropertyName = true, ParameterSetName = PortSet,
        HelpMessage = "The address the guest dials: the host alias 10.0.2.2, or any free address of the guest network (as QEMU's guestfwd, e.g. 10.0.2.100).")]
    [ValidateNotNullOrEmpty]
    public string GuestAddress { get; set; } = "10.0.2.2";

    [Parameter(ValueFromPipelineByPropertyName = true, ParameterSetName = PortSet, HelpMessage = "Tcp or Udp.")]
    public RemapProtocol Protocol { get; set; } = RemapProtocol.Tcp;

    [Parameter(ValueFromPipelineByPropertyName = true, HelpMessage = InstanceHelp)]
    [ArgumentCompleter(typeof(InstanceNameCompleter))]
    public string? Instance { get; set; }

    protected override void ProcessRecord()
    {
        var gateway = new NetworkConfig().Gateway;
        var specs = new List<string>();
        if (ParameterSetName == SpecSet) specs.AddRange(Spec ?? []);
        else
        {
            string proto = Protocol == RemapProtocol.Udp ? "udp" : "tcp";
            int hostPort = HostPort ?? GuestPort;
            if (!Engine.Wire.IPv4Address.TryParseDottedQuad(GuestAddress, out var guestIp))
            {
                WriteError(Error(ErrorIds.InvalidArgument, ErrorCategory.InvalidArgument, $"-GuestAddress '{GuestAddress}' is not an IPv4 address.", GuestAddress));
                return;
            }
            // The guest side on another address than the alias is QEMU's guestfwd form (TCP only, as QEMU's).
            specs.Add(guestIp.ToString() == gateway.ToString()
                ? string.Create(CultureInfo.InvariantCulture, $"{proto}:{GuestPort}:{HostAddress}:{hostPort}")
                : string.Create(CultureInfo.InvariantCulture, $"guestfwd={proto}:{GuestAddress}:{GuestPort}-{HostAddress}:{hostPort}"));
        }
        foreach (string spec in specs)
        {
            if (!GuestRemap.TryParse(spec, gateway, out _, out string? error))
            {
                WriteError(Error(ErrorIds.InvalidArgument, ErrorCategory.InvalidArgument, error, spec));
                continue;
            }
            WithInstance(Instance, spec, (client, name) =>
            {
                if (!ShouldProcess($"{name}: {spec}", "Add remap")) return;
                WriteObject(EmuReverse.From(name, client.AddRemap(spec)));
            }, ErrorIds.RemapNotFound, ErrorIds.RemapConflict);
        }
    }
}

/// <summary>Lists an instance's guest-to-host remaps; takes instances (Get-EmuNet) from the pipeline.</summary>
[Cmdlet(VerbsCommon.Get, "EmuReverse")]
[OutputType(typeof(EmuReverse))]
public sealed class GetEmuReverseCommand : EmunetCmdlet
{
    [Parameter(Position = 0, HelpMessage = "Only remaps of these guest ports.")]
    public int[]? GuestPort { get; set; }

    [Parameter(ValueFromPipelineByPropertyName = true, HelpMessage = InstanceHelp)]
    [ArgumentCompleter(typeof(InstanceNameCompleter))]
    [Alias("Name")]
    public string? Instance { get; set; }

    protected override void ProcessRecord() => WithInstance(Instance, Instance, (client, name) =>
    {
        var remaps = client.ListRemaps();
        WriteVerbose($"Instance '{name}' has {remaps.Count} remap(s).");
        foreach (var m in remaps)
            if (GuestPort is not { Length: > 0 } || GuestPort.Contains(m.GuestPort)) WriteObject(EmuReverse.From(name, m));
    }, ErrorIds.RemapNotFound, ErrorIds.RemapConflict);
}

/// <summary>Removes guest-to-host remaps (connections already open keep going).</summary>
[Cmdlet(VerbsCommon.Remove, "EmuReverse", DefaultParameterSetName = PortSet, SupportsShouldProcess = true, ConfirmImpact = ConfirmImpact.Medium)]
[OutputType(typeof(EmuReverse))]
public sealed class RemoveEmuReverseCommand : EmunetCmdlet
{
    private const string PortSet = "Port";
    private const string InputObjectSet = "InputObject";

    [Parameter(Mandatory = true, ValueFromPipeline = true, ParameterSetName = InputObjectSet, HelpMessage = "Remaps from Get-EmuReverse or New-EmuReverse.")]
    public EmuReverse[]? InputObject { get; set; }

    [Parameter(Mandatory = true, Position = 0, ValueFromPipelineByPropertyName = true, ParameterSetName = PortSet, HelpMessage = "The remap's guest port.")]
    [ValidateRange(1, 65535)]
    public int GuestPort { get; set; }

    [Parameter(ValueFromPipelineByPropertyName = true, ParameterSetName = PortSet, HelpMessage = "Tcp or Udp.")]
    public RemapProtocol Protocol { get; set; } = RemapProtocol.Tcp;

    [Parameter(ValueFromPipelineByPropertyName = true, ParameterSetName = PortSet, HelpMessage = "The remap's guest address; left out, the host alias 10.0.2.2.")]
    [ValidateNotNullOrEmpty]
    public string? GuestAddress { get; set; }

    [Parameter(ValueFromPipelineByPropertyName = true, ParameterSetName = PortSet, HelpMessage = InstanceHelp)]
    [ArgumentCompleter(typeof(InstanceNameCompleter))]
    public string? Instance { get; set; }

    [Parameter(HelpMessage = "Do not ask for confirmation (-WhatIf still wins).")]
    public SwitchParameter Force { get; set; }

    [Parameter(HelpMessage = "Write the removed remaps.")]
    public SwitchParameter PassThru { get; set; }

    protected override void ProcessRecord()
    {
        if (ParameterSetName == InputObjectSet)
            foreach (var m in InputObject ?? []) Remove(m.Instance, m.Protocol, m.GuestAddress, m.GuestPort);
        else
            Remove(Instance, Protocol, GuestAddress, GuestPort);
    }

    private void Remove(string? instance, RemapProtocol protocol, string? guestAddress, int guestPort)
    {
        string proto = protocol == RemapProtocol.Udp ? "udp" : "tcp";
        string target = string.Create(CultureInfo.InvariantCulture, $"{proto}:{guestAddress ?? "10.0.2.2"}:{guestPort}");
        WithInstance(instance, target, (client, name) =>
        {
            if (!ShouldRemove(Force, $"{name}: {target}", "Remove remap")) return;
            var removed = client.RemoveRemap(proto, guestPort, guestAddress);
            WriteVerbose($"Removed the remap of {target} from instance '{name}'.");
            if (PassThru) WriteObject(EmuReverse.From(name, removed));
        }, ErrorIds.RemapNotFound, ErrorIds.RemapConflict);
    }
}
