using System.Buffers.Binary;
using System.Net;

namespace Emunet.Engine.Wire;

/// <summary>An IPv6 address as two host-order 64-bit words (RFC 4291 §2). No allocation.</summary>
public readonly record struct IPv6Address(ulong High, ulong Low)
{
    public const int Length = 16;
    public static readonly IPv6Address Unspecified = new(0, 0);
    public static readonly IPv6Address Loopback = new(0, 1);
    /// <summary>ff02::1, all nodes on the link (RFC 4291 §2.7.1).</summary>
    public static readonly IPv6Address AllNodes = new(0xff02_0000_0000_0000UL, 1);
    /// <summary>ff02::2, all routers on the link.</summary>
    public static readonly IPv6Address AllRouters = new(0xff02_0000_0000_0000UL, 2);

    public static IPv6Address Read(ReadOnlySpan<byte> bytes) =>
        new(BinaryPrimitives.ReadUInt64BigEndian(bytes), BinaryPrimitives.ReadUInt64BigEndian(bytes[8..]));

    public void Write(Span<byte> bytes)
    {
        BinaryPrimitives.WriteUInt64BigEndian(bytes, High);
        BinaryPrimitives.WriteUInt64BigEndian(bytes[8..], Low);
    }

    public static IPv6Address Parse(string text) => From(IPAddress.Parse(text));

    public static IPv6Address From(IPAddress address)
    {
        Span<byte> b = stackalloc byte[Length];
        if (address.AddressFamily != System.Net.Sockets.AddressFamily.InterNetworkV6 || !address.TryWriteBytes(b, out _))
            throw new ArgumentException($"'{address}' is not an IPv6 address.", nameof(address));
        return Read(b);
    }

    public IPAddress ToIPAddress()
    {
        Span<byte> b = stackalloc byte[Length];
        Write(b);
        return new IPAddress(b);
    }

    public bool IsUnspecified => High == 0 && Low == 0;
    public bool IsMulticast => (High >> 56) == 0xff;
    /// <summary>fe80::/10 (RFC 4291 §2.5.6).</summary>
    public bool IsLinkLocal => (High >> 54) == (0xfe80UL >> 6);

    /// <summary>The first <paramref name="prefixLength"/> bits equal those of <paramref name="prefix"/>.</summary>
    public bool InPrefix(IPv6Address prefix, int prefixLength)
    {
        if (prefixLength <= 0) return true;
        if (prefixLength <= 64)
        {
            ulong mask = prefixLength == 64 ? ulong.MaxValue : ~(ulong.MaxValue >> prefixLength);
            return (High & mask) == (prefix.High & mask);
        }
        ulong low = prefixLength >= 128 ? ulong.MaxValue : ~(ulong.MaxValue >> (prefixLength - 64));
        return High == prefix.High && (Low & low) == (prefix.Low & low);
    }

    /// <summary>The solicited-node multicast address ff02::1:ffXX:XXXX of this address (RFC 4291 §2.7.1).</summary>
    public IPv6Address SolicitedNode => new(0xff02_0000_0000_0000UL, 0x0000_0001_ff00_0000UL | (Low & 0xff_ffffUL));

    /// <summary>The Ethernet address a multicast IPv6 address maps to: 33:33 and its last 32 bits (RFC 2464 §7).</summary>
    public MacAddress MulticastMac => new(0x3333_0000_0000UL | (Low & 0xffff_ffffUL));

    public override string ToString() => ToIPAddress().ToString();
}
