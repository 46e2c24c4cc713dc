using System.Net;
using Emunet.Engine.Wire;

namespace Emunet.Engine.Stack;

/// <summary>
/// Where a guest's outbound flow goes on the host (the NAT rule, shared by UDP, TCP and ICMP):
/// the gateway is the host's loopback, the DNS address is the upstream resolver (port 53 only),
/// other addresses of the guest network reach nothing, anything else is itself.
/// </summary>
internal sealed class AddressMap
{
    private readonly NetworkConfig _config;
    private readonly IPEndPoint[] _dnsUpstream;

    public AddressMap(NetworkConfig config)
    {
        _config = config;
        _dnsUpstream = config.DnsUpstream.Count > 0 ? config.DnsUpstream.ToArray() : ReadResolvConf("/etc/resolv.conf");
    }

    public IReadOnlyList<IPEndPoint> DnsUpstream => _dnsUpstream;

    /// <summary>The host address for a guest destination, or false when the guest may not reach it.</summary>
    public bool TryMapOutbound(IPv4Address destination, int port, out IPAddress host, out int hostPort)
    {
        hostPort = port;
        host = IPAddress.None;
        if (destination == _config.Gateway)
        {
            if (!_config.MapGatewayToLoopback) return false;
            host = IPAddress.Loopback;
            return true;
        }
        if (destination == _config.Dns)
        {
            if (port != 53 || _dnsUpstream.Length == 0) return false;
            host = _dnsUpstream[0].Address;
            hostPort = _dnsUpstream[0].Port;
            return true;
        }
        if (destination.InSubnet(_config.Network, _config.PrefixLength) || destination.IsBroadcast || destination.IsMulticast
            || destination == IPv4Address.Any)
            return false;
        host = destination.ToIPAddress();
        return true;
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
                    && a.AddressFamily == System.Net.Sockets.AddressFamily.InterNetwork)
                    result.Add(new IPEndPoint(a, 53));
            }
        }
        catch (IOException) { }
        catch (UnauthorizedAccessException) { }
        return result.ToArray();
    }
}
