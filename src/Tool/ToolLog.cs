using Microsoft.Extensions.Configuration;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Console;

namespace Emunet.Tool;

/// <summary>
/// Logging for <c>run</c> and <c>launch</c>, configured as .NET hosts do: the <c>Logging</c> section of the environment
/// (<c>Logging__Console__FormatterName=json</c>, <c>Logging__LogLevel__Emunet.Tcp=Debug</c>,
/// <c>Logging__Console__FormatterOptions__UseUtcTimestamp=true</c>, ...) over Emunet's defaults: one console logger on
/// stderr, the simple formatter on one line, times as ISO 8601 with the zone. <c>--log-level</c> is the minimum level
/// where the environment sets none. The tool's own messages carry the event IDs below (1xx); the control server's are 2xx.
/// </summary>
internal static partial class ToolLog
{
    internal const string TimestampFormat = "yyyy-MM-ddTHH:mm:ss.fffzzz";

    internal static ILoggerFactory CreateFactory(LogLevel level) => CreateFactory(level,
        new ConfigurationBuilder().AddEnvironmentVariables().Build().GetSection("Logging"));

    internal static ILoggerFactory CreateFactory(LogLevel level, IConfiguration logging) => LoggerFactory.Create(builder =>
    {
        builder.SetMinimumLevel(level);
        builder.AddConfiguration(logging);
        // Defaults first: AddConsole then binds the configuration over them, so the environment wins.
        builder.Services.Configure<ConsoleLoggerOptions>(o =>
        {
            o.FormatterName = ConsoleFormatterNames.Simple;
            o.LogToStandardErrorThreshold = LogLevel.Trace;
            // A stderr nobody reads must never block the engine's thread: when the console's queue is full, lines are
            // dropped, not waited for (the engine's own rate limit keeps floods out of the queue in the first place).
            o.QueueFullMode = ConsoleLoggerQueueFullMode.DropWrite;
            o.MaxQueueLength = 10_000;
        });
        builder.Services.Configure<SimpleConsoleFormatterOptions>(o =>
        {
            o.SingleLine = true;
            o.TimestampFormat = TimestampFormat + " ";
            o.ColorBehavior = LoggerColorBehavior.Disabled;
        });
        builder.Services.Configure<JsonConsoleFormatterOptions>(o =>
        {
            o.TimestampFormat = TimestampFormat;
            // Log lines are read by people and log shippers, not embedded in HTML: keep '+', quotes and non-ASCII as they are.
            o.JsonWriterOptions = new System.Text.Json.JsonWriterOptions { Encoder = System.Text.Encodings.Web.JavaScriptEncoder.UnsafeRelaxedJsonEscaping };
        });
        builder.AddConsole();
    });

    [LoggerMessage(EventId = 106, EventName = "AndroidHint", Level = LogLevel.Information,
        Message = "Android Emulator: {Arguments} (its first link -net-socket, its second -wifi-socket; give a second --connect for the Wi-Fi link; keep clear of ports 5554-5585)")]
    internal static partial void AndroidHint(this ILogger logger, string arguments);

    [LoggerMessage(EventId = 101, EventName = "InstanceReady", Level = LogLevel.Information,
        Message = "Instance '{Name}' ready on {Device}; control socket {Control}. QEMU: {QemuArguments}")]
    internal static partial void InstanceReady(this ILogger logger, string name, string device, string control, string qemuArguments);

    [LoggerMessage(EventId = 102, EventName = "InstanceStopping", Level = LogLevel.Information, Message = "Instance '{Name}' stopping.")]
    internal static partial void InstanceStopping(this ILogger logger, string name);

    [LoggerMessage(EventId = 103, EventName = "EmulatorStarted", Level = LogLevel.Information,
        Message = "Instance '{Name}' serving emulator process {Pid} on {Socket}.")]
    internal static partial void EmulatorStarted(this ILogger logger, string name, int pid, string socket);

    [LoggerMessage(EventId = 104, EventName = "EmulatorStopping", Level = LogLevel.Information, Message = "Stopping the emulator (process {Pid}).")]
    internal static partial void EmulatorStopping(this ILogger logger, int pid);

    [LoggerMessage(EventId = 105, EventName = "EmulatorExited", Level = LogLevel.Information,
        Message = "The emulator exited with code {Code}; stopping instance '{Name}'.")]
    internal static partial void EmulatorExited(this ILogger logger, int code, string name);
}
