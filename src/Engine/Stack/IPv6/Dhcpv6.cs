using Emunet.Engine.Diagnostics;
using Emunet.Engine.Wire;
using Microsoft.Extensions.Logging;

namespace Emunet.Engine.Stack.IPv6;

/// <summary>
/// Stateless DHCPv6 (RFC 8415 §6.1, §18.2.6): an Information-request is answered with a Reply carrying the DNS relay
/// (RFC 3646) and the server's DUID. Addresses come from SLAAC, so a Solicit for one is answered with no offer:
/// an Advertise whose status is NoAddrsAvail (RFC 8415 §18.3.9) is not sent either; the client goes on without.
/// Owner thread only.
/// </summary>
internal sealed class Dhcpv6
{
    /// <summary>RFC 8415 §21.23: how long the client may keep the information (a day).</summary>
    public const uint InformationRefreshSeconds = 86_400;
    private const int DuidLength = 10;   // DUID-LL (RFC 8415 §11.4): type 3, hardware type 1, MAC
    private const int MaxClientIdLength = 130;   // RFC 8415 §11.1: a DUID is at most 128 bytes plus its type

    private readonly IPv6Stack _ip;
    private readonly NetworkConfig _config;
    private readonly Counters _counters;

    public Dhcpv6(IPv6Stack ip, NetworkConfig config, Counters counters, ILogger logger)
    {
        _ip = ip;
        _config = config;
        _counters = counters;
        _ = logger;
    }

    public long RepliesSent { get; private set; }

    /// <summary>Takes a UDP datagram to port 547 whose checksum was checked.</summary>
    public void OnDatagram(in IPv6Packet packet, in UdpDatagram datagram)
    {
        if (!Dhcpv6Message.TryParse(datagram.Payload, out var message)) { _counters.Drop(DropReason.Dhcpv6Malformed); return; }
        if (message.MessageType != Dhcpv6Message.TypeInformationRequest) { _counters.Drop(DropReason.NotForUs); return; }
        // RFC 8415 §16.12: an Information-request naming another server is not for us; a client id is optional.
        if (message.TryGetOption(Dhcpv6Message.OptionServerId, out var serverId))
        {
            Span<byte> ours = stackalloc byte[DuidLength];
            WriteDuid(ours);
            if (!serverId.SequenceEqual(ours)) { _counters.Drop(DropReason.NotForUs); return; }
        }
        bool hasClientId = message.TryGetOption(Dhcpv6Message.OptionClientId, out var clientId);
        if (hasClientId && clientId.Length > MaxClientIdLength) { _counters.Drop(DropReason.Dhcpv6Malformed); return; }
        int clientIdLength = hasClientId ? Dhcpv6Message.OptionHeaderLength + clientId.Length : 0;
        int length = UdpDatagram.HeaderLength + Dhcpv6Message.HeaderLength
            + Dhcpv6Message.OptionHeaderLength + DuidLength
            + clientIdLength
            + Dhcpv6Message.OptionHeaderLength + IPv6Address.Length
            + Dhcpv6Message.OptionHeaderLength + 4;
        var source = _config.IPv6RouterLinkLocal;
        var destination = packet.Source;
        var outbound = _ip.BeginPacket(source, destination, IPv6Packet.NextHeaderUdp, length);
        if (outbound.IsEmpty) return;
        var udp = outbound.Payload[..length];
        var body = udp[UdpDatagram.HeaderLength..];
        int at = Dhcpv6Message.WriteHeader(body, Dhcpv6Message.TypeReply, message.TransactionId);
        at += Dhcpv6Message.WriteOptionHeader(body[at..], Dhcpv6Message.OptionServerId, DuidLength);
        WriteDuid(body[at..]);
        at += DuidLength;
        if (hasClientId) at += Dhcpv6Message.WriteOption(body[at..], Dhcpv6Message.OptionClientId, clientId);
        at += Dhcpv6Message.WriteOptionHeader(body[at..], Dhcpv6Message.OptionDnsServers, IPv6Address.Length);
        _config.IPv6Dns.Write(body[at..]);
        at += IPv6Address.Length;
        at += Dhcpv6Message.WriteOptionHeader(body[at..], Dhcpv6Message.OptionInformationRefreshTime, 4);
        System.Buffers.Binary.BinaryPrimitives.WriteUInt32BigEndian(body[at..], InformationRefreshSeconds);
        IPv6Packet.WriteUdpHeader(udp, source, destination, Dhcpv6Message.ServerPort, datagram.SourcePort, length);
        outbound.Commit(length);
        RepliesSent++;
    }

    private void WriteDuid(Span<byte> buffer)
    {
        buffer[0] = 0; buffer[1] = 3;   // DUID-LL
        buffer[2] = 0; buffer[3] = 1;   // Ethernet
        _config.GatewayMac.Write(buffer[4..]);
    }
}
