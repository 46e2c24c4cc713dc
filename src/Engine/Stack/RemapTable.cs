using System.Net;
using Emunet.Engine.Wire;

namespace Emunet.Engine.Stack;

/// <summary>
/// The guest-to-host remaps of one engine (<see cref="GuestRemap"/>), consulted by <see cref="AddressMap"/> before
/// its NAT rule and policy when a guest flow opens. Owner thread only. At most <see cref="MaxRemaps"/>; a remap's guest
/// side must be an address of the guest network that is not the guest's own nor the DNS relay's.
/// </summary>
internal sealed class RemapTable
{
    /// <summary>Remaps at once.</summary>
    public const int MaxRemaps = 256;

    private readonly NetworkConfig _config;
    private readonly Dictionary<(RemapProtocol, uint, int), GuestRemap> _remaps = new();

    public RemapTable(NetworkConfig config) => _config = config;

    public int Count => _remaps.Count;

    /// <summary>Adds a remap.</summary>
    /// <exception cref="ArgumentException">Its guest side is not a free address of the guest network.</exception>
    /// <exception cref="InvalidOperationException">One exists for that protocol, address and port, or the table is full.</exception>
    public void Add(GuestRemap remap)
    {
        var a = remap.GuestAddress;
        if (!a.InSubnet(_config.Network, _config.PrefixLength) || a == _config.Network || a == _config.BroadcastAddress)
            throw new ArgumentException($"A remap's guest side must be an address of the guest network {_config.Network}/{_config.PrefixLength}, not {a}.");
        if (a == _config.Guest) throw new ArgumentException($"{a} is the guest's own address; a remap takes an address the guest dials out to, such as {_config.Gateway}.");
        if (a == _config.Dns) throw new ArgumentException($"{a} is the DNS relay's address; pick another, such as {_config.Gateway} or {new IPv4Address(_config.Network.Value | 100)}.");
        var key = (remap.Protocol, a.Value, remap.GuestPort);
        if (_remaps.TryGetValue(key, out var existing))
            throw new InvalidOperationException($"The guest's {remap.ProtocolName} {remap.GuestEndPoint} is remapped already (to {existing.Host}); remove that remap first.");
        if (_remaps.Count >= MaxRemaps) throw new InvalidOperationException($"An instance holds at most {MaxRemaps} remaps.");
        _remaps.Add(key, remap);
    }

    /// <summary>Removes the remap of that guest side; returns it, or null if there is none.</summary>
    public GuestRemap? Remove(RemapProtocol protocol, IPv4Address guestAddress, int guestPort) =>
        _remaps.Remove((protocol, guestAddress.Value, guestPort), out var removed) ? removed : null;

    public IReadOnlyList<GuestRemap> List()
    {
        var list = new List<GuestRemap>(_remaps.Values);
        list.Sort((x, y) => x.GuestAddress.Value != y.GuestAddress.Value ? x.GuestAddress.Value.CompareTo(y.GuestAddress.Value)
            : x.GuestPort != y.GuestPort ? x.GuestPort.CompareTo(y.GuestPort) : x.Protocol.CompareTo(y.Protocol));
        return list;
    }

    /// <summary>The host end a guest flow to <paramref name="destination"/>:<paramref name="port"/> is remapped to.</summary>
    public bool TryFind(RemapProtocol protocol, IPv4Address destination, int port, out IPEndPoint host)
    {
        if (_remaps.Count > 0 && _remaps.TryGetValue((protocol, destination.Value, port), out var remap))
        {
            host = remap.Host;
            return true;
        }
        host = null!;
        return false;
    }
}
