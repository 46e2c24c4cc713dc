using System.Collections.Concurrent;
using Microsoft.Extensions.Logging;

namespace Emunet.Engine.Tests;

/// <summary>Log lines as text, in order; thread-safe (the loop thread logs, the test reads).</summary>
internal sealed class RecordingLogger : ILogger
{
    private readonly ConcurrentQueue<string> _lines = new();

    public int Count(string text, string? after = null)
    {
        var lines = _lines.ToArray();
        int start = after is null ? 0 : Array.FindIndex(lines, l => l.Contains(after)) + 1;
        return lines.Skip(start).Count(l => l.Contains(text, StringComparison.Ordinal));
    }

    public IDisposable? BeginScope<TState>(TState state) where TState : notnull => null;
    public bool IsEnabled(LogLevel logLevel) => true;

    public void Log<TState>(LogLevel logLevel, EventId eventId, TState state, Exception? exception, Func<TState, Exception?, string> formatter) =>
        _lines.Enqueue(formatter(state, exception));
}
