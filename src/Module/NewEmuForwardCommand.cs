using System.Globalization;
using System.Management.Automation;
using System.Net;
using Emunet.Engine.Control;
using Emunet.Engine.Forwarding;

namespace Emunet.Module;

/// <summary>Opens a host port straight into the guest's port through the instance's stack.</summary>
[Cmdlet(VerbsCommon.New, "EmuForward", SupportsShouldProcess = true)]
[OutputType(typeof(EmuForward))]
public sealed class NewEmuForwardCommand : EmunetCmdlet
{
    [Parameter(Mandatory = true, Position = 0, ValueFromPipelineByPropertyName = true, HelpMessage = "The host port; 0 takes any free port (then give -GuestPort).")]
    [ValidateRange(0, 65535)]
    [Alias("HostPort")]
    public int Port { get; set; }

    [Parameter(Position = 1, ValueFromPipelineByPropertyName = true, HelpMessage = "The guest's port; left out, the same as -Port.")]
    [ValidateRange(1, 65535)]
    public int? GuestPort { get; set; }

    [Parameter(ValueFromPipelineByPropertyName = true, HelpMessage = "Tcp or Udp.")]
    public ForwardProtocol Protocol { get; set; } = ForwardProtocol.Tcp;

    [Parameter(ValueFromPipelineByPropertyName = true, HelpMessage = "The host IPv4 address to listen on (0.0.0.0 for every interface).")]
    [ValidateNotNullOrEmpty]
    public string Address { get; set; } = "127.0.0.1";

    [Parameter(ValueFromPipelineByPropertyName = true, HelpMessage = InstanceHelp)]
    [ArgumentCompleter(typeof(InstanceNameCompleter))]
    public string? Instance { get; set; }

    protected override void ProcessRecord()
    {
        if (Address.Count(c => c == '.') != 3 || !IPAddress.TryParse(Address, out var address) || address.AddressFamily != System.Net.Sockets.AddressFamily.InterNetwork)
        {
            WriteError(Error(ErrorIds.InvalidArgument, ErrorCategory.InvalidArgument, $"'{Address}' is not an IPv4 address.", Address));
            return;
        }
        int guest = GuestPort ?? Port;
        if (guest == 0)
        {
            WriteError(Error(ErrorIds.InvalidArgument, ErrorCategory.InvalidArgument, "With -Port 0 (any free port), give -GuestPort.", Port));
            return;
        }
        string spec = string.Create(CultureInfo.InvariantCulture, $"{(Protocol == ForwardProtocol.Udp ? "udp" : "tcp")}:{address}:{Port}:{guest}");
        try
        {
            using var client = ConnectVerbose(Instance, out string name);
            if (!ShouldProcess($"{name}: {spec}", "Add forward")) return;
            WriteObject(EmuForward.From(name, client.AddForward(spec)));
        }
        catch (ControlException e) { WriteError(ToErrorRecord(e, spec)); }
    }
}
