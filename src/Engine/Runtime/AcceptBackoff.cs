namespace Emunet.Engine.Runtime;

/// <summary>
/// The pauses of a listener that cannot accept (no descriptor below the <see cref="DescriptorHeadroom"/>, EMFILE or
/// ENFILE, another failure with the client still waiting): the listener is level-triggered and would wake the loop
/// again at once, so it leaves the loop for a while, from <see cref="FirstPauseMs"/> doubling to
/// <see cref="MaxPauseMs"/> while it keeps happening. An episode (the pauses until a connection is accepted again) is
/// logged once by the listener, when <see cref="Pause"/> says it starts. One per listener (the device's and each
/// forward's). Owner thread only.
/// </summary>
internal sealed class AcceptBackoff
{
    /// <summary>The first pause; it doubles up to <see cref="MaxPauseMs"/> while pauses keep coming.</summary>
    public const int FirstPauseMs = 50;
    public const int MaxPauseMs = 2000;
    private int _pauseMs;

    /// <summary>Until when (loop ms) the listener is out of the loop; 0 when it is not paused.</summary>
    public long PausedUntil { get; private set; }

    /// <summary>Pauses since a connection was last accepted (0: accepting).</summary>
    public long PausesThisEpisode { get; private set; }

    /// <summary>Starts the next pause at <paramref name="nowMs"/>; true when it begins an episode (the one to log).</summary>
    public bool Pause(long nowMs)
    {
        _pauseMs = _pauseMs == 0 ? FirstPauseMs : Math.Min(_pauseMs * 2, MaxPauseMs);
        PausedUntil = nowMs + _pauseMs;
        return PausesThisEpisode++ == 0;
    }

    /// <summary>The pause is over: the listener is back in the loop. The next pause still doubles until an accept.</summary>
    public void EndPause() => PausedUntil = 0;

    /// <summary>A connection was accepted: the episode is over. Returns how many pauses it had (0: there was none).</summary>
    public long Accepted()
    {
        long pauses = PausesThisEpisode;
        _pauseMs = 0;
        PausesThisEpisode = 0;
        return pauses;
    }
}
