using Emunet.Engine.Runtime;

namespace Emunet.Engine.Tests.Runtime;

/// <summary>The listeners' shared back-off: doubling pauses, one log line per episode, reset by an accept.</summary>
public class AcceptBackoffTests
{
    [Fact]
    public void Pauses_double_from_the_first_to_the_cap_and_only_the_first_of_an_episode_is_announced()
    {
        var b = new AcceptBackoff();
        var lengths = new List<long>();
        var announced = new List<bool>();
        long now = 1000;
        for (int i = 0; i < 8; i++)
        {
            announced.Add(b.Pause(now));
            lengths.Add(b.PausedUntil - now);
            now = b.PausedUntil;
            b.EndPause();
            Assert.Equal(0, b.PausedUntil);
        }
        Assert.Equal(new long[] { 50, 100, 200, 400, 800, 1600, 2000, 2000 }, lengths);
        Assert.Equal(new[] { true, false, false, false, false, false, false, false }, announced);
        Assert.Equal(8, b.PausesThisEpisode);
    }

    [Fact]
    public void An_accept_ends_the_episode_and_the_next_pause_starts_short_again()
    {
        var b = new AcceptBackoff();
        b.Pause(0);
        b.EndPause();
        b.Pause(100);
        b.EndPause();
        Assert.Equal(2, b.Accepted());
        Assert.Equal(0, b.PausesThisEpisode);
        Assert.Equal(0, b.Accepted());
        Assert.True(b.Pause(500));
        Assert.Equal(500 + AcceptBackoff.FirstPauseMs, b.PausedUntil);
    }
}
