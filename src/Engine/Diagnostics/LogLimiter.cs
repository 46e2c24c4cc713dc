namespace Emunet.Engine.Diagnostics;

/// <summary>
/// Rate limit for log lines a guest or a local client can trigger: per kind, at most <see cref="Burst"/> lines and
/// then one per <see cref="IntervalMs"/>; what is held back is counted and reported with the next line let through.
/// A flood of DHCPDECLINE frames or hostile vhost-user requests then costs a few lines, not one per frame. Owner
/// thread only (no locks).
/// </summary>
internal sealed class LogLimiter
{
    public const int Burst = 5;
    public const int IntervalMs = 10_000;

    private readonly long[] _windowStart;
    private readonly int[] _inWindow;
    private readonly long[] _suppressed;
    private readonly Func<long> _clock;

    /// <param name="kinds">How many kinds of line (an enum's size).</param>
    /// <param name="clock">Milliseconds, monotonic (tests pass their own).</param>
    public LogLimiter(int kinds, Func<long>? clock = null)
    {
        _windowStart = new long[kinds];
        _inWindow = new int[kinds];
        _suppressed = new long[kinds];
        _clock = clock ?? (() => Environment.TickCount64);
        Array.Fill(_windowStart, long.MinValue);
    }

    /// <summary>Lines held back so far, all kinds.</summary>
    public long Suppressed { get; private set; }

    /// <summary>
    /// True when a line of <paramref name="kind"/> may be written now; <paramref name="held"/> is how many were held
    /// back since the last one let through (to say so in the line).
    /// </summary>
    public bool Allow(int kind, out long held)
    {
        long now = _clock();
        if (_windowStart[kind] == long.MinValue || now - _windowStart[kind] >= IntervalMs)
        {
            _windowStart[kind] = now;
            _inWindow[kind] = 0;
        }
        if (_inWindow[kind] < Burst)
        {
            _inWindow[kind]++;
            held = _suppressed[kind];
            _suppressed[kind] = 0;
            return true;
        }
        _suppressed[kind]++;
        Suppressed++;
        held = 0;
        return false;
    }
}
