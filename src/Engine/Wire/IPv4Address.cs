using System.Buffers.Binary;
using System.Net;

namespace Emunet.Engine.Wire;

/// <summary>An IPv4 address as a host-order 32-bit value. No allocation.</summary>
public readonly record struct IPv4Address(uint Value)
{
    public static readonly IPv4Address Any = new(0);
    public static readonly IPv4Address Broadcast = new(0xffffffff);

    public IPv4Address(byte a, byte b, byte c, byte d) : this((uint)(a << 24 | b << 16 | c << 8 | d)) { }

    public static IPv4Address Read(ReadOnlySpan<byte> bytes) => new(BinaryPrimitives.ReadUInt32BigEndian(bytes));

    public void Write(Span<byte> bytes) => BinaryPrimitives.WriteUInt32BigEndian(bytes, Value);

    public static IPv4Address Parse(string text) => From(IPAddress.Parse(text));

    /// <summary>
    /// Parses dotted-quad text only (<c>a.b.c.d</c>): <see cref="IPAddress.TryParse(string?, out IPAddress?)"/> also takes
    /// "1.2.3" (as 1.2.0.3) and "127.1", which hide typos in what users type. The one check every caller shares.
    /// </summary>
    public static bool TryParseDottedQuad(string? text, out IPAddress address)
    {
        address = IPAddress.None;
        if (string.IsNullOrEmpty(text) || text.AsSpan().Count('.') != 3) return false;
        if (!IPAddress.TryParse(text, out var parsed) || parsed.AddressFamily != System.Net.Sockets.AddressFamily.InterNetwork) return false;
        address = parsed;
        return true;
    }

    public static IPv4Address From(IPAddress address)
    {
        Span<byte> b = stackalloc byte[4];
        if (address.AddressFamily != System.Net.Sockets.AddressFamily.InterNetwork || !address.TryWriteBytes(b, out _))
            throw new ArgumentException($"'{address}' is not an IPv4 address.", nameof(address));
        return Read(b);
    }

    public IPAddress ToIPAddress()
    {
        Span<byte> b = stackalloc byte[4];
        Write(b);
        return new IPAddress(b);
    }

    public bool IsBroadcast => Value == 0xffffffff;
    public bool IsMulticast => (Value >> 28) == 0xe;
    public bool IsLoopback => (Value >> 24) == 127;

    public bool InSubnet(IPv4Address network, int prefixLength)
    {
        uint mask = prefixLength == 0 ? 0 : 0xffffffffu << (32 - prefixLength);
        return (Value & mask) == (network.Value & mask);
    }

    public override string ToString() => $"{Value >> 24}.{(Value >> 16) & 0xff}.{(Value >> 8) & 0xff}.{Value & 0xff}";
}
