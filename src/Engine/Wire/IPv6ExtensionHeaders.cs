using System.Buffers.Binary;

namespace Emunet.Engine.Wire;

/// <summary>
/// The walk of an IPv6 extension-header chain (RFC 8200 §4) to the upper-layer header. Bounded: at most
/// <see cref="MaxHeaders"/> headers, each at least 8 bytes and inside the payload, hop-by-hop only first (§4.1), at
/// most one fragment header (RFC 8200 §4.5, RFC 7112: the whole chain is in the first fragment). A chain that breaks
/// a rule is reported, never followed.
/// <code>
/// Hop-by-hop / routing / destination options: | Next Header | Hdr Ext Len (8-byte units, not counting the first 8) | ...
/// Fragment:  | Next Header |   Reserved    |      Fragment Offset    |Res|M|
///            |                         Identification                        |
/// </code>
/// </summary>
internal static class IPv6ExtensionHeaders
{
    /// <summary>More headers than any real packet carries (RFC 8504 §5.3 lets a node set such a limit).</summary>
    public const int MaxHeaders = 8;
    public const int FragmentHeaderLength = 8;

    public enum WalkError { None, Truncated, TooMany, HopByHopNotFirst, SecondFragmentHeader }

    /// <summary>Where the chain of a packet ends, and its fragment header if it had one.</summary>
    public readonly record struct Chain(byte UpperLayer, int UpperLayerOffset, bool HasFragment, int FragmentHeaderOffset,
        byte FragmentNextHeader, int FragmentOffsetBytes, bool MoreFragments, uint FragmentIdentification)
    {
        /// <summary>The offset of the first byte after the fragment header (the fragmentable part of RFC 8200 §4.5).</summary>
        public int FragmentDataOffset => FragmentHeaderOffset + FragmentHeaderLength;
    }

    public static bool IsExtension(byte nextHeader) => nextHeader is IPv6Packet.NextHeaderHopByHop or IPv6Packet.NextHeaderRouting
        or IPv6Packet.NextHeaderFragment or IPv6Packet.NextHeaderDestinationOptions;

    /// <summary>
    /// Walks <paramref name="payload"/> (the bytes after the fixed header) starting at <paramref name="nextHeader"/>.
    /// Stops at the first non-extension header, or right after a fragment header whose offset is not zero (the rest
    /// is fragment data). Offsets are into <paramref name="payload"/>.
    /// </summary>
    public static WalkError Walk(byte nextHeader, ReadOnlySpan<byte> payload, out Chain chain)
    {
        chain = default;
        int offset = 0;
        bool fragment = false;
        int fragmentAt = 0, fragmentOffset = 0;
        bool more = false;
        uint id = 0;
        byte fragmentNext = 0;
        for (int count = 0; IsExtension(nextHeader); count++)
        {
            if (count == MaxHeaders) return WalkError.TooMany;
            if (nextHeader == IPv6Packet.NextHeaderHopByHop && count != 0) return WalkError.HopByHopNotFirst;
            // offset <= payload.Length holds here: it only grows by lengths checked against the payload below.
            var rest = payload[offset..];
            if (rest.Length < 8) return WalkError.Truncated;
            byte next = rest[0];
            int length;
            if (nextHeader == IPv6Packet.NextHeaderFragment)
            {
                if (fragment) return WalkError.SecondFragmentHeader;
                fragment = true;
                fragmentAt = offset;
                ushort word = BinaryPrimitives.ReadUInt16BigEndian(rest[2..]);
                fragmentOffset = (word >> 3) * 8;
                more = (word & 1) != 0;
                id = BinaryPrimitives.ReadUInt32BigEndian(rest[4..]);
                fragmentNext = next;
                length = FragmentHeaderLength;
                if (fragmentOffset != 0)
                {
                    // A later fragment: what follows is data, not headers.
                    chain = new Chain(next, offset + length, true, fragmentAt, fragmentNext, fragmentOffset, more, id);
                    return WalkError.None;
                }
            }
            else
            {
                length = (rest[1] + 1) * 8;
                if (length > rest.Length) return WalkError.Truncated;
            }
            offset += length;
            nextHeader = next;
        }
        chain = new Chain(nextHeader, offset, fragment, fragmentAt, fragmentNext, fragmentOffset, more, id);
        return WalkError.None;
    }
}
