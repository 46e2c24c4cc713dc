using Microsoft.Extensions.Logging;

namespace Emunet.Engine.Diagnostics;

/// <summary>
/// Wraps the engine's logger factory so no line a guest or a local client can trigger floods the log: lines are
/// limited per (category, message template) by a <see cref="LogLimiter"/> — a few at once, then one per interval,
/// the next one let through saying how many were held back. Critical lines always pass. One place for every log
/// site, so a new warning cannot forget its limit. Thread-safe (the control API logs from its own threads).
/// </summary>
internal sealed class RateLimitedLoggerFactory : ILoggerFactory
{
    private readonly ILoggerFactory _inner;
    private readonly Func<long> _clock;
    private readonly object _gate = new();
    private readonly Dictionary<(string Category, string Template), int> _kinds = new();
    private LogLimiter _limiter;
    private int _kindCapacity = 256;

    public RateLimitedLoggerFactory(ILoggerFactory inner, Func<long>? clock = null)
    {
        _inner = inner;
        _clock = clock ?? (() => Environment.TickCount64);
        _limiter = new LogLimiter(_kindCapacity, _clock);
    }

    /// <summary>Lines held back so far.</summary>
    public long Suppressed
    {
        get { lock (_gate) return _limiter.Suppressed; }
    }

    public ILogger CreateLogger(string categoryName) => new Limited(this, categoryName, _inner.CreateLogger(categoryName));

    public void AddProvider(ILoggerProvider provider) => _inner.AddProvider(provider);

    public void Dispose() { } // the host owns the inner factory

    private bool Allow(string category, string template, out long held)
    {
        lock (_gate)
        {
            if (!_kinds.TryGetValue((category, template), out int kind))
            {
                if (_kinds.Count == _kindCapacity)
                {
                    // More distinct lines than expected: all further ones share the last kind (still limited).
                    kind = _kindCapacity - 1;
                }
                else
                {
                    kind = _kinds.Count;
                    _kinds.Add((category, template), kind);
                }
            }
            return _limiter.Allow(kind, out held);
        }
    }

    private sealed class Limited(RateLimitedLoggerFactory owner, string category, ILogger inner) : ILogger
    {
        public IDisposable? BeginScope<TState>(TState state) where TState : notnull => inner.BeginScope(state);

        public bool IsEnabled(LogLevel logLevel) => inner.IsEnabled(logLevel);

        public void Log<TState>(LogLevel logLevel, EventId eventId, TState state, Exception? exception, Func<TState, Exception?, string> formatter)
        {
            if (!inner.IsEnabled(logLevel)) return;
            if (logLevel == LogLevel.Critical) { inner.Log(logLevel, eventId, state, exception, formatter); return; }
            string template = TemplateOf(state) ?? eventId.Name ?? eventId.Id.ToString(System.Globalization.CultureInfo.InvariantCulture);
            if (!owner.Allow(category, template, out long held)) return;
            if (held == 0) { inner.Log(logLevel, eventId, state, exception, formatter); return; }
            inner.Log(logLevel, eventId, state, exception, (s, e) => $"{formatter(s, e)} ({held} similar lines not logged)");
        }

        private static string? TemplateOf<TState>(TState state)
        {
            if (state is IReadOnlyList<KeyValuePair<string, object?>> values)
                for (int i = values.Count - 1; i >= 0; i--)
                    if (values[i].Key == "{OriginalFormat}") return values[i].Value as string;
            return null;
        }
    }
}
