using Emunet.Engine.Stack;

namespace Emunet.Engine.Tests.Stack;

/// <summary>The hole tracking both reassemblies share, fragment by fragment.</summary>
public class FragmentHolesTests
{
    [Fact]
    public void Fragments_in_any_order_complete_once_every_byte_up_to_the_last_is_held()
    {
        var holes = new FragmentHoles(65535);
        Assert.True(holes.Fits(16, 20, more: false));
        holes.Record(16, 20, more: false);
        Assert.Equal(20, holes.Length);
        Assert.False(holes.IsComplete);
        Assert.True(holes.Fits(0, 8, more: true));
        holes.Record(0, 8, more: true);
        Assert.False(holes.IsComplete);          // the hole 8..16 is left
        holes.Record(8, 16, more: true);
        Assert.True(holes.IsComplete);
        Assert.Equal((20, 20), (holes.BytesReceived, holes.HighestEnd));
    }

    [Theory]
    [InlineData(0, 8, true)]      // the same block again
    [InlineData(8, 24, true)]     // overlaps 16..24
    [InlineData(16, 40, true)]    // past the end the last fragment fixed
    [InlineData(16, 24, false)]   // a second last fragment that moves the end
    [InlineData(0, 16, false)]    // a last fragment ending before data held
    public void What_costs_the_datagram_does_not_fit(int offset, int end, bool more)
    {
        var holes = new FragmentHoles(65535);
        holes.Record(0, 8, more: true);
        holes.Record(16, 32, more: false);
        Assert.False(holes.Fits(offset, end, more));
    }

    [Fact]
    public void Reset_forgets_everything()
    {
        var holes = new FragmentHoles(65535);
        holes.Record(65528, 65535, more: false);
        holes.Reset();
        Assert.Equal((-1, 0, 0), (holes.Length, holes.HighestEnd, holes.BytesReceived));
        Assert.True(holes.Fits(65528, 65535, more: false));
    }
}
