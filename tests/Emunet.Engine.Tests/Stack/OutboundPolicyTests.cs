using System.Net;
using System.Net.Sockets;
using Emunet.Engine.Diagnostics;
using Emunet.Engine.Stack;
using Emunet.Engine.Wire;

namespace Emunet.Engine.Tests.Stack;

/// <summary>What the guest may reach: the host only through 10.0.2.2, --restrict, ordered allow/deny rules, spoofing.</summary>
public sealed class OutboundPolicyTests
{
    private static readonly IPAddress HostOwn = IPAddress.Parse("192.168.77.5");

    private static OutboundVerdict Map(NetworkConfig config, string destination, int port, out IPAddress host)
    {
        var map = new AddressMap(config with { DnsUpstream = new[] { new IPEndPoint(IPAddress.Loopback, 5300) } },
            () => new[] { IPAddress.Loopback, HostOwn, IPAddress.IPv6Loopback });
        return map.MapOutbound(IPv4Address.Parse(destination), port, out host, out _);
    }

    [Theory]
    [InlineData("127.0.0.1")]
    [InlineData("127.0.0.2")]
    [InlineData("127.255.255.254")]
    [InlineData("192.168.77.5")]
    public void The_host_is_reachable_only_through_the_gateway_alias(string destination)
    {
        Assert.Equal(OutboundVerdict.Denied, Map(new NetworkConfig(), destination, 80, out _));
        Assert.Equal(OutboundVerdict.Mapped, Map(new NetworkConfig(), "10.0.2.2", 80, out var host));
        Assert.Equal(IPAddress.Loopback, host);
        Assert.Equal(OutboundVerdict.Mapped, Map(new NetworkConfig(), "192.0.2.1", 80, out host));
        Assert.Equal(IPAddress.Parse("192.0.2.1"), host);
    }

    [Fact]
    public void Without_host_loopback_nothing_of_the_host_is_reachable()
    {
        var config = new NetworkConfig { MapGatewayToLoopback = false };
        Assert.Equal(OutboundVerdict.Unroutable, Map(config, "10.0.2.2", 80, out _));
        Assert.Equal(OutboundVerdict.Denied, Map(config, "127.0.0.1", 80, out _));
        Assert.Equal(OutboundVerdict.Denied, Map(config, "192.168.77.5", 80, out _));
    }

    [Fact]
    public void Restrict_leaves_only_the_dns_relay()
    {
        var config = new NetworkConfig { Restrict = true };
        Assert.Equal(OutboundVerdict.Denied, Map(config, "10.0.2.2", 80, out _));
        Assert.Equal(OutboundVerdict.Denied, Map(config, "192.0.2.1", 443, out _));
        Assert.Equal(OutboundVerdict.Mapped, Map(config, "10.0.2.3", 53, out var dns));
        Assert.Equal(IPAddress.Loopback, dns);
    }

    [Fact]
    public void Rules_match_in_order_and_the_default_is_allow()
    {
        var config = new NetworkConfig
        {
            OutboundRules = new[]
            {
                OutboundRule.Parse("192.0.2.0/28:80", allow: true),
                OutboundRule.Parse("192.0.2.0/24", allow: false),
                OutboundRule.Parse("10.0.2.2:22", allow: false),
            },
        };
        Assert.Equal(OutboundVerdict.Mapped, Map(config, "192.0.2.1", 80, out _));
        Assert.Equal(OutboundVerdict.Denied, Map(config, "192.0.2.1", 81, out _));
        Assert.Equal(OutboundVerdict.Denied, Map(config, "192.0.2.200", 80, out _));
        Assert.Equal(OutboundVerdict.Mapped, Map(config, "198.51.100.1", 80, out _));
        Assert.Equal(OutboundVerdict.Denied, Map(config, "10.0.2.2", 22, out _));
        Assert.Equal(OutboundVerdict.Mapped, Map(config, "10.0.2.2", 23, out _));
    }

    private static OutboundVerdict Map6(NetworkConfig config, string destination, int port)
    {
        var map = new AddressMap(config with { DnsUpstream = new[] { new IPEndPoint(IPAddress.Loopback, 5300) } },
            () => new[] { IPAddress.Loopback, HostOwn, IPAddress.IPv6Loopback });
        return map.MapOutboundIPv6(IPv6Address.Parse(destination), port, out _, out _);
    }

    [Fact]
    public void Ipv6_rules_match_in_order_and_only_their_family()
    {
        var config = new NetworkConfig
        {
            OutboundRules = new[]
            {
                OutboundRule.Parse("[2001:db8::]/48:443", allow: true),
                OutboundRule.Parse("2001:db8::/32", allow: false),
                OutboundRule.Parse("[fec0::2]:22", allow: false),
                OutboundRule.Parse("0.0.0.0/0", allow: false),
            },
        };
        Assert.Equal(OutboundVerdict.Mapped, Map6(config, "2001:db8::1", 443));
        Assert.Equal(OutboundVerdict.Denied, Map6(config, "2001:db8::1", 80));
        Assert.Equal(OutboundVerdict.Denied, Map6(config, "2001:db8:ffff::1", 443));
        Assert.Equal(OutboundVerdict.Mapped, Map6(config, "2001:db9::1", 80));
        // The host alias is subject to the rules, as 10.0.2.2 is.
        Assert.Equal(OutboundVerdict.Denied, Map6(config, "fec0::2", 22));
        Assert.Equal(OutboundVerdict.Mapped, Map6(config, "fec0::2", 23));
        // The IPv4 catch-all matches no IPv6 destination, and the IPv6 rules no IPv4 one.
        Assert.Equal(OutboundVerdict.Denied, Map(config, "198.51.100.1", 443, out _));
        var v6Only = new NetworkConfig { OutboundRules = new[] { OutboundRule.Parse("::/0", allow: false) } };
        Assert.Equal(OutboundVerdict.Mapped, Map(v6Only, "198.51.100.1", 443, out _));
        Assert.Equal(OutboundVerdict.Denied, Map6(v6Only, "2001:db9::1", 443));
        Assert.Equal(OutboundVerdict.Denied, Map6(new NetworkConfig { Restrict = true }, "2001:db9::1", 443));
    }

    [Theory]
    [InlineData("::1", "::1", 128, 0, 65535, "deny ::1/128")]
    [InlineData("2001:db8::/32", "2001:db8::", 32, 0, 65535, "deny 2001:db8::/32")]
    [InlineData("2001:db8:1:2::5/32", "2001:db8::", 32, 0, 65535, "deny 2001:db8::/32")]
    [InlineData("[fec0::2]:8080", "fec0::2", 128, 8080, 8080, "deny [fec0::2]/128:8080")]
    [InlineData("[2001:db8::]/32:443", "2001:db8::", 32, 443, 443, "deny [2001:db8::]/32:443")]
    [InlineData("[2001:db8::]/32:1000-2000", "2001:db8::", 32, 1000, 2000, "deny [2001:db8::]/32:1000-2000")]
    [InlineData("::/0", "::", 0, 0, 65535, "deny ::/0")]
    public void Ipv6_rules_parse(string text, string network, int prefix, int first, int last, string shown)
    {
        var rule = OutboundRule.Parse(text, allow: false);
        Assert.True(rule.IsIPv6);
        Assert.Equal((IPAddress.Parse(network), prefix, first, last), (rule.Network, rule.PrefixLength, rule.FirstPort, rule.LastPort));
        Assert.Equal(shown, rule.ToString());
        // The shown form parses back to the same rule.
        Assert.Equal(rule, OutboundRule.Parse(shown["deny ".Length..], allow: false));
    }

    [Theory]
    [InlineData("[::1")]
    [InlineData("[::1]8080")]
    [InlineData("[::1]:")]
    [InlineData("::1/129")]
    [InlineData("[::1]/:80")]
    [InlineData("[::1]:70000")]
    [InlineData("[10.0.0.1]:80")]
    [InlineData("fe80::1%2")]
    [InlineData("::ffff:10.0.0.0/104")]
    [InlineData("2001:db8::g")]
    public void Bad_ipv6_rules_name_the_form(string text)
    {
        var e = Assert.Throws<FormatException>(() => OutboundRule.Parse(text, allow: false));
        Assert.Contains("ADDR[/PREFIX][:PORT[-PORT]]", e.Message);
        Assert.Contains("--deny", e.Message);
    }

    [Theory]
    [InlineData("10.0.0.0/8", 0, 65535, 8)]
    [InlineData("10.1.2.3/8:25", 25, 25, 8)]
    [InlineData("0.0.0.0/0:1000-2000", 1000, 2000, 0)]
    public void Rules_parse(string text, int first, int last, int prefix)
    {
        var rule = OutboundRule.Parse(text, allow: false);
        Assert.Equal((first, last, prefix), (rule.FirstPort, rule.LastPort, rule.PrefixLength));
        Assert.False(rule.Allow);
    }

    [Theory]
    [InlineData("10.0.0")]
    [InlineData("10.0.0.0/33")]
    [InlineData("10.0.0.0:70000")]
    [InlineData("10.0.0.0:20-10")]
    [InlineData("host.example")]
    public void Bad_rules_name_the_form(string text)
    {
        var e = Assert.Throws<FormatException>(() => OutboundRule.Parse(text, allow: true));
        Assert.Contains("ADDR[/PREFIX][:PORT[-PORT]]", e.Message);
        Assert.Contains("--allow", e.Message);
    }

    [Fact]
    public void A_guest_syn_to_the_hosts_loopback_is_reset_and_never_reaches_the_host()
    {
        using var listener = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
        listener.Bind(new IPEndPoint(IPAddress.Loopback, 0));
        listener.Listen();
        ushort port = (ushort)((IPEndPoint)listener.LocalEndPoint!).Port;
        using var h = new StackHarness();
        h.Send(Syn(StackHarness.GuestIp, new IPv4Address(127, 0, 0, 1), port));
        var rst = Oracle.Tcp(h.Expect());
        Assert.True(rst.Reset);
        Assert.Equal(1, h.Counters.Drops(DropReason.PolicyDenied));
        Assert.False(listener.Poll(200_000, SelectMode.SelectRead), "the host listener saw a connection");
    }

    [Fact]
    public void A_guest_datagram_to_the_hosts_loopback_is_prohibited_and_never_delivered()
    {
        using var server = new Socket(AddressFamily.InterNetwork, SocketType.Dgram, ProtocolType.Udp);
        server.Bind(new IPEndPoint(IPAddress.Loopback, 0));
        ushort port = (ushort)((IPEndPoint)server.LocalEndPoint!).Port;
        using var h = new StackHarness();
        h.Send(GuestFrames.Udp(StackHarness.GuestIp, 40000, new IPv4Address(127, 0, 0, 1), port, "secret"u8));
        IcmpTests.AssertUnreachableUdp(h.Expect(), IcmpPacket.CodeAdministrativelyProhibited);
        Assert.False(server.Poll(200_000, SelectMode.SelectRead), "the datagram reached the host");
        Assert.Equal(0, h.Stack.Udp.FlowCount);
    }

    [Fact]
    public void Packets_not_from_the_guests_address_are_dropped_and_counted()
    {
        using var h = new StackHarness();
        var spoofed = new IPv4Address(198, 51, 100, 7);
        h.Send(Syn(spoofed, StackHarness.Gateway, 80));
        h.Send(GuestFrames.Udp(spoofed, 1, StackHarness.Gateway, 9, "x"u8));
        h.Send(GuestFrames.Udp(IPv4Address.Any, 1, StackHarness.Gateway, 9, "x"u8)); // 0.0.0.0 is for DHCP only
        h.ExpectNone();
        Assert.Equal(3, h.Counters.Drops(DropReason.SourceSpoofed));
        Assert.Equal(0, h.Stack.Flows.Count);
    }

    private static byte[] Syn(IPv4Address source, IPv4Address destination, ushort port)
    {
        var segment = new byte[TcpSegment.MinHeaderLength];
        var f = new TcpFields
        {
            SourcePort = 41000, DestinationPort = port, SequenceNumber = 1000, Flags = TcpFlags.Syn, Window = 65535, WindowScale = -1,
        };
        int length = f.Emit(segment, source, destination, 0);
        return GuestFrames.IPv4(source, destination, IPv4Packet.ProtocolTcp, segment.AsSpan(0, length));
    }
}
