using System.Buffers.Binary;

namespace Emunet.Engine.Wire;

/// <summary>
/// Neighbor Discovery messages (RFC 4861 §4) inside an <see cref="Icmpv6Packet"/>: the fixed part of each type and
/// its options. Router solicitation: 4 reserved bytes, options at 8. Router advertisement: hop limit, M/O flags,
/// router lifetime, reachable time, retrans timer, options at 16. Neighbor solicitation and advertisement: flags
/// (R/S/O in the advertisement), the target address at 8, options at 24.
/// <code>
/// Router Advertisement (RFC 4861 §4.2)
/// |     Type      |     Code      |          Checksum             |
/// | Cur Hop Limit |M|O|  Reserved |       Router Lifetime         |
/// |                         Reachable Time                        |
/// |                          Retrans Timer                        |
/// |   Options ...
/// Neighbor Solicitation / Advertisement (RFC 4861 §4.3, §4.4)
/// |     Type      |     Code      |          Checksum             |
/// |R|S|O|                     Reserved                            |
/// |                       Target Address (128 bits)               |
/// |   Options ...
/// </code>
/// </summary>
internal static class NdpMessage
{
    public static class Offsets
    {
        public const int RaCurHopLimit = 4;
        public const int RaFlags = 5;
        public const int RaRouterLifetime = 6;
        public const int RaReachableTime = 8;
        public const int RaRetransTimer = 12;
        public const int NaFlags = 4;
        public const int Target = 8;
    }

    public const int RouterSolicitationLength = 8;
    public const int RouterAdvertisementLength = 16;
    public const int NeighborMessageLength = 24;

    public const byte NaFlagRouter = 0x80;
    public const byte NaFlagSolicited = 0x40;
    public const byte NaFlagOverride = 0x20;
    public const byte RaFlagManaged = 0x80;
    public const byte RaFlagOther = 0x40;

    /// <summary>RFC 4861 §6.1.1, §7.1.1: a Neighbor Discovery message that did not come with hop limit 255 crossed a router.</summary>
    public const byte RequiredHopLimit = 255;

    /// <summary>The options of a router solicitation or advertisement or a neighbor message; empty for other types or a message too short.</summary>
    public static ReadOnlySpan<byte> OptionsOf(in Icmpv6Packet message)
    {
        int start = message.Type switch
        {
            Icmpv6Packet.TypeRouterSolicitation => RouterSolicitationLength,
            Icmpv6Packet.TypeRouterAdvertisement => RouterAdvertisementLength,
            Icmpv6Packet.TypeNeighborSolicitation or Icmpv6Packet.TypeNeighborAdvertisement => NeighborMessageLength,
            _ => int.MaxValue,
        };
        return message.Bytes.Length >= start ? message.Bytes[start..] : default;
    }

    /// <summary>The target of a neighbor solicitation or advertisement; the message must be at least 24 bytes.</summary>
    public static IPv6Address Target(in Icmpv6Packet message) => IPv6Address.Read(message.Bytes[Offsets.Target..]);

    /// <summary>Writes the fixed part of a router advertisement (16 bytes, checksum left to the caller).</summary>
    public static void WriteRouterAdvertisement(Span<byte> message, byte curHopLimit, byte flags, ushort routerLifetimeSeconds,
        uint reachableTimeMs, uint retransTimerMs)
    {
        message[0] = Icmpv6Packet.TypeRouterAdvertisement;
        message[1] = 0;
        message[Offsets.RaCurHopLimit] = curHopLimit;
        message[Offsets.RaFlags] = flags;
        BinaryPrimitives.WriteUInt16BigEndian(message[Offsets.RaRouterLifetime..], routerLifetimeSeconds);
        BinaryPrimitives.WriteUInt32BigEndian(message[Offsets.RaReachableTime..], reachableTimeMs);
        BinaryPrimitives.WriteUInt32BigEndian(message[Offsets.RaRetransTimer..], retransTimerMs);
    }

    /// <summary>Writes the fixed part of a neighbor advertisement (24 bytes, checksum left to the caller).</summary>
    public static void WriteNeighborAdvertisement(Span<byte> message, byte flags, IPv6Address target)
    {
        message[0] = Icmpv6Packet.TypeNeighborAdvertisement;
        message[1] = 0;
        BinaryPrimitives.WriteUInt32BigEndian(message[Offsets.NaFlags..], (uint)flags << 24);
        target.Write(message[Offsets.Target..]);
    }
}

/// <summary>
/// NDP options (RFC 4861 §4.6): type, length in units of 8 bytes, value. A reader over untrusted bytes and the
/// writers for what the router sends (link-layer address, prefix information, MTU, RDNSS of RFC 8106).
/// <code>
/// |     Type      |    Length     |              ...              |
/// </code>
/// </summary>
internal ref struct NdpOptionReader
{
    public const byte TypeSourceLinkLayerAddress = 1;
    public const byte TypeTargetLinkLayerAddress = 2;
    public const byte TypePrefixInformation = 3;
    public const byte TypeMtu = 5;
    /// <summary>RFC 8106 §5.1.</summary>
    public const byte TypeRecursiveDnsServer = 25;

    public const int LinkLayerAddressLength = 8;
    public const int PrefixInformationLength = 32;
    public const int MtuLength = 8;
    public const byte PrefixFlagOnLink = 0x80;
    public const byte PrefixFlagAutonomous = 0x40;

    private ReadOnlySpan<byte> _rest;

    public NdpOptionReader(ReadOnlySpan<byte> options) => _rest = options;

    /// <summary>True when an option with a zero length or one running past the end was met (RFC 4861 §4.6: discard the packet).</summary>
    public bool Malformed { get; private set; }

    /// <summary>
    /// Reads the next option: its type and its whole bytes (type and length included). False at the end or at a
    /// malformed option (<see cref="Malformed"/>). Each call consumes at least 8 bytes, so the walk is bounded by the input.
    /// </summary>
    public bool TryNext(out byte type, out ReadOnlySpan<byte> option)
    {
        type = 0;
        option = default;
        if (_rest.IsEmpty) return false;
        if (_rest.Length < 2) { Malformed = true; return false; }
        int length = _rest[1] * 8;
        if (length == 0 || length > _rest.Length) { Malformed = true; _rest = default; return false; }
        type = _rest[0];
        option = _rest[..length];
        _rest = _rest[length..];
        return true;
    }

    /// <summary>The MAC address in a source or target link-layer address option for Ethernet (RFC 2464 §6), if 8 bytes.</summary>
    public static bool TryReadLinkLayerAddress(ReadOnlySpan<byte> option, out MacAddress mac)
    {
        mac = default;
        if (option.Length != LinkLayerAddressLength) return false;
        mac = MacAddress.Read(option[2..]);
        return true;
    }

    public static int WriteLinkLayerAddress(Span<byte> buffer, byte type, MacAddress mac)
    {
        buffer[0] = type;
        buffer[1] = 1;
        mac.Write(buffer[2..]);
        return LinkLayerAddressLength;
    }

    /// <summary>Prefix information (RFC 4861 §4.6.2): prefix length, L/A flags, valid and preferred lifetimes, prefix.</summary>
    public static int WritePrefixInformation(Span<byte> buffer, IPv6Address prefix, byte prefixLength, byte flags,
        uint validLifetime, uint preferredLifetime)
    {
        buffer[0] = TypePrefixInformation;
        buffer[1] = 4;
        buffer[2] = prefixLength;
        buffer[3] = flags;
        BinaryPrimitives.WriteUInt32BigEndian(buffer[4..], validLifetime);
        BinaryPrimitives.WriteUInt32BigEndian(buffer[8..], preferredLifetime);
        BinaryPrimitives.WriteUInt32BigEndian(buffer[12..], 0);
        prefix.Write(buffer[16..]);
        return PrefixInformationLength;
    }

    /// <summary>The link MTU (RFC 4861 §4.6.4).</summary>
    public static int WriteMtu(Span<byte> buffer, uint mtu)
    {
        buffer[0] = TypeMtu;
        buffer[1] = 1;
        BinaryPrimitives.WriteUInt16BigEndian(buffer[2..], 0);
        BinaryPrimitives.WriteUInt32BigEndian(buffer[4..], mtu);
        return MtuLength;
    }

    /// <summary>Recursive DNS servers (RFC 8106 §5.1): lifetime in seconds, then the addresses.</summary>
    public static int WriteRecursiveDnsServers(Span<byte> buffer, uint lifetime, ReadOnlySpan<IPv6Address> servers)
    {
        int length = 8 + IPv6Address.Length * servers.Length;
        buffer[0] = TypeRecursiveDnsServer;
        buffer[1] = checked((byte)(length / 8));
        BinaryPrimitives.WriteUInt16BigEndian(buffer[2..], 0);
        BinaryPrimitives.WriteUInt32BigEndian(buffer[4..], lifetime);
        for (int i = 0; i < servers.Length; i++) servers[i].Write(buffer[(8 + IPv6Address.Length * i)..]);
        return length;
    }
}
