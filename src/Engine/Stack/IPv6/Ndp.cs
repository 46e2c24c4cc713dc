using Emunet.Engine.Diagnostics;
using Emunet.Engine.Runtime;
using Emunet.Engine.Wire;

namespace Emunet.Engine.Stack.IPv6;

/// <summary>
/// Neighbor Discovery (RFC 4861) as the router of the guest's link. Answers neighbor solicitations for the router's
/// link-local address, the host alias and the DNS relay; learns the guest's addresses from its solicitations,
/// duplicate address detection included (RFC 4862 §5.4); sends router advertisements on solicitation and
/// periodically, with the prefix (on-link and autonomous, so the guest configures itself by SLAAC), the link MTU and
/// the DNS relay (RDNSS, RFC 8106). Owner thread only.
/// </summary>
internal sealed class Ndp : ITimerClient
{
    /// <summary>RFC 4861 §6.2.1 MaxRtrAdvInterval lies between 4 and 1800 s; every 10 minutes is its default.</summary>
    public const int PeriodicIntervalMs = 600_000;
    /// <summary>RFC 4861 §10 MIN_DELAY_BETWEEN_RAS: multicast advertisements at most this often.</summary>
    public const int MinDelayBetweenAdvertisementsMs = 3_000;
    /// <summary>Router lifetime: 3 x MaxRtrAdvInterval (RFC 4861 §6.2.1 default).</summary>
    public const ushort RouterLifetimeSeconds = 1800;
    /// <summary>Prefix lifetimes (RFC 4861 §6.2.1 defaults: 30 days valid, 7 days preferred).</summary>
    public const uint ValidLifetimeSeconds = 2_592_000;
    public const uint PreferredLifetimeSeconds = 604_800;
    /// <summary>RFC 8106 §5.1: at least MaxRtrAdvInterval; three times it, as the router lifetime.</summary>
    public const uint DnsLifetimeSeconds = 1800;

    private const int AdvertisementLength = NdpMessage.RouterAdvertisementLength + NdpOptionReader.LinkLayerAddressLength
        + NdpOptionReader.PrefixInformationLength + NdpOptionReader.MtuLength + 8 + IPv6Address.Length;
    private const int NeighborAdvertisementLength = NdpMessage.NeighborMessageLength + NdpOptionReader.LinkLayerAddressLength;

    private readonly EventLoop _loop;
    private readonly IPv6Stack _ip;
    private readonly NetworkConfig _config;
    private readonly Counters _counters;
    private readonly IPv6Address[] _dnsServers;
    private long _lastAdvertisementMs = long.MinValue / 2;
    private long _nextAdvertisementMs = long.MaxValue;

    public Ndp(EventLoop loop, IPv6Stack ip, NetworkConfig config, Counters counters)
    {
        _loop = loop;
        _ip = ip;
        _config = config;
        _counters = counters;
        _dnsServers = new[] { config.IPv6Dns };
    }

    public long AdvertisementsSent { get; private set; }
    public long NeighborAdvertisementsSent { get; private set; }

    /// <summary>Takes a Neighbor Discovery message (types 133-137) whose ICMPv6 checksum was checked.</summary>
    public void OnMessage(in IPv6Packet packet, in Icmpv6Packet message)
    {
        // RFC 4861 §6.1.1, §7.1.1: hop limit 255 (not forwarded), code 0, options well formed.
        if (packet.HopLimit != NdpMessage.RequiredHopLimit || message.Code != 0) { _counters.Drop(DropReason.NdpInvalid); return; }
        var options = new NdpOptionReader(NdpMessage.OptionsOf(in message));
        MacAddress? sourceMac = null;
        while (options.TryNext(out var type, out var option))
            if (type == NdpOptionReader.TypeSourceLinkLayerAddress && NdpOptionReader.TryReadLinkLayerAddress(option, out var mac)) sourceMac = mac;
        if (options.Malformed) { _counters.Drop(DropReason.NdpInvalid); return; }
        var source = packet.Source;
        switch (message.Type)
        {
            case Icmpv6Packet.TypeRouterSolicitation:
                // §6.1.1: at least 8 bytes; from :: there is no source link-layer address option.
                if (message.Bytes.Length < NdpMessage.RouterSolicitationLength || (source.IsUnspecified && sourceMac is not null))
                {
                    _counters.Drop(DropReason.NdpInvalid);
                    return;
                }
                SolicitedAdvertisement();
                break;
            case Icmpv6Packet.TypeNeighborSolicitation:
                OnNeighborSolicitation(in packet, in message, sourceMac);
                break;
            case Icmpv6Packet.TypeNeighborAdvertisement:
                // The guest announcing or defending its address (RFC 4861 §7.2.6): learn it.
                if (message.Bytes.Length < NdpMessage.NeighborMessageLength) { _counters.Drop(DropReason.NdpInvalid); return; }
                LearnTarget(NdpMessage.Target(in message));
                break;
            default:
                // A router advertisement or redirect from the guest: not a router's to take from a host.
                _counters.Drop(DropReason.NotForUs);
                break;
        }
    }

    private void OnNeighborSolicitation(in IPv6Packet packet, in Icmpv6Packet message, MacAddress? sourceMac)
    {
        if (message.Bytes.Length < NdpMessage.NeighborMessageLength) { _counters.Drop(DropReason.NdpInvalid); return; }
        var target = NdpMessage.Target(in message);
        var source = packet.Source;
        // §7.1.1: the target is never multicast; from :: (DAD) the destination is a solicited-node group and no
        // source link-layer address is given.
        if (target.IsMulticast) { _counters.Drop(DropReason.NdpInvalid); return; }
        bool dad = source.IsUnspecified;
        if (dad && (sourceMac is not null || packet.Destination != target.SolicitedNode)) { _counters.Drop(DropReason.NdpInvalid); return; }
        if (!_config.IsOwnAddress(target))
        {
            // RFC 4862 §5.4.2: a probe for a tentative address tells which address the guest is about to use.
            if (dad) LearnTarget(target);
            return;
        }
        if (dad)
        {
            // The guest probes an address of ours: defend it to all nodes, not solicited (RFC 4861 §7.2.4).
            SendNeighborAdvertisement(IPv6Address.AllNodes, target, NdpMessage.NaFlagRouter | NdpMessage.NaFlagOverride);
            return;
        }
        SendNeighborAdvertisement(source, target, NdpMessage.NaFlagRouter | NdpMessage.NaFlagSolicited | NdpMessage.NaFlagOverride);
    }

    private void LearnTarget(IPv6Address target)
    {
        if (_config.IsOwnAddress(target)) return;
        if (target.IsLinkLocal) _ip.GuestLinkLocal = target;
        else if (_ip.IsInPrefix(target)) _ip.GuestAddress = target;
    }

    private void SendNeighborAdvertisement(IPv6Address destination, IPv6Address target, byte flags)
    {
        var packet = _ip.BeginPacket(target, destination, IPv6Packet.NextHeaderIcmpv6, NeighborAdvertisementLength, NdpMessage.RequiredHopLimit);
        if (packet.IsEmpty) return;
        var message = packet.Payload[..NeighborAdvertisementLength];
        NdpMessage.WriteNeighborAdvertisement(message, flags, target);
        NdpOptionReader.WriteLinkLayerAddress(message[NdpMessage.NeighborMessageLength..], NdpOptionReader.TypeTargetLinkLayerAddress, _config.GatewayMac);
        Icmpv6Packet.FinishChecksum(message, target, destination);
        packet.Commit(NeighborAdvertisementLength);
        NeighborAdvertisementsSent++;
    }

    /// <summary>
    /// RFC 4861 §6.2.6: answer a solicitation with a multicast advertisement, but no sooner than
    /// <see cref="MinDelayBetweenAdvertisementsMs"/> after the last one (a burst of solicitations gets one answer).
    /// </summary>
    private void SolicitedAdvertisement()
    {
        long now = _loop.NowMs;
        long earliest = _lastAdvertisementMs + MinDelayBetweenAdvertisementsMs;
        if (now >= earliest) { SendAdvertisement(now); return; }
        if (earliest < _nextAdvertisementMs)
        {
            _nextAdvertisementMs = earliest;
            _loop.WakeAt(earliest);
        }
    }

    public long OnTimer(long nowMs)
    {
        if (_nextAdvertisementMs == long.MaxValue) return long.MaxValue;
        if (nowMs >= _nextAdvertisementMs) SendAdvertisement(nowMs);
        return _nextAdvertisementMs;
    }

    private void SendAdvertisement(long now)
    {
        _lastAdvertisementMs = now;
        // RFC 4861 §6.2.4: periodic ones go on while a guest is there; the next one is due an interval later.
        _nextAdvertisementMs = now + PeriodicIntervalMs;
        _loop.WakeAt(_nextAdvertisementMs);
        var destination = IPv6Address.AllNodes;
        var source = _config.IPv6RouterLinkLocal;
        var packet = _ip.BeginPacket(source, destination, IPv6Packet.NextHeaderIcmpv6, AdvertisementLength, NdpMessage.RequiredHopLimit);
        if (packet.IsEmpty) return;
        var message = packet.Payload[..AdvertisementLength];
        // O flag: other configuration (DNS) is also served by stateless DHCPv6 (RFC 4861 §4.2, RFC 8415 §6.1).
        NdpMessage.WriteRouterAdvertisement(message, 64, NdpMessage.RaFlagOther, RouterLifetimeSeconds, 0, 0);
        int at = NdpMessage.RouterAdvertisementLength;
        at += NdpOptionReader.WriteLinkLayerAddress(message[at..], NdpOptionReader.TypeSourceLinkLayerAddress, _config.GatewayMac);
        at += NdpOptionReader.WritePrefixInformation(message[at..], _config.IPv6Prefix, (byte)_config.IPv6PrefixLength,
            NdpOptionReader.PrefixFlagOnLink | NdpOptionReader.PrefixFlagAutonomous, ValidLifetimeSeconds, PreferredLifetimeSeconds);
        at += NdpOptionReader.WriteMtu(message[at..], (uint)_ip.LinkMtu);
        at += NdpOptionReader.WriteRecursiveDnsServers(message[at..], DnsLifetimeSeconds, _dnsServers);
        Icmpv6Packet.FinishChecksum(message[..at], source, destination);
        packet.Commit(at);
        AdvertisementsSent++;
    }

    /// <summary>No guest: no periodic advertisements until the next solicitation.</summary>
    public void OnGuestGone()
    {
        _nextAdvertisementMs = long.MaxValue;
        _lastAdvertisementMs = long.MinValue / 2;
    }
}
