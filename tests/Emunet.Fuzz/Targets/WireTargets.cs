using Emunet.Engine.Stack;
using Emunet.Engine.Wire;

namespace Emunet.Fuzz.Targets;

/// <summary>
/// The <c>dhcp</c> and <c>dns</c> targets: one input is one UDP payload. It goes through the wire parser with every
/// accessor read, then, inside a guest datagram, through the stack to the DHCP server or the DNS relay.
/// </summary>
internal static class WireTargets
{
    public static void Dhcp(ReadOnlySpan<byte> input)
    {
        bool parsed = DhcpMessage.TryParse(input, out var message);
        var type = DhcpMessage.MessageType.None;
        if (parsed)
        {
            type = message.Type;
            _ = (message.Op, message.HardwareType, message.HardwareLength, message.TransactionId, message.BroadcastRequested,
                message.ClientAddress, message.YourAddress, message.ServerAddress, message.RelayAddress, message.ClientHardwareAddress);
            // Each option takes at least two bytes of the options area, so the walk is bounded by its length.
            int budget = input.Length - DhcpMessage.Offsets.Options, count = 0;
            foreach (var option in message.Options)
            {
                if (++count > budget) throw new FuzzInvariantException("The DHCP option walk did not end.");
                message.TryGetOption(option.Code, out _);
                message.TryGetAddressOption(option.Code, out _);
            }
        }

        using var rig = new StackRig();
        rig.LearnGuestMac();
        int before = rig.Device.FramesSent;
        rig.Stack.OnFrame(GuestPackets.Udp(MacAddress.Broadcast, IPv4Address.Any, Engine.Stack.Dhcp.ClientPort,
            IPv4Address.Broadcast, Engine.Stack.Dhcp.ServerPort, input));
        // RFC 2131 §4.3.1: a well-formed DISCOVER is always answered with an OFFER.
        bool discover = parsed && input.Length <= GuestPackets.MaxUdpPayload && type == DhcpMessage.MessageType.Discover
            && message.Op == DhcpMessage.OpRequest && message.HardwareType == 1 && message.HardwareLength == 6;
        if (discover && rig.Device.FramesSent != before + 1)
            throw new FuzzInvariantException("A well-formed DHCPDISCOVER drew no OFFER.");
    }

    public static void Dns(ReadOnlySpan<byte> input)
    {
        if (DnsMessage.TryParse(input, out var message))
        {
            _ = (message.Id, message.IsResponse, message.Opcode, message.IsTruncated, message.RecursionDesired,
                message.ResponseCode, message.QuestionCount, message.AnswerCount, message.AuthorityCount,
                message.AdditionalCount, message.Body.Length);
        }

        using var rig = new StackRig();
        rig.LearnGuestMac();
        var config = StackRig.Config;
        rig.Stack.OnFrame(GuestPackets.Udp(config.GatewayMac, config.Guest, 5353, config.Dns, Udp.DnsPort, input));
        // RFC 1035 §4.1.1: what is shorter than a header is not DNS and must not reach the upstream.
        if (input.Length < DnsMessage.HeaderLength && rig.Stack.Udp.FlowCount != 0)
            throw new FuzzInvariantException("The DNS relay opened a flow for a message shorter than a DNS header.");
    }
}
