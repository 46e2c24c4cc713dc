using Emunet.Engine.Diagnostics;
using Emunet.Engine.Wire;
using Microsoft.Extensions.Logging;

namespace Emunet.Engine.Stack;

/// <summary>
/// A DHCP server for one guest (RFC 2131, options RFC 2132). There is one address to give, the configured guest
/// address, so there is no pool: DISCOVER is answered with an OFFER of it, a REQUEST for it with an ACK and a REQUEST
/// for anything else with a NAK; RELEASE and DECLINE are noted; INFORM gets the configuration without a lease. The
/// server identifier is the gateway. Owner thread only.
/// </summary>
internal sealed class Dhcp
{
    public const ushort ServerPort = 67;
    public const ushort ClientPort = 68;
    /// <summary>RFC 2131 §2: a client must accept 576-byte messages; replies stay below that.</summary>
    private const int MaxReply = 576 - IPv4Packet.MinHeaderLength - UdpDatagram.HeaderLength;

    private readonly IPacketSender _sender;
    private readonly NetworkConfig _config;
    private readonly Counters _counters;
    private readonly ILogger _logger;

    public Dhcp(IPacketSender sender, NetworkConfig config, Counters counters, ILogger logger)
    {
        _sender = sender;
        _config = config;
        _counters = counters;
        _logger = logger;
    }

    /// <summary>True between an ACK and a RELEASE.</summary>
    public bool IsLeased { get; private set; }
    public long Offers { get; private set; }
    public long Acks { get; private set; }
    public long Naks { get; private set; }

    /// <summary>A datagram to port 67 (broadcast or to the gateway), checked, borrowed for the call.</summary>
    public void OnRequest(in IPv4Packet packet, in UdpDatagram datagram)
    {
        if (!DhcpMessage.TryParse(datagram.Payload, out var request) || request.Op != DhcpMessage.OpRequest
            || request.HardwareType != 1 || request.HardwareLength != 6)
        {
            _counters.Drop(DropReason.DhcpMalformed);
            return;
        }
        switch (request.Type)
        {
            case DhcpMessage.MessageType.Discover:
                Reply(in request, DhcpMessage.MessageType.Offer, _config.Guest);
                Offers++;
                break;
            case DhcpMessage.MessageType.Request:
                OnRequestMessage(in request);
                break;
            case DhcpMessage.MessageType.Release:
                // RFC 2131 §4.3.4.
                IsLeased = false;
                break;
            case DhcpMessage.MessageType.Decline:
                // RFC 2131 §4.3.3: the address is in use elsewhere; with one address there is nothing else to offer.
                IsLeased = false;
                if (_logger.IsEnabled(LogLevel.Warning)) _logger.LogWarning("The guest declined the DHCP address {Address}.", _config.Guest);
                break;
            case DhcpMessage.MessageType.Inform:
                // RFC 2131 §4.3.5: configuration only; no yiaddr, no lease time.
                Reply(in request, DhcpMessage.MessageType.Ack, IPv4Address.Any);
                Acks++;
                break;
            default:
                _counters.Drop(DropReason.DhcpMalformed);
                break;
        }
    }

    private void OnRequestMessage(in DhcpMessage request)
    {
        // RFC 2131 §4.3.2: a REQUEST naming another server means the client chose that one.
        if (request.TryGetAddressOption(DhcpMessage.OptionCode.ServerIdentifier, out var server) && server != _config.Gateway)
            return;
        // SELECTING / INIT-REBOOT carry option 50; RENEWING / REBINDING carry ciaddr.
        var wanted = request.TryGetAddressOption(DhcpMessage.OptionCode.RequestedAddress, out var requested)
            ? requested : request.ClientAddress;
        if (wanted != _config.Guest)
        {
            Reply(in request, DhcpMessage.MessageType.Nak, IPv4Address.Any);
            Naks++;
            return;
        }
        Reply(in request, DhcpMessage.MessageType.Ack, _config.Guest);
        IsLeased = true;
        Acks++;
    }

    private void Reply(in DhcpMessage request, DhcpMessage.MessageType type, IPv4Address yourAddress)
    {
        var clientAddress = request.ClientAddress;
        // RFC 2131 §4.1 (server side): NAK is broadcast; with ciaddr set, unicast to it; with the broadcast bit,
        // broadcast; otherwise unicast to yiaddr at chaddr (the frame goes to the guest MAC either way).
        IPv4Address destination;
        if (type == DhcpMessage.MessageType.Nak) destination = IPv4Address.Broadcast;
        else if (clientAddress != IPv4Address.Any) destination = clientAddress;
        else if (request.BroadcastRequested || yourAddress == IPv4Address.Any) destination = IPv4Address.Broadcast;
        else destination = yourAddress;

        var packet = _sender.BeginPacket(_config.Gateway, destination, IPv4Packet.ProtocolUdp, UdpDatagram.HeaderLength + MaxReply);

        var span = packet.Payload;
        if (span.IsEmpty) { _counters.Drop(DropReason.TransmitQueueFull); return; }
        var body = span[UdpDatagram.HeaderLength..];
        // RFC 2131 Table 3: ciaddr is echoed for INFORM/ACK of a renewal, else 0; xid, flags, giaddr, chaddr echoed.
        var writer = DhcpMessage.WriteHeader(body, DhcpMessage.OpReply, request.TransactionId, request.Flags,
            type == DhcpMessage.MessageType.Ack ? clientAddress : IPv4Address.Any, yourAddress,
            type == DhcpMessage.MessageType.Nak ? IPv4Address.Any : _config.Gateway, request.RelayAddress, request.ClientHardwareAddress);
        writer.AddByte(DhcpMessage.OptionCode.MessageType, (byte)type);
        writer.AddAddress(DhcpMessage.OptionCode.ServerIdentifier, _config.Gateway);
        if (type != DhcpMessage.MessageType.Nak)
        {
            if (yourAddress != IPv4Address.Any)
            {
                uint lease = LeaseSeconds;
                writer.AddUInt32(DhcpMessage.OptionCode.LeaseTime, lease);
                if (lease != uint.MaxValue)
                {
                    // RFC 2131 §4.4.5: T1 = 0.5 and T2 = 0.875 of the lease.
                    writer.AddUInt32(DhcpMessage.OptionCode.RenewalTime, lease / 2);
                    writer.AddUInt32(DhcpMessage.OptionCode.RebindingTime, (uint)(lease * 7UL / 8));
                }
            }
            writer.AddAddress(DhcpMessage.OptionCode.SubnetMask, _config.SubnetMask);
            writer.AddAddress(DhcpMessage.OptionCode.Router, _config.Gateway);
            writer.AddAddress(DhcpMessage.OptionCode.DnsServer, _config.Dns);
            // RFC 2132 §5.1: the MTU option is 16 bits, at least 68.
            writer.AddUInt16(DhcpMessage.OptionCode.InterfaceMtu, (ushort)Math.Clamp(_config.Mtu, 68, ushort.MaxValue));
            writer.AddAddress(DhcpMessage.OptionCode.BroadcastAddress, _config.BroadcastAddress);
        }
        int length = writer.End();
        int udpLength = UdpDatagram.WriteHeader(span, _config.Gateway, destination, ServerPort, ClientPort, length);
        packet.Commit(udpLength);
    }

    private uint LeaseSeconds
    {
        get
        {
            double s = _config.LeaseTime.TotalSeconds;
            // RFC 2132 §9.2: 0xffffffff means infinite.
            if (s >= uint.MaxValue || s < 0) return uint.MaxValue;
            return (uint)s;
        }
    }
}
