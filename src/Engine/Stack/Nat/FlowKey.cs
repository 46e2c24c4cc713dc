using System.Buffers.Binary;
using System.Net;
using Emunet.Engine.Wire;

namespace Emunet.Engine.Stack.Nat;

/// <summary>
/// An address as the flow table keys it: 16 bytes, IPv4 held IPv4-mapped (<c>::ffff:a.b.c.d</c>, RFC 4291 §2.5.5.2), so
/// one key type serves both families. Compared as two words; no allocation.
/// </summary>
internal readonly record struct FlowAddress(ulong High, ulong Low)
{
    private const ulong MappedLowPrefix = 0x0000_ffff_0000_0000UL;

    public static FlowAddress FromIPv4(IPv4Address address) => new(0, MappedLowPrefix | address.Value);

    public static FlowAddress FromIPv6(IPv6Address address) => new(address.High, address.Low);

    /// <summary>The IPv6 address of a key that is not IPv4-mapped.</summary>
    public IPv6Address IPv6 => new(High, Low);

    /// <summary>
    /// The TCP/UDP pseudo-header sum without the length (RFC 9293 §3.1 for IPv4, RFC 8200 §8.1 for IPv6): the one
    /// place the two families differ for a checksum. The length is added by whoever knows it (sums are linear).
    /// </summary>
    public static uint PseudoHeaderBase(FlowAddress source, FlowAddress destination, byte protocol) =>
        source.IsIPv4 ? Checksum.PseudoHeader(source.IPv4, destination.IPv4, protocol, 0)
                      : IPv6Packet.PseudoHeader(source.IPv6, destination.IPv6, protocol, 0);

    public bool IsIPv4 => High == 0 && (Low & 0xffff_ffff_0000_0000UL) == MappedLowPrefix;

    /// <summary>The IPv4 address of an IPv4-mapped key (<see cref="IsIPv4"/>).</summary>
    public IPv4Address IPv4 => new((uint)Low);

    public IPAddress ToIPAddress()
    {
        if (IsIPv4) return IPv4.ToIPAddress();
        Span<byte> bytes = stackalloc byte[16];
        BinaryPrimitives.WriteUInt64BigEndian(bytes, High);
        BinaryPrimitives.WriteUInt64BigEndian(bytes[8..], Low);
        return new IPAddress(bytes);
    }

    public override string ToString() => ToIPAddress().ToString();
}

/// <summary>
/// A flow's identity: protocol, the guest's end and the peer the guest sees (the original destination, or 10.0.2.2
/// with a gateway port for a forwarded flow). ICMP echo flows use the identifier as the guest port and 0 as the peer's.
/// </summary>
internal readonly record struct FlowKey(FlowProtocol Protocol, FlowAddress Guest, ushort GuestPort, FlowAddress Peer, ushort PeerPort)
{
    public static FlowKey IPv4(FlowProtocol protocol, IPv4Address guest, ushort guestPort, IPv4Address peer, ushort peerPort) =>
        new(protocol, FlowAddress.FromIPv4(guest), guestPort, FlowAddress.FromIPv4(peer), peerPort);
}
