using Emunet.Engine.Diagnostics;
using System.Net;
using System.Net.Sockets;
using Emunet.Engine.Stack;
using Emunet.Engine.Wire;

namespace Emunet.Engine.Tests.Stack;

public class IcmpTests
{
    private static readonly byte[] Data = "emunet ping data"u8.ToArray();

    [Theory]
    [InlineData("10.0.2.2")]
    [InlineData("10.0.2.3")]
    public void Echo_to_the_gateway_and_dns_is_answered(string destination)
    {
        using var h = new StackHarness();
        h.Send(GuestFrames.Echo(IPv4Address.Parse(destination), 0x4242, 7, Data));
        var frame = h.Expect();
        var icmp = Oracle.Icmp(frame);
        var ip = (PacketDotNet.IPv4Packet)icmp.ParentPacket;
        Assert.Equal(destination, ip.SourceAddress.ToString());
        Assert.Equal("10.0.2.15", ip.DestinationAddress.ToString());
        Assert.Equal(PacketDotNet.IcmpV4TypeCode.EchoReply, icmp.TypeCode);
        Assert.Equal(0x4242, icmp.Id);
        Assert.Equal(7, icmp.Sequence);
        Assert.Equal(Data, frame.AsSpan(frame.Length - Data.Length).ToArray());
        Assert.Equal(1, h.Stack.Icmp.EchoRepliesSent);
    }

    [Fact]
    public void Bad_checksum_and_unsupported_types_are_counted()
    {
        using var h = new StackHarness();
        var message = GuestFrames.EchoMessage(1, 1, Data);
        message[^1] ^= 0xff;
        h.Send(GuestFrames.IPv4(StackHarness.GuestIp, StackHarness.Gateway, IPv4Packet.ProtocolIcmp, message));
        var timestamp = new byte[20];
        IcmpPacket.WriteHeader(timestamp, 13, 0, 1, 1);
        h.Send(GuestFrames.IPv4(StackHarness.GuestIp, StackHarness.Gateway, IPv4Packet.ProtocolIcmp, timestamp));
        h.Send(GuestFrames.IPv4(StackHarness.GuestIp, StackHarness.Gateway, IPv4Packet.ProtocolIcmp, new byte[4]));
        h.ExpectNone();
        Assert.Equal(2, h.Counters.Drops(DropReason.IcmpMalformed));
        Assert.Equal(1, h.Counters.Drops(DropReason.IcmpUnsupported));
    }

    [Fact]
    public void Refused_ping_sockets_become_destination_unreachable()
    {
        using var h = new StackHarness();
        int attempts = 0;
        h.Stack.Icmp.PingSocketFactory = _ => { attempts++; throw new SocketException((int)SocketError.AccessDenied); };
        h.Send(GuestFrames.Echo(TestNet, 9, 1, Data));
        h.Send(GuestFrames.Echo(TestNet, 9, 2, Data));
        AssertUnreachable(h.Expect(), IcmpPacket.CodeAdministrativelyProhibited, sequence: 1);
        AssertUnreachable(h.Expect(), IcmpPacket.CodeAdministrativelyProhibited, sequence: 2);
        Assert.Equal(2, h.Counters.Drops(DropReason.IcmpPingRefused));
        Assert.Equal(1, attempts);   // the refusal is remembered for a while
    }

    [Fact]
    public void Relayed_echo_replies_get_the_guests_identifier_back()
    {
        // A stand-in for the kernel's ping socket: a UDP socket whose peer answers like a ping socket does, with
        // its own identifier in place of the guest's.
        using var responder = new Socket(AddressFamily.InterNetwork, SocketType.Dgram, ProtocolType.Udp) { ReceiveTimeout = 5000 };
        responder.Bind(new IPEndPoint(IPAddress.Loopback, 0));
        IPAddress? asked = null;
        using var h = new StackHarness();
        h.Stack.Icmp.PingSocketFactory = host =>
        {
            asked = host;
            var s = new Socket(AddressFamily.InterNetwork, SocketType.Dgram, ProtocolType.Udp);
            s.Connect(responder.LocalEndPoint!);
            s.Blocking = false;
            return s;
        };
        h.Start();
        h.Send(GuestFrames.Echo(TestNet, 0x2222, 5, Data)); // the stand-in answers; nothing leaves the machine

        var request = new byte[1000];
        EndPoint from = new IPEndPoint(IPAddress.Any, 0);
        int n = responder.ReceiveFrom(request, ref from);
        Assert.True(IcmpPacket.TryParse(request.AsSpan(0, n), out var sent));
        Assert.Equal(IcmpPacket.TypeEchoRequest, sent.Type);
        Assert.Equal(0x2222, sent.Identifier);
        var reply = request.AsSpan(0, n).ToArray();
        IcmpPacket.WriteHeader(reply, IcmpPacket.TypeEchoReply, 0, 0x9999, 5);
        responder.SendTo(reply, from);

        var icmp = Oracle.Icmp(h.Expect());
        Assert.Equal(PacketDotNet.IcmpV4TypeCode.EchoReply, icmp.TypeCode);
        Assert.Equal(0x2222, icmp.Id);
        Assert.Equal(5, icmp.Sequence);
        Assert.Equal("192.0.2.1", ((PacketDotNet.IPv4Packet)icmp.ParentPacket).SourceAddress.ToString());
        Assert.Equal(IPAddress.Parse("192.0.2.1"), asked);

        var flows = h.Invoke(() => { var l = new List<Emunet.Engine.Stack.Nat.ConnectionInfo>(); h.Stack.Flows.Snapshot(l); return l; });
        Assert.Equal(Emunet.Engine.Stack.Nat.FlowProtocol.Icmp, Assert.Single(flows).Protocol);
        Assert.Equal(0, h.Invoke(() => { h.Stack.Flows.OnTimer(h.Loop.NowMs + Icmp.IdleTimeoutMs + 1); return h.Stack.Icmp.FlowCount; }));
    }

    [Fact]
    public void Echo_to_the_host_outside_the_gateway_alias_is_prohibited_without_a_ping_socket()
    {
        using var h = new StackHarness(new NetworkConfig { DnsUpstream = new[] { new IPEndPoint(IPAddress.Loopback, 9) } });
        int attempts = 0;
        h.Stack.Icmp.PingSocketFactory = _ => { attempts++; throw new SocketException((int)SocketError.AccessDenied); };
        h.Send(GuestFrames.Echo(new IPv4Address(127, 0, 0, 1), 0x7777, 3, Data));
        h.Send(GuestFrames.Echo(new IPv4Address(127, 9, 9, 9), 0x7777, 4, Data));
        AssertUnreachable(h.Expect(), IcmpPacket.CodeAdministrativelyProhibited, sequence: 3);
        AssertUnreachable(h.Expect(), IcmpPacket.CodeAdministrativelyProhibited, sequence: 4);
        Assert.Equal(2, h.Counters.Drops(DropReason.PolicyDenied));
        Assert.Equal(0, attempts);
        // 10.0.2.2 is the host, answered here.
        h.Send(GuestFrames.Echo(StackHarness.Gateway, 0x7777, 5, Data));
        Assert.Equal(PacketDotNet.IcmpV4TypeCode.EchoReply, Oracle.Icmp(h.Expect()).TypeCode);
    }

    [Fact]
    public void Destination_unreachable_quotes_the_original_and_follows_rfc1122()
    {
        using var h = new StackHarness();
        h.Send(GuestFrames.Arp(ArpPacket.OperationRequest, StackHarness.GuestIp, StackHarness.Gateway));
        h.Expect();
        var original = GuestFrames.Udp(StackHarness.GuestIp, 4000, StackHarness.Gateway, 5000, new byte[1000]);
        var ipBytes = original.AsSpan(EthernetFrame.HeaderLength).ToArray();
        Assert.Equal(IPv4Packet.ParseError.None, IPv4Packet.TryParse(ipBytes, out var packet));
        h.Stack.Icmp.SendDestinationUnreachable(IcmpPacket.CodePortUnreachable, in packet);
        var frame = h.Expect();
        var icmp = Oracle.Icmp(frame);
        Assert.Equal(PacketDotNet.IcmpV4TypeCode.UnreachablePort, icmp.TypeCode);
        var ip = (PacketDotNet.IPv4Packet)icmp.ParentPacket;
        Assert.Equal("10.0.2.2", ip.SourceAddress.ToString());
        Assert.Equal(20 + 8 + Icmp.MaxQuote, ip.TotalLength);
        Assert.Equal(ipBytes.AsSpan(0, Icmp.MaxQuote).ToArray(), frame.AsSpan(EthernetFrame.HeaderLength + 28).ToArray());

        // Never about an ICMP error, nor about a broadcast.
        var error = new byte[8 + 28];
        IcmpPacket.WriteHeader(error, IcmpPacket.TypeDestinationUnreachable, 3, 0, 0);
        var errorPacket = GuestFrames.IPv4(StackHarness.GuestIp, StackHarness.Gateway, IPv4Packet.ProtocolIcmp, error).AsSpan(EthernetFrame.HeaderLength).ToArray();
        IPv4Packet.TryParse(errorPacket, out var errorView);
        h.Stack.Icmp.SendDestinationUnreachable(IcmpPacket.CodeHostUnreachable, in errorView);
        var broadcast = GuestFrames.Udp(StackHarness.GuestIp, 1, IPv4Address.Broadcast, 2, new byte[4]).AsSpan(EthernetFrame.HeaderLength).ToArray();
        IPv4Packet.TryParse(broadcast, out var broadcastView);
        h.Stack.Icmp.SendDestinationUnreachable(IcmpPacket.CodePortUnreachable, in broadcastView);
        h.ExpectNone();
    }

    /// <summary>TEST-NET-1 (RFC 5737): a destination outside the guest network that tests never really reach.</summary>
    private static readonly IPv4Address TestNet = new(192, 0, 2, 1);

    /// <summary>An ICMP destination unreachable with <paramref name="code"/> quoting a UDP datagram of the guest's.</summary>
    internal static void AssertUnreachableUdp(byte[] frame, byte code)
    {
        var icmp = Oracle.Icmp(frame);
        Assert.Equal(IcmpPacket.TypeDestinationUnreachable, (int)icmp.TypeCode >> 8);
        Assert.Equal(code, (int)icmp.TypeCode & 0xff);
        var quoted = frame.AsSpan(EthernetFrame.HeaderLength + 28);
        Assert.Equal(IPv4Packet.ParseError.None, IPv4Packet.TryParse(quoted, out var original));
        Assert.Equal(StackHarness.GuestIp, original.Source);
        Assert.Equal(IPv4Packet.ProtocolUdp, original.Protocol);
    }

    internal static void AssertUnreachable(byte[] frame, byte code, ushort sequence)
    {
        var icmp = Oracle.Icmp(frame);
        Assert.Equal(IcmpPacket.TypeDestinationUnreachable, (int)icmp.TypeCode >> 8);
        Assert.Equal(code, (int)icmp.TypeCode & 0xff);
        // The quoted original: an echo request with the guest's sequence number.
        var quoted = frame.AsSpan(EthernetFrame.HeaderLength + 28);
        Assert.Equal(IPv4Packet.ParseError.None, IPv4Packet.TryParse(quoted, out var original));
        Assert.Equal(StackHarness.GuestIp, original.Source);
        Assert.True(IcmpPacket.TryParse(original.Payload, out var echo));
        Assert.Equal(sequence, echo.Sequence);
    }
}
