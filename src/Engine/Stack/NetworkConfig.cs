using Emunet.Engine.Wire;

namespace Emunet.Engine.Stack;

/// <summary>The address plan. Defaults are QEMU's and the Android Emulator's (10.0.2.0/24).</summary>
public sealed record NetworkConfig
{
    public IPv4Address Network { get; init; } = new(10, 0, 2, 0);
    public int PrefixLength { get; init; } = 24;
    /// <summary>The gateway, and the alias of the host's loopback (10.0.2.2:P reaches 127.0.0.1:P).</summary>
    public IPv4Address Gateway { get; init; } = new(10, 0, 2, 2);
    /// <summary>The DNS relay.</summary>
    public IPv4Address Dns { get; init; } = new(10, 0, 2, 3);
    /// <summary>The address the guest is leased by DHCP.</summary>
    public IPv4Address Guest { get; init; } = new(10, 0, 2, 15);
    /// <summary>The MAC address Emunet answers ARP with for the addresses it owns (QEMU's slirp uses 52:55:0a:00:02:02).</summary>
    public MacAddress GatewayMac { get; init; } = new(0x52550a000202UL);
    /// <summary>MTU offered by DHCP (option 26). There is no wire, so a large MTU cuts per-packet cost.</summary>
    public int Mtu { get; init; } = 65520;
    public TimeSpan LeaseTime { get; init; } = TimeSpan.FromHours(24);
    /// <summary>Map guest connections to the gateway onto host loopback.</summary>
    public bool MapGatewayToLoopback { get; init; } = true;
    /// <summary>
    /// As QEMU's <c>restrict=on</c>: the guest reaches nothing outside, the host's loopback included; forwards into the
    /// guest and the DNS relay still work.
    /// </summary>
    public bool Restrict { get; init; }
    /// <summary>Ordered allow/deny rules for guest flows (first match wins, default allow); see <see cref="OutboundRule"/>.</summary>
    public IReadOnlyList<OutboundRule> OutboundRules { get; init; } = Array.Empty<OutboundRule>();
    /// <summary>Bytes all connection buffers together may hold beyond a few KiB each (<see cref="Nat.BufferBudget"/>).</summary>
    public long ConnectionBufferBudget { get; init; } = Nat.BufferBudget.DefaultLimit;
    /// <summary>Guest-to-host remaps the engine starts with (<see cref="GuestRemap"/>); more can be added at run time.</summary>
    public IReadOnlyList<GuestRemap> Remaps { get; init; } = Array.Empty<GuestRemap>();
    /// <summary>Upstream DNS servers; empty means those of /etc/resolv.conf.</summary>
    public IReadOnlyList<System.Net.IPEndPoint> DnsUpstream { get; init; } = Array.Empty<System.Net.IPEndPoint>();

    // ---- IPv6 (QEMU's user network and the Android Emulator use the same plan) ----
    /// <summary>Serve IPv6 to the guest (NDP, router advertisements, DHCPv6 information); off drops and counts every IPv6 frame.</summary>
    public bool IPv6Enabled { get; init; } = true;
    /// <summary>The /64 the guest configures itself in by SLAAC (RFC 4862).</summary>
    public IPv6Address IPv6Prefix { get; init; } = new(0xfec0_0000_0000_0000UL, 0);
    /// <summary>The alias of the host's loopback on IPv6 (fec0::2:P reaches [::1]:P), as 10.0.2.2 is on IPv4.</summary>
    public IPv6Address IPv6Gateway { get; init; } = new(0xfec0_0000_0000_0000UL, 2);
    /// <summary>The DNS relay on IPv6, announced in RDNSS (RFC 8106) and DHCPv6.</summary>
    public IPv6Address IPv6Dns { get; init; } = new(0xfec0_0000_0000_0000UL, 3);
    /// <summary>The router's link-local address: the source of router advertisements (RFC 4861 §6.1.2) and the guest's next hop.</summary>
    public IPv6Address IPv6RouterLinkLocal { get; init; } = new(0xfe80_0000_0000_0000UL, 2);
    /// <summary>The prefix length of <see cref="IPv6Prefix"/>; SLAAC needs 64 on Ethernet (RFC 4862 §5.5.3, RFC 2464 §4).</summary>
    public int IPv6PrefixLength => 64;

    /// <summary>True for an IPv6 address Emunet itself answers for (router link-local, host alias, DNS).</summary>
    public bool IsOwnAddress(IPv6Address a) => a == IPv6RouterLinkLocal || a == IPv6Gateway || a == IPv6Dns;

    public IPv4Address SubnetMask => new(PrefixLength == 0 ? 0 : 0xffffffffu << (32 - PrefixLength));
    public IPv4Address BroadcastAddress => new(Network.Value | ~SubnetMask.Value);

    /// <summary>True for an address Emunet itself answers for (gateway, DNS).</summary>
    public bool IsOwnAddress(IPv4Address a) => a == Gateway || a == Dns;
}
