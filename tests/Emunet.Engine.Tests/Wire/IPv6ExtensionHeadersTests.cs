using Emunet.Engine.Wire;

namespace Emunet.Engine.Tests.Wire;

public class IPv6ExtensionHeadersTests
{
    private static byte[] Header(byte next, int lengthUnits = 0)
    {
        var h = new byte[(lengthUnits + 1) * 8];
        h[0] = next;
        h[1] = (byte)lengthUnits;
        return h;
    }

    private static byte[] Fragment(byte next, int offsetBytes, bool more, uint id)
    {
        var h = new byte[8];
        h[0] = next;
        ushort word = (ushort)((offsetBytes / 8) << 3 | (more ? 1 : 0));
        h[2] = (byte)(word >> 8);
        h[3] = (byte)word;
        h[4] = (byte)(id >> 24); h[5] = (byte)(id >> 16); h[6] = (byte)(id >> 8); h[7] = (byte)id;
        return h;
    }

    [Fact]
    public void No_extension_headers()
    {
        Assert.Equal(IPv6ExtensionHeaders.WalkError.None, IPv6ExtensionHeaders.Walk(IPv6Packet.NextHeaderUdp, new byte[8], out var chain));
        Assert.Equal(IPv6Packet.NextHeaderUdp, chain.UpperLayer);
        Assert.Equal(0, chain.UpperLayerOffset);
        Assert.False(chain.HasFragment);
    }

    [Fact]
    public void Hop_by_hop_then_destination_options_then_tcp()
    {
        var payload = Header(IPv6Packet.NextHeaderDestinationOptions).Concat(Header(IPv6Packet.NextHeaderTcp, 1)).Concat(new byte[20]).ToArray();
        Assert.Equal(IPv6ExtensionHeaders.WalkError.None, IPv6ExtensionHeaders.Walk(IPv6Packet.NextHeaderHopByHop, payload, out var chain));
        Assert.Equal(IPv6Packet.NextHeaderTcp, chain.UpperLayer);
        Assert.Equal(24, chain.UpperLayerOffset);
    }

    [Fact]
    public void First_fragment_walks_to_the_upper_layer()
    {
        var payload = Fragment(IPv6Packet.NextHeaderUdp, 0, true, 0xdeadbeef).Concat(new byte[16]).ToArray();
        Assert.Equal(IPv6ExtensionHeaders.WalkError.None, IPv6ExtensionHeaders.Walk(IPv6Packet.NextHeaderFragment, payload, out var chain));
        Assert.True(chain.HasFragment);
        Assert.True(chain.MoreFragments);
        Assert.Equal(0, chain.FragmentOffsetBytes);
        Assert.Equal(0xdeadbeefu, chain.FragmentIdentification);
        Assert.Equal(IPv6Packet.NextHeaderUdp, chain.FragmentNextHeader);
        Assert.Equal(8, chain.FragmentDataOffset);
    }

    [Fact]
    public void Later_fragment_stops_at_the_fragment_header()
    {
        // What follows a non-first fragment header is data even when it looks like another header.
        var payload = Fragment(IPv6Packet.NextHeaderDestinationOptions, 1232, false, 7).Concat(Header(IPv6Packet.NextHeaderUdp, 200)[..8]).ToArray();
        Assert.Equal(IPv6ExtensionHeaders.WalkError.None, IPv6ExtensionHeaders.Walk(IPv6Packet.NextHeaderFragment, payload, out var chain));
        Assert.Equal(1232, chain.FragmentOffsetBytes);
        Assert.Equal(8, chain.UpperLayerOffset);
    }

    [Fact]
    public void A_long_chain_is_refused()
    {
        var payload = Enumerable.Range(0, IPv6ExtensionHeaders.MaxHeaders + 1).SelectMany(_ => Header(IPv6Packet.NextHeaderDestinationOptions)).ToArray();
        Assert.Equal(IPv6ExtensionHeaders.WalkError.TooMany,
            IPv6ExtensionHeaders.Walk(IPv6Packet.NextHeaderDestinationOptions, payload, out _));
    }

    [Fact]
    public void A_header_naming_itself_loops_no_further_than_the_limit()
    {
        // Every header says "destination options follow" and the bytes repeat: the walk ends by count or by length.
        var payload = new byte[4096];
        for (int i = 0; i < payload.Length; i += 8) payload[i] = IPv6Packet.NextHeaderDestinationOptions;
        Assert.Equal(IPv6ExtensionHeaders.WalkError.TooMany,
            IPv6ExtensionHeaders.Walk(IPv6Packet.NextHeaderDestinationOptions, payload, out _));
    }

    [Fact]
    public void Hop_by_hop_after_the_first_is_refused() =>
        Assert.Equal(IPv6ExtensionHeaders.WalkError.HopByHopNotFirst,
            IPv6ExtensionHeaders.Walk(IPv6Packet.NextHeaderDestinationOptions, Header(IPv6Packet.NextHeaderHopByHop).Concat(Header(17)).ToArray(), out _));

    [Fact]
    public void Two_fragment_headers_are_refused() =>
        Assert.Equal(IPv6ExtensionHeaders.WalkError.SecondFragmentHeader,
            IPv6ExtensionHeaders.Walk(IPv6Packet.NextHeaderFragment,
                Fragment(IPv6Packet.NextHeaderFragment, 0, true, 1).Concat(Fragment(17, 0, true, 1)).ToArray(), out _));

    [Theory]
    [InlineData(4)]
    [InlineData(12)]
    public void Truncated_headers_are_refused(int length)
    {
        // A destination options header claiming 16 bytes.
        var payload = Header(IPv6Packet.NextHeaderUdp, 1)[..length];
        Assert.Equal(IPv6ExtensionHeaders.WalkError.Truncated,
            IPv6ExtensionHeaders.Walk(IPv6Packet.NextHeaderDestinationOptions, payload, out _));
    }
}
