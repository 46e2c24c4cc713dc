using System.Collections.Concurrent;

namespace Emunet.Bench;

/// <summary>One measured value: a backend, an MTU mode (null for per-guest figures), a repetition, a metric.</summary>
internal sealed record Sample(string Backend, string? Mode, int Repetition, string Metric, double Value);

/// <summary>Summary of one (backend, mode, metric): the median of the repetitions and their spread.</summary>
internal sealed record Summary(double Median, double Min, double Max, int Count);

/// <summary>Every sample of a run, and the failures (a backend that could not be measured is reported, not dropped).</summary>
internal sealed class ResultSet
{
    private readonly ConcurrentQueue<Sample> _samples = new();
    private readonly ConcurrentQueue<string> _errors = new();

    public IReadOnlyList<Sample> Samples => _samples.ToArray();
    public IReadOnlyList<string> Errors => _errors.ToArray();

    public void Add(string backend, MtuMode? mode, int rep, string metric, double value)
    {
        if (double.IsFinite(value)) _samples.Enqueue(new Sample(backend, mode?.Name(), rep, metric, value));
    }

    public void AddError(string text) => _errors.Enqueue(text);

    public Summary? Get(string backend, string? mode, string metric)
    {
        var v = _samples.Where(s => s.Backend == backend && s.Mode == mode && s.Metric == metric).Select(s => s.Value).Order().ToArray();
        if (v.Length == 0) return null;
        double median = v.Length % 2 == 1 ? v[v.Length / 2] : (v[v.Length / 2 - 1] + v[v.Length / 2]) / 2;
        return new Summary(median, v[0], v[^1], v.Length);
    }
}
