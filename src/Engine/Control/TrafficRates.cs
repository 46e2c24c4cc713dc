namespace Emunet.Engine.Control;

/// <summary>
/// Bytes per second each way, per key (an instance, a forward, a flow), from byte counters sampled over time: the
/// live views of the tool (<c>--watch</c>) and the module (<c>-Watch</c>) keep one and feed it every sample. A counter
/// that went down (its flows closed) counts as no traffic, not as negative.
/// </summary>
public sealed class TrafficRates<TKey> where TKey : notnull
{
    private Dictionary<TKey, (long ToGuest, long FromGuest)> _last = new();
    private DateTimeOffset _lastTime;

    /// <summary>Takes a sample at <paramref name="now"/>; returns the rates since the last sample (none for the first,
    /// or for a key seen for the first time).</summary>
    public Dictionary<TKey, (double ToGuest, double FromGuest)> Sample(DateTimeOffset now, IEnumerable<(TKey Key, long ToGuest, long FromGuest)> counters)
    {
        var current = new Dictionary<TKey, (long, long)>();
        foreach (var (key, toGuest, fromGuest) in counters)
        {
            current.TryGetValue(key, out var sum);
            current[key] = (sum.Item1 + toGuest, sum.Item2 + fromGuest);
        }
        var rates = new Dictionary<TKey, (double, double)>();
        double seconds = (now - _lastTime).TotalSeconds;
        if (_last.Count > 0 && seconds > 0)
        {
            foreach (var (key, (toGuest, fromGuest)) in current)
            {
                if (!_last.TryGetValue(key, out var before)) continue;
                rates[key] = (Math.Max(0, toGuest - before.ToGuest) / seconds, Math.Max(0, fromGuest - before.FromGuest) / seconds);
            }
        }
        _last = current;
        _lastTime = now;
        return rates;
    }
}
