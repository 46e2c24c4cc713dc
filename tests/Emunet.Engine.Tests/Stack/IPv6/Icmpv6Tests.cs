using System.Net;
using System.Net.Sockets;
using Emunet.Engine.Diagnostics;
using Emunet.Engine.Stack.IPv6;
using Emunet.Engine.Wire;
using PacketDotNet;
using PacketDotNet.Utils;
using static Emunet.Engine.Tests.Stack.IPv6.GuestFrames6;
using IPv6Packet = Emunet.Engine.Wire.IPv6Packet;

namespace Emunet.Engine.Tests.Stack.IPv6;

public class Icmpv6Tests
{
    [Theory]
    [InlineData("fec0::2")]
    [InlineData("fec0::3")]
    [InlineData("fe80::2")]
    public void Echo_to_our_addresses_is_answered(string address)
    {
        using var h = new StackHarness();
        var to = IPv6Address.Parse(address);
        var source = to.IsLinkLocal ? GuestLinkLocal : GuestGlobal;
        h.Send(EchoRequest(source, to, 0x1234, 7, "ping6 data"u8));
        var (ip, icmp) = NdpTests.ExpectIcmp(h, out _);
        Assert.Equal(to.ToIPAddress(), ip.SourceAddress);
        Assert.Equal(source.ToIPAddress(), ip.DestinationAddress);
        var oracle = new IcmpV6Packet(new ByteArraySegment(icmp));
        Assert.Equal(IcmpV6Type.EchoReply, oracle.Type);
        Assert.True(Icmpv6Packet.TryParse(icmp, out var reply));
        Assert.Equal(0x1234, reply.Identifier);
        Assert.Equal(7, reply.Sequence);
        Assert.Equal("ping6 data"u8.ToArray(), reply.Body.ToArray());
    }

    [Fact]
    public void A_transport_not_carried_is_refused_with_destination_unreachable_quoting_the_packet()
    {
        using var h = new StackHarness();
        h.Send(Frame(GuestGlobal, IPv6Address.Parse("2001:db8::1"), 132 /* SCTP */, new byte[16]));
        var (ip, icmp) = NdpTests.ExpectIcmp(h, out _);
        Assert.Equal(GuestGlobal.ToIPAddress(), ip.DestinationAddress);
        Assert.Equal(Icmpv6Packet.TypeDestinationUnreachable, icmp[0]);
        // RFC 4443 §3.1: the invoking packet follows the 8-byte header.
        Assert.Equal(0x60, icmp[8] & 0xf0);
        Assert.Equal(IPv6Packet.HeaderLength + 16, icmp.Length - 8);
        Assert.Equal(1, h.Counters.Drops(DropReason.IPv6NotSupported));
    }

    [Fact]
    public void Errors_are_rate_limited()
    {
        using var h = new StackHarness();
        int sent = Icmpv6.ErrorBurst + 5;
        for (int i = 0; i < sent; i++) h.Send(Frame(GuestGlobal, IPv6Address.Parse("2001:db8::1"), 132, new byte[16]));
        // The burst goes out at once; the rest wait for tokens (RFC 4443 §2.4 (f)). A slow machine may refill one or two.
        Assert.InRange(h.Device.Frames.Count, Icmpv6.ErrorBurst, Icmpv6.ErrorBurst + 3);
        Assert.Equal(sent - h.Device.Frames.Count, h.Counters.Drops(DropReason.Icmpv6ErrorRateLimited));
    }

    [Fact]
    public void No_error_about_an_error_or_to_a_multicast_destination()
    {
        using var h = new StackHarness();
        var error = new byte[8 + 48];
        error[0] = Icmpv6Packet.TypeDestinationUnreachable;
        h.Send(Icmp(GuestGlobal, IPv6Address.Parse("2001:db8::1"), error));
        h.Send(Frame(GuestGlobal, IPv6Address.Parse("ff05::1"), 132, new byte[16]));
        h.ExpectNone();
    }

    private static readonly IPv6Address Remote = IPv6Address.Parse("2001:db8::1");

    [Fact]
    public void Echo_beyond_our_addresses_is_relayed_and_the_reply_gets_the_guests_identifier_and_checksum()
    {
        // A stand-in for the kernel's ICMPv6 ping socket: a UDP socket whose peer on ::1 answers as a ping socket's
        // would, with its own identifier and a checksum over the host's pseudo-header. Nothing leaves the machine.
        using var responder = new Socket(AddressFamily.InterNetworkV6, SocketType.Dgram, System.Net.Sockets.ProtocolType.Udp) { ReceiveTimeout = 5000 };
        responder.Bind(new IPEndPoint(IPAddress.IPv6Loopback, 0));
        IPAddress? asked = null;
        using var h = new StackHarness();
        h.Stack.Icmp.PingSocketFactory = host =>
        {
            asked = host;
            var s = new Socket(AddressFamily.InterNetworkV6, SocketType.Dgram, System.Net.Sockets.ProtocolType.Udp);
            s.Connect(responder.LocalEndPoint!);
            s.Blocking = false;
            return s;
        };
        h.Start();
        h.Send(EchoRequest(GuestGlobal, Remote, 0x2222, 5, "relayed"u8));

        var request = new byte[1000];
        EndPoint from = new IPEndPoint(IPAddress.IPv6Any, 0);
        int n = responder.ReceiveFrom(request, ref from);
        Assert.True(Icmpv6Packet.TryParse(request.AsSpan(0, n), out var sent));
        Assert.Equal(Icmpv6Packet.TypeEchoRequest, sent.Type);
        Assert.Equal(0x2222, sent.Identifier);
        var answer = request.AsSpan(0, n).ToArray();
        answer[0] = Icmpv6Packet.TypeEchoReply;
        answer[4] = 0x99; answer[5] = 0x99;
        Icmpv6Packet.FinishChecksum(answer, IPv6Address.Parse("2001:db8::7"), IPv6Address.Parse("2001:db8::8"));
        responder.SendTo(answer, from);

        var (ip, icmp) = NdpTests.ExpectIcmp(h, out _);   // checks the checksum over the guest's pseudo-header
        Assert.Equal(Remote.ToIPAddress(), ip.SourceAddress);
        Assert.Equal(GuestGlobal.ToIPAddress(), ip.DestinationAddress);
        Assert.True(Icmpv6Packet.TryParse(icmp, out var reply));
        Assert.Equal(Icmpv6Packet.TypeEchoReply, reply.Type);
        Assert.Equal(0x2222, reply.Identifier);
        Assert.Equal(5, reply.Sequence);
        Assert.Equal("relayed"u8.ToArray(), reply.Body.ToArray());
        Assert.Equal(Remote.ToIPAddress(), asked);

        var flows = h.Invoke(() => { var l = new List<Emunet.Engine.Stack.Nat.ConnectionInfo>(); h.Stack.Flows.Snapshot(l); return l; });
        Assert.Equal(Emunet.Engine.Stack.Nat.FlowProtocol.Icmp, Assert.Single(flows).Protocol);
        Assert.Equal(0, h.Counters.Drops(DropReason.IPv6NotSupported));
    }

    [Fact]
    public void Refused_ping_sockets_become_administratively_prohibited_per_family()
    {
        using var h = new StackHarness();
        var families = new List<AddressFamily>();
        h.Stack.Icmp.PingSocketFactory = host => { families.Add(host.AddressFamily); throw new SocketException((int)SocketError.AccessDenied); };
        h.Send(EchoRequest(GuestGlobal, Remote, 9, 1, "x"u8));
        h.Send(EchoRequest(GuestGlobal, Remote, 9, 2, "x"u8));   // within the retry interval: the host is not asked again
        for (int sequence = 1; sequence <= 2; sequence++)
        {
            var (_, icmp) = NdpTests.ExpectIcmp(h, out _);
            Assert.Equal(Icmpv6Packet.TypeDestinationUnreachable, icmp[0]);
            Assert.Equal(Icmpv6Packet.CodeAdministrativelyProhibited, icmp[1]);
        }
        Assert.Equal(new[] { AddressFamily.InterNetworkV6 }, families);
        Assert.Equal(2, h.Counters.Drops(DropReason.IcmpPingRefused));
        // The other family is asked on its own.
        h.Send(GuestFrames.Echo(new IPv4Address(192, 0, 2, 1), 9, 1, "x"u8.ToArray()));
        Assert.Equal(new[] { AddressFamily.InterNetworkV6, AddressFamily.InterNetwork }, families);
    }

    [Theory]
    [InlineData("::1", nameof(DropReason.PolicyDenied))]
    [InlineData("::ffff:127.0.0.1", nameof(DropReason.IPv6MappedDestination))]
    [InlineData("::ffff:10.0.2.2", nameof(DropReason.IPv6MappedDestination))]
    public void Echo_the_policy_refuses_asks_for_no_ping_socket(string destination, string reason)
    {
        using var h = new StackHarness();
        int attempts = 0;
        h.Stack.Icmp.PingSocketFactory = _ => { attempts++; throw new SocketException((int)SocketError.AccessDenied); };
        h.Send(EchoRequest(GuestGlobal, IPv6Address.Parse(destination), 9, 1, "x"u8));
        var (_, icmp) = NdpTests.ExpectIcmp(h, out _);
        Assert.Equal(Icmpv6Packet.CodeAdministrativelyProhibited, icmp[1]);
        Assert.Equal(1, h.Counters.Drops(Enum.Parse<DropReason>(reason)));
        Assert.Equal(0, attempts);
    }
}
