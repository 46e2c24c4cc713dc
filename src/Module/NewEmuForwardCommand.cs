using System.Globalization;
using System.Management.Automation;
using System.Net;
using Emunet.Engine.Control;
using Emunet.Engine.Forwarding;

namespace Emunet.Module;

/// <summary>Opens a host port straight into the guest's port through the instance's stack.</summary>
[Cmdlet(VerbsCommon.New, "EmuForward", DefaultParameterSetName = PortSet, SupportsShouldProcess = true)]
[OutputType(typeof(EmuForward))]
public sealed class NewEmuForwardCommand : EmunetCmdlet
{
    private const string PortSet = "Port";
    private const string SpecSet = "Spec";

    [Parameter(Mandatory = true, ParameterSetName = SpecSet,
        HelpMessage = "Forwards as the emunet tool writes them: tcp:8080:80, udp:5353:53, a range (tcp:8000-8010, tcp:8000-8010:9000-9010), a comma list (tcp:80,443) or hostfwd=tcp:127.0.0.1:8080-:80. Each spec is added whole or not at all.")]
    [ValidateNotNullOrEmpty]
    public string[]? Spec { get; set; }

    [Parameter(Mandatory = true, Position = 0, ValueFromPipelineByPropertyName = true, ParameterSetName = PortSet, HelpMessage = "The host port; 0 takes any free port (then give -GuestPort).")]
    [ValidateRange(0, 65535)]
    [Alias("HostPort")]
    public int Port { get; set; }

    [Parameter(Position = 1, ValueFromPipelineByPropertyName = true, ParameterSetName = PortSet, HelpMessage = "The guest's port; left out, the same as -Port.")]
    [ValidateRange(1, 65535)]
    public int? GuestPort { get; set; }

    [Parameter(ValueFromPipelineByPropertyName = true, ParameterSetName = PortSet, HelpMessage = "Tcp or Udp.")]
    public ForwardProtocol Protocol { get; set; } = ForwardProtocol.Tcp;

    [Parameter(ValueFromPipelineByPropertyName = true, ParameterSetName = PortSet, HelpMessage = "The host address to listen on: IPv4 (0.0.0.0 for every interface) or IPv6 (::1; the forward then reaches the guest's IPv6 address).")]
    [ValidateNotNullOrEmpty]
    public string Address { get; set; } = "127.0.0.1";

    [Parameter(ValueFromPipelineByPropertyName = true, HelpMessage = InstanceHelp)]
    [ArgumentCompleter(typeof(InstanceNameCompleter))]
    public string? Instance { get; set; }

    [Parameter(ValueFromPipelineByPropertyName = true,
        HelpMessage = "The guest the forward reaches: the address of one of the instance's links (10.0.2.16 for the Android Emulator's Wi-Fi link). Left out, the first link's guest (10.0.2.15).")]
    [ValidateNotNullOrEmpty]
    public string? GuestAddress { get; set; }

    [Parameter(HelpMessage = "Return only once the guest accepts on each TCP port forwarded (a progress bar shows the wait), so scripts need no handshake of their own.")]
    public SwitchParameter Wait { get; set; }

    [Parameter(HelpMessage = "With -Wait: give up after this many seconds (error Emunet.GuestNotReady; the forward stays).")]
    [ValidateRange(1, 3600)]
    public int TimeoutSeconds { get; set; } = 60;

    protected override void ProcessRecord()
    {
        Engine.Wire.IPv4Address? guestAddress = null;
        if (GuestAddress is not null)
        {
            if (!Engine.Wire.IPv4Address.TryParseDottedQuad(GuestAddress, out var parsed))
            {
                WriteError(Error(ErrorIds.InvalidArgument, ErrorCategory.InvalidArgument, $"-GuestAddress '{GuestAddress}' is not an IPv4 address (e.g. 10.0.2.16).", GuestAddress));
                return;
            }
            guestAddress = Engine.Wire.IPv4Address.From(parsed);
        }
        if (ParameterSetName == SpecSet)
        {
            foreach (string text in Spec ?? [])
            {
                if (!ForwardSpec.TryParseMany(text, out var specs, out string? error))
                {
                    WriteError(Error(ErrorIds.InvalidArgument, ErrorCategory.InvalidArgument, error!, text));
                    continue;
                }
                if (guestAddress is { } g)
                {
                    if (specs.FirstOrDefault(s => s.GuestAddress is { } named && named != g) is { } other)
                    {
                        WriteError(Error(ErrorIds.InvalidArgument, ErrorCategory.InvalidArgument,
                            $"The forward {other} names the guest {other.GuestAddress} and -GuestAddress says {g}; give one.", text));
                        continue;
                    }
                    Add(string.Join(',', specs.Select(s => (s with { GuestAddress = g }).ToString())));
                    continue;
                }
                Add(text);
            }
            return;
        }
        string address;
        if (Engine.Wire.IPv4Address.TryParseDottedQuad(Address, out var v4)) address = v4.ToString();
        else if (!Address.Contains('%') && IPAddress.TryParse(Address, out var v6) && v6.AddressFamily == System.Net.Sockets.AddressFamily.InterNetworkV6)
            address = "[" + v6 + "]";   // the spec's form for an IPv6 host address
        else
        {
            WriteError(Error(ErrorIds.InvalidArgument, ErrorCategory.InvalidArgument, $"'{Address}' is not an IPv4 or IPv6 address.", Address));
            return;
        }
        int guest = GuestPort ?? Port;
        if (guest == 0)
        {
            WriteError(Error(ErrorIds.InvalidArgument, ErrorCategory.InvalidArgument, "With -Port 0 (any free port), give -GuestPort.", Port));
            return;
        }
        Add(guestAddress is { } target
            ? string.Create(CultureInfo.InvariantCulture, $"{(Protocol == ForwardProtocol.Udp ? "udp" : "tcp")}:{address}:{Port}:{target}:{guest}")
            : string.Create(CultureInfo.InvariantCulture, $"{(Protocol == ForwardProtocol.Udp ? "udp" : "tcp")}:{address}:{Port}:{guest}"));
    }

    /// <summary>Probes until the guest accepts behind <paramref name="f"/>, with a progress bar; false (error written) at the timeout.</summary>
    private bool WaitForGuest(ControlClient client, string name, ForwardDto f)
    {
        var timeout = TimeSpan.FromSeconds(TimeoutSeconds);
        var progress = new ProgressRecord(1, $"Waiting for the guest of '{name}'", $"guest port {f.GuestPort} behind {f.Address}:{f.HostPort}");
        bool ready = ForwardReadiness.WaitUntilAccepting(client, f, timeout, waited =>
        {
            progress.PercentComplete = (int)Math.Min(99, waited.TotalSeconds * 100 / timeout.TotalSeconds);
            progress.StatusDescription = $"guest port {f.GuestPort}: not accepting yet ({waited.TotalSeconds:0} s of {TimeoutSeconds} s)";
            WriteProgress(progress);
        });
        progress.RecordType = ProgressRecordType.Completed;
        WriteProgress(progress);
        if (ready) return true;
        WriteError(Error(ErrorIds.GuestNotReady, ErrorCategory.OperationTimeout,
            $"The guest of '{name}' did not accept on port {f.GuestPort} within {TimeoutSeconds} s; the forward {f.Spec} stays. Is the app listening, and is a guest attached?", f.Spec));
        return false;
    }

    private void Add(string spec) => WithInstance(Instance, spec, (client, name) =>
    {
        if (!ShouldProcess($"{name}: {spec}", "Add forward")) return;
        var added = client.AddForwards(spec);
        if (!client.Info().GuestConnected && !Wait)
            WriteWarning($"No guest is attached to '{name}' yet: until its emulator attaches, clients of this forward are reset at once.");
        foreach (var f in added)
        {
            if (Wait && string.Equals(f.Protocol, "tcp", StringComparison.OrdinalIgnoreCase) && !WaitForGuest(client, name, f)) continue;
            WriteObject(EmuForward.From(name, f));
        }
    });
}
