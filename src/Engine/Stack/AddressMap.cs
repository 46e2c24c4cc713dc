using System.Net;
using System.Net.NetworkInformation;
using System.Net.Sockets;
using Emunet.Engine.Wire;

namespace Emunet.Engine.Stack;

/// <summary>What the outbound policy decided for a guest destination.</summary>
internal enum OutboundVerdict
{
    /// <summary>Reachable, at the host address given.</summary>
    Mapped,
    /// <summary>Nothing there: an address of the guest network, broadcast, multicast, or a closed alias.</summary>
    Unroutable,
    /// <summary>Refused by policy: the host's own addresses outside the alias, <c>--restrict</c>, or a deny rule.</summary>
    Denied,
}

/// <summary>
/// Where a guest's outbound flow goes on the host, and whether it may (the NAT rule and the outbound policy, shared
/// by UDP, TCP and ICMP), decided in this order:
/// <list type="number">
/// <item>a guest-to-host remap (<see cref="Remaps"/>, TCP and UDP): its host end, whatever the policy (an explicit grant);</item>
/// <item>the DNS address, port 53: the upstream resolver (the relay works whatever the policy);</item>
/// <item>the gateway: the host's 127.0.0.1, unless <see cref="NetworkConfig.MapGatewayToLoopback"/> is off;</item>
/// <item>other addresses of the guest network, broadcast, multicast, 0.0.0.0/8: nothing;</item>
/// <item>127.0.0.0/8 and the host's own addresses: denied — the host is reachable only through the gateway alias;</item>
/// <item><see cref="NetworkConfig.Restrict"/>: denied (QEMU's <c>restrict=on</c>: forwards and DNS still work);</item>
/// <item><see cref="NetworkConfig.OutboundRules"/>, first match wins (the gateway alias is subject to them too);</item>
/// <item>anything else: itself.</item>
/// </list>
/// </summary>
internal sealed class AddressMap
{
    /// <summary>How long the host's own address list is trusted before it is read again (interfaces change).</summary>
    public const int HostAddressRefreshMs = 10_000;

    private readonly NetworkConfig _config;
    private readonly IPEndPoint[] _dnsUpstream;
    private readonly Func<IReadOnlyList<IPAddress>> _hostAddresses;
    private uint[] _ownAddresses = Array.Empty<uint>();
    private long _ownAddressesRead;
    private bool _ownAddressesKnown;

    /// <param name="config">The address plan and policy.</param>
    /// <param name="hostAddresses">The host's own addresses (tests give their own); by default every interface's.</param>
    public AddressMap(NetworkConfig config, Func<IReadOnlyList<IPAddress>>? hostAddresses = null)
    {
        _config = config;
        _dnsUpstream = config.DnsUpstream.Count > 0 ? config.DnsUpstream.ToArray() : ReadResolvConf("/etc/resolv.conf");
        _hostAddresses = hostAddresses ?? ReadHostAddresses;
        Remaps = new RemapTable(config);
    }

    /// <summary>The guest-to-host remaps (<c>adb reverse</c>, QEMU's <c>guestfwd</c>), changed at run time.</summary>
    public RemapTable Remaps { get; }

    /// <summary>
    /// As <see cref="MapOutbound(IPv4Address, int, out IPAddress, out int)"/> for a TCP or UDP flow, a remap of that
    /// guest side first.
    /// </summary>
    public OutboundVerdict MapOutbound(RemapProtocol protocol, Nat.FlowAddress destination, int port, out IPAddress host, out int hostPort)
    {
        // Remaps name IPv4 guest sides (10.0.2.2:P, guestfwd's 10.0.2.x:P).
        if (destination.IsIPv4 && Remaps.TryFind(protocol, destination.IPv4, port, out var remapped))
        {
            host = remapped.Address;
            hostPort = remapped.Port;
            return OutboundVerdict.Mapped;
        }
        return MapOutbound(destination, port, out host, out hostPort);
    }

    public IReadOnlyList<IPEndPoint> DnsUpstream => _dnsUpstream;

    /// <summary>A destination of either family (IPv4-mapped keys are IPv4); see <see cref="MapOutboundIPv6"/>.</summary>
    public OutboundVerdict MapOutbound(Nat.FlowAddress destination, int port, out IPAddress host, out int hostPort) =>
        destination.IsIPv4 ? MapOutbound(destination.IPv4, port, out host, out hostPort)
                           : MapOutboundIPv6(destination.IPv6, port, out host, out hostPort);

    /// <summary>
    /// The same order for IPv6: the DNS relay fec0::3 port 53 to the upstream resolver; the host alias fec0::2 to the
    /// host's ::1 (off with <see cref="NetworkConfig.MapGatewayToLoopback"/>, denied by <c>--restrict</c> and subject to
    /// the rules, as 10.0.2.2 is); other addresses of the prefix, link-local, multicast, unspecified: nothing; ::1,
    /// IPv4-mapped and the host's own addresses: denied; <c>--restrict</c>: denied; the IPv6 allow/deny rules, first
    /// match wins (IPv4 rules match no IPv6 destination); anything else: itself.
    /// </summary>
    public OutboundVerdict MapOutboundIPv6(IPv6Address destination, int port, out IPAddress host, out int hostPort)
    {
        hostPort = port;
        host = IPAddress.None;
        if (destination == _config.IPv6Dns)
        {
            if (port != 53 || _dnsUpstream.Length == 0) return OutboundVerdict.Unroutable;
            host = _dnsUpstream[0].Address;
            hostPort = _dnsUpstream[0].Port;
            return OutboundVerdict.Mapped;
        }
        if (destination == _config.IPv6Gateway)
        {
            if (!_config.MapGatewayToLoopback) return OutboundVerdict.Unroutable;
            if (_config.Restrict || !RulesAllow(Nat.FlowAddress.FromIPv6(destination), port)) return OutboundVerdict.Denied;
            host = IPAddress.IPv6Loopback;
            return OutboundVerdict.Mapped;
        }
        if (destination.InPrefix(_config.IPv6Prefix, _config.IPv6PrefixLength) || destination.IsLinkLocal
            || destination.IsMulticast || destination.IsUnspecified)
            return OutboundVerdict.Unroutable;
        var address = destination.ToIPAddress();
        if (destination == IPv6Address.Loopback || address.IsIPv4MappedToIPv6 || IsHostOwnIPv6(address)) return OutboundVerdict.Denied;
        if (_config.Restrict || !RulesAllow(Nat.FlowAddress.FromIPv6(destination), port)) return OutboundVerdict.Denied;
        host = address;
        return OutboundVerdict.Mapped;
    }

    private bool IsHostOwnIPv6(IPAddress destination)
    {
        foreach (var a in _hostAddresses())
            if (a.AddressFamily == AddressFamily.InterNetworkV6 && a.Equals(destination)) return true;
        return false;
    }

    /// <summary>The host address for a guest destination, or the reason the guest may not reach it.</summary>
    public OutboundVerdict MapOutbound(IPv4Address destination, int port, out IPAddress host, out int hostPort)
    {
        hostPort = port;
        host = IPAddress.None;
        if (destination == _config.Dns)
        {
            if (port != 53 || _dnsUpstream.Length == 0) return OutboundVerdict.Unroutable;
            host = _dnsUpstream[0].Address;
            hostPort = _dnsUpstream[0].Port;
            return OutboundVerdict.Mapped;
        }
        if (destination == _config.Gateway)
        {
            if (!_config.MapGatewayToLoopback) return OutboundVerdict.Unroutable;
            if (_config.Restrict || !RulesAllow(destination, port)) return OutboundVerdict.Denied;
            host = IPAddress.Loopback;
            return OutboundVerdict.Mapped;
        }
        if (destination.InSubnet(_config.Network, _config.PrefixLength) || destination.IsBroadcast || destination.IsMulticast
            || (destination.Value >> 24) == 0) // RFC 1122 §3.2.1.3: 0.0.0.0/8 is "this network", never a destination
            return OutboundVerdict.Unroutable;
        if (destination.IsLoopback || IsHostOwn(destination)) return OutboundVerdict.Denied;
        if (_config.Restrict || !RulesAllow(destination, port)) return OutboundVerdict.Denied;
        host = destination.ToIPAddress();
        return OutboundVerdict.Mapped;
    }

    private bool RulesAllow(IPv4Address destination, int port) => RulesAllow(Nat.FlowAddress.FromIPv4(destination), port);

    private bool RulesAllow(Nat.FlowAddress destination, int port)
    {
        var rules = _config.OutboundRules;
        for (int i = 0; i < rules.Count; i++)
            if (rules[i].Matches(destination, port)) return rules[i].Allow;
        return true;
    }

    private bool IsHostOwn(IPv4Address destination)
    {
        long now = Environment.TickCount64;
        if (!_ownAddressesKnown || now - _ownAddressesRead > HostAddressRefreshMs)
        {
            var list = new List<uint>();
            foreach (var a in _hostAddresses())
                if (a.AddressFamily == AddressFamily.InterNetwork) list.Add(IPv4Address.From(a).Value);
                else if (a.IsIPv4MappedToIPv6) list.Add(IPv4Address.From(a.MapToIPv4()).Value);
            _ownAddresses = list.ToArray();
            _ownAddressesRead = now;
            _ownAddressesKnown = true;
        }
        return Array.IndexOf(_ownAddresses, destination.Value) >= 0;
    }

    private static IReadOnlyList<IPAddress> ReadHostAddresses()
    {
        var result = new List<IPAddress>();
        try
        {
            foreach (var nic in NetworkInterface.GetAllNetworkInterfaces())
                foreach (var u in nic.GetIPProperties().UnicastAddresses)
                    result.Add(u.Address);
        }
        catch (NetworkInformationException)
        {
        }
        return result;
    }

    /// <summary>The nameservers of a resolv.conf file; IPv4 only, port 53.</summary>
    public static IPEndPoint[] ReadResolvConf(string path)
    {
        var result = new List<IPEndPoint>();
        try
        {
            foreach (var line in File.ReadLines(path))
            {
                var parts = line.Split((char[]?)null, StringSplitOptions.RemoveEmptyEntries);
                if (parts.Length >= 2 && parts[0] == "nameserver" && IPAddress.TryParse(parts[1], out var a)
                    && a.AddressFamily == AddressFamily.InterNetwork)
                    result.Add(new IPEndPoint(a, 53));
            }
        }
        catch (IOException) { }
        catch (UnauthorizedAccessException) { }
        return result.ToArray();
    }
}
