using Emunet.Engine.Diagnostics;
using Emunet.Engine.Runtime;
using Emunet.Engine.Wire;

namespace Emunet.Engine.Stack.IPv6;

/// <summary>
/// ICMPv6 (RFC 4443) apart from Neighbor Discovery: echo requests to Emunet's own addresses are answered here
/// (§4.2); echo to any other unicast address is relayed through a host ICMPv6 ping socket by <see cref="Icmp"/> (the
/// flow table and outbound policy IPv4's echo uses), and what the relay refuses (the policy, or a host without ping
/// sockets) is answered with destination unreachable, administratively prohibited (§3.1 code 1).
/// Errors toward the guest follow §2.4: never about an error, a multicast destination or an unspecified source;
/// as much of the invoking packet as fits in the minimum MTU; and no more than <see cref="ErrorBurst"/> at once,
/// refilled at <see cref="ErrorsPerSecond"/> (§2.4 (f), a token bucket as Linux uses). Owner thread only.
/// </summary>
internal sealed class Icmpv6
{
    public const int ErrorsPerSecond = 10;
    public const int ErrorBurst = 10;

    private readonly EventLoop _loop;
    private readonly IPv6Stack _ip;
    private readonly Icmp _relay;
    private readonly NetworkConfig _config;
    private readonly Counters _counters;
    private int _tokens = ErrorBurst;
    private long _refilledMs;

    public Icmpv6(EventLoop loop, IPv6Stack ip, Icmp relay, NetworkConfig config, Counters counters)
    {
        _loop = loop;
        _ip = ip;
        _relay = relay;
        _config = config;
        _counters = counters;
    }

    public long EchoRepliesSent { get; private set; }
    public long ErrorsSent { get; private set; }

    /// <summary>Takes an ICMPv6 message that is not Neighbor Discovery, checksum checked, from a unicast guest source.</summary>
    public void OnMessage(in IPv6Packet packet, in Icmpv6Packet message)
    {
        if (message.IsError || message.Type == Icmpv6Packet.TypeEchoReply) return;   // nothing of ours to correct
        if (message.Type != Icmpv6Packet.TypeEchoRequest) { _counters.Drop(DropReason.IcmpUnsupported); return; }
        var destination = packet.Destination;
        if (_config.IsOwnAddress(destination)) { EchoReply(destination, packet.Source, in message); return; }
        if (destination.IsMulticast)
        {
            // RFC 4443 §4.2: an echo to a group may be answered from a unicast address of the receiver.
            if (destination == IPv6Address.AllNodes || destination == IPv6Address.AllRouters)
                EchoReply(_config.IPv6RouterLinkLocal, packet.Source, in message);
            return;
        }
        if (message.Code != 0) { _counters.Drop(DropReason.IcmpUnsupported); return; }
        if (IPv6Stack.IsIPv4Mapped(destination))
        {
            // Never routed (RFC 4038 §4.2); the flow table would take it for IPv4.
            _counters.Drop(DropReason.IPv6MappedDestination);
            SendError(Icmpv6Packet.TypeDestinationUnreachable, Icmpv6Packet.CodeAdministrativelyProhibited, 0, in packet);
            return;
        }
        switch (_relay.OnEcho6(in packet, in message))
        {
            case Icmp.EchoOutcome.Refused:
                SendError(Icmpv6Packet.TypeDestinationUnreachable, Icmpv6Packet.CodeAdministrativelyProhibited, 0, in packet);
                break;
            case Icmp.EchoOutcome.Unreachable:
                SendError(Icmpv6Packet.TypeDestinationUnreachable, Icmpv6Packet.CodeAddressUnreachable, 0, in packet);
                break;
        }
    }

    private void EchoReply(IPv6Address source, IPv6Address destination, in Icmpv6Packet request)
    {
        int length = request.Bytes.Length;
        if (length > _ip.MaxPayload) { _counters.Drop(DropReason.IcmpMalformed); return; }
        var packet = _ip.BeginPacket(source, destination, IPv6Packet.NextHeaderIcmpv6, length);
        if (packet.IsEmpty) return;
        var reply = packet.Payload[..length];
        request.Bytes.CopyTo(reply);
        reply[Icmpv6Packet.Offsets.Type] = Icmpv6Packet.TypeEchoReply;
        reply[Icmpv6Packet.Offsets.Code] = 0;
        Icmpv6Packet.FinishChecksum(reply, source, destination);
        packet.Commit(length);
        EchoRepliesSent++;
    }

    /// <summary>
    /// Sends an ICMPv6 error about <paramref name="invoking"/> (a packet from the guest) if RFC 4443 §2.4 allows one
    /// and the rate limit has a token; <paramref name="field"/> is the MTU or pointer word.
    /// </summary>
    public void SendError(byte type, byte code, uint field, in IPv6Packet invoking)
    {
        var source = invoking.Source;
        // §2.4 (e): not about an error message, nor to a source that is not one node's; the multicast exception is
        // packet too big only.
        if (source.IsUnspecified || source.IsMulticast) return;
        if (invoking.Destination.IsMulticast && type != Icmpv6Packet.TypePacketTooBig) return;
        if (IsErrorMessage(in invoking)) return;
        if (!TakeToken()) { _counters.Drop(DropReason.Icmpv6ErrorRateLimited); return; }
        // §2.4 (c): as much of the invoking packet as fits without the error exceeding the minimum MTU.
        int quoted = Math.Min(invoking.Bytes.Length, IPv6Packet.MinimumMtu - IPv6Packet.HeaderLength - Icmpv6Packet.HeaderLength);
        int length = Icmpv6Packet.HeaderLength + quoted;
        // The error comes from the address the guest sent to when it is ours, else from the router.
        var to = invoking.Destination;
        var from = to.IsMulticast || (to.IsLinkLocal && !_config.IsOwnAddress(to)) ? _config.IPv6RouterLinkLocal : to;
        var packet = _ip.BeginPacket(from, source, IPv6Packet.NextHeaderIcmpv6, length);
        if (packet.IsEmpty) return;
        var message = packet.Payload[..length];
        invoking.Bytes[..quoted].CopyTo(message[Icmpv6Packet.HeaderLength..]);
        Icmpv6Packet.WriteHeader(message, type, code, field, from, source);
        packet.Commit(length);
        ErrorsSent++;
    }

    private static bool IsErrorMessage(in IPv6Packet packet)
    {
        if (IPv6ExtensionHeaders.Walk(packet.NextHeader, packet.Payload, out var chain) != IPv6ExtensionHeaders.WalkError.None)
            return true;   // cannot tell: send nothing
        if (chain.UpperLayer != IPv6Packet.NextHeaderIcmpv6 || chain.FragmentOffsetBytes != 0) return false;
        var upper = packet.Payload[chain.UpperLayerOffset..];
        // §2.4 (e.1, e.2): errors and redirects get none.
        return upper.Length < 1 || upper[0] < 128 || upper[0] == Icmpv6Packet.TypeRedirect;
    }

    private bool TakeToken()
    {
        long now = _loop.NowMs;
        long refill = (now - _refilledMs) * ErrorsPerSecond / 1000;
        if (refill > 0)
        {
            _tokens = (int)Math.Min(ErrorBurst, _tokens + refill);
            _refilledMs = now;
        }
        if (_tokens == 0) return false;
        _tokens--;
        return true;
    }
}
