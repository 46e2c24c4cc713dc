using Emunet.Engine.Link;
using Emunet.Engine.Diagnostics;
using Emunet.Engine.Wire;

namespace Emunet.Engine.Stack;

/// <summary>
/// ARP (RFC 826) for the guest network. Emunet answers with its one MAC address for the gateway, the DNS relay and,
/// like QEMU's slirp with its virtual hosts, every other address of the subnet except the guest's own, so the
/// guest can reach any of them at layer 2 and the NAT decides what they mean. The guest's IPv4 address is learned
/// from the sender fields. Owner thread only.
/// </summary>
internal sealed class Arp
{
    private readonly NetStack _stack;
    private readonly IFrameDevice _device;
    private readonly NetworkConfig _config;
    private readonly Counters _counters;

    public Arp(NetStack stack, IFrameDevice device, NetworkConfig config, Counters counters)
    {
        _stack = stack;
        _device = device;
        _config = config;
        _counters = counters;
    }

    public long RepliesSent { get; private set; }

    public void OnPacket(ReadOnlySpan<byte> bytes)
    {
        if (!ArpPacket.TryParse(bytes, out var arp)) { _counters.Drop(DropReason.ArpMalformed); return; }
        var senderIp = arp.SenderProtocolAddress;
        var targetIp = arp.TargetProtocolAddress;
        // RFC 5227 §2.1.1: a probe has sender 0.0.0.0; only a real sender address is learned.
        // Nor an address of another link's guest (the flow table tells links' flows apart by guest address).
        if (senderIp != IPv4Address.Any && IsHostOfSubnet(senderIp) && !_config.IsOwnAddress(senderIp) && !_stack.IsOtherLinksGuest(senderIp))
            _stack.GuestAddress = senderIp;
        if (arp.Operation != ArpPacket.OperationRequest) return;
        // A gratuitous announcement (sender == target) asks nothing.
        if (senderIp == targetIp) return;
        if (!ShouldAnswer(targetIp)) { _counters.Drop(DropReason.NotForUs); return; }
        SendReply(arp.SenderHardwareAddress, senderIp, targetIp);
    }

    /// <summary>True for the addresses Emunet claims: gateway, DNS, and every subnet host but the guest's.</summary>
    public bool ShouldAnswer(IPv4Address target)
    {
        if (_config.IsOwnAddress(target)) return true;
        if (!IsHostOfSubnet(target)) return false;
        return target != _config.Guest && target != _stack.GuestAddress;
    }

    private bool IsHostOfSubnet(IPv4Address a) =>
        a.InSubnet(_config.Network, _config.PrefixLength) && a != _config.Network && a != _config.BroadcastAddress;

    private void SendReply(MacAddress requesterMac, IPv4Address requesterIp, IPv4Address answeredIp)
    {
        const int length = EthernetFrame.HeaderLength + ArpPacket.Length;
        var lease = _device.BeginTransmit(length);
        if (lease.IsEmpty || lease.Buffer.Length < length) { _counters.Drop(DropReason.TransmitQueueFull); return; }
        var frame = lease.Buffer;
        // RFC 826: the reply goes to the requester, with the answered address as sender.
        EthernetFrame.WriteHeader(frame, requesterMac, _config.GatewayMac, EthernetFrame.EtherTypeArp);
        ArpPacket.Write(frame[EthernetFrame.HeaderLength..], ArpPacket.OperationReply, _config.GatewayMac, answeredIp,
            requesterMac, requesterIp);
        lease.Commit(length);
        _stack.CountSent(length);
        RepliesSent++;
    }
}
