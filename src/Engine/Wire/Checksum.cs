using System.Buffers.Binary;

namespace Emunet.Engine.Wire;

/// <summary>The Internet checksum (RFC 1071): one's complement sum of 16-bit words.</summary>
internal static class Checksum
{
    /// <summary>Adds <paramref name="data"/> to a running 32-bit one's complement accumulator (not folded).</summary>
    public static uint Accumulate(uint sum, ReadOnlySpan<byte> data)
    {
        // Sum 32-bit big-endian chunks into a 64-bit accumulator; fold at the end (RFC 1071 §4.1 variant).
        ulong acc = sum;
        int i = 0;
        for (; i + 4 <= data.Length; i += 4) acc += BinaryPrimitives.ReadUInt32BigEndian(data[i..]);
        if (data.Length - i >= 2) { acc += (uint)(data[i] << 8 | data[i + 1]); i += 2; }
        if (i < data.Length) acc += (uint)(data[i] << 8);
        while ((acc >> 32) != 0) acc = (acc & 0xffffffff) + (acc >> 32);
        return (uint)acc;
    }

    /// <summary>Folds an accumulator to 16 bits and complements it: the value to put in a header.</summary>
    public static ushort Finish(uint sum)
    {
        while ((sum >> 16) != 0) sum = (sum & 0xffff) + (sum >> 16);
        return (ushort)~sum;
    }

    /// <summary>The checksum of <paramref name="data"/>.</summary>
    public static ushort Compute(ReadOnlySpan<byte> data) => Finish(Accumulate(0, data));

    /// <summary>The IPv4 pseudo-header sum for TCP and UDP (RFC 9293 §3.1, RFC 768).</summary>
    public static uint PseudoHeader(IPv4Address source, IPv4Address destination, byte protocol, int length)
    {
        ulong acc = (source.Value >> 16) + (source.Value & 0xffff) + (destination.Value >> 16) + (destination.Value & 0xffff)
                    + protocol + (uint)length;
        while ((acc >> 32) != 0) acc = (acc & 0xffffffff) + (acc >> 32);
        return (uint)acc;
    }
}
