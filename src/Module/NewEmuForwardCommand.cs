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
    /// <summary>The host port; 0 takes any free one.</summary>
    [Parameter(Mandatory = true, Position = 0, ValueFromPipelineByPropertyName = true)]
    [ValidateRange(0, 65535)]
    [Alias("HostPort")]
    public int Port { get; set; }

    /// <summary>The guest's port; defaults to <see cref="Port"/>.</summary>
    [Parameter(Position = 1, ValueFromPipelineByPropertyName = true)]
    [ValidateRange(1, 65535)]
    public int? GuestPort { get; set; }

    [Parameter(ValueFromPipelineByPropertyName = true)]
    public ForwardProtocol Protocol { get; set; } = ForwardProtocol.Tcp;

    /// <summary>The host address to listen on; 127.0.0.1 unless given.</summary>
    [Parameter(ValueFromPipelineByPropertyName = true)]
    [ValidateNotNullOrEmpty]
    public string Address { get; set; } = "127.0.0.1";

    [Parameter(ValueFromPipelineByPropertyName = true)]
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
            using var client = Connect(Instance, out string name);
            if (!ShouldProcess($"{name}: {spec}", "Add forward")) return;
            WriteObject(EmuForward.From(name, client.AddForward(spec)));
        }
        catch (ControlException e) { WriteError(ToErrorRecord(e, spec)); }
    }
}
