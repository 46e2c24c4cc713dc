using System.Runtime.InteropServices;
using Emunet.Engine;
using Emunet.Engine.Stack;
using Emunet.Engine.Wire;
using Microsoft.Extensions.Logging;

// A bare engine process for tests that must kill one (SIGKILL) and start another with the same arguments: one guest
// link given as link options, the EmunetEngine run in-process, no control socket, until SIGTERM/SIGINT or a kill.
//   Emunet.EngineHost (--connect ENDPOINT | --listen ENDPOINT) [--vhost-user] [--guest A.B.C.D]
// ENDPOINT as LinkOptions takes it (tcp:127.0.0.1:PORT, unix:PATH, a socket path). Prints "engine started: DEVICE"
// on stdout once the link is up (dialling or listening); logs go to stderr.
LinkMode? mode = null;
string? endpoint = null;
var kind = LinkKind.Stream;
IPv4Address? guest = null;
for (int i = 0; i < args.Length; i++)
{
    switch (args[i])
    {
        case "--connect" when i + 1 < args.Length: mode = LinkMode.Connect; endpoint = args[++i]; break;
        case "--listen" when i + 1 < args.Length: mode = LinkMode.Listen; endpoint = args[++i]; break;
        case "--vhost-user": kind = LinkKind.VhostUser; break;
        case "--guest" when i + 1 < args.Length: guest = IPv4Address.Parse(args[++i]); break;
        default:
            Console.Error.WriteLine($"Emunet.EngineHost: unknown argument '{args[i]}'. Usage: (--connect|--listen) ENDPOINT [--vhost-user] [--guest A.B.C.D]");
            return 2;
    }
}
if (mode is null || endpoint is null)
{
    Console.Error.WriteLine("Emunet.EngineHost: give --connect ENDPOINT or --listen ENDPOINT.");
    return 2;
}

using var loggers = LoggerFactory.Create(b => b
    .SetMinimumLevel(LogLevel.Information)
    .AddSimpleConsole(o => o.SingleLine = true)
    .AddConsole(o => o.LogToStandardErrorThreshold = LogLevel.Trace));
var network = new NetworkConfig();
if (guest is not null) network = network with { Guest = guest.Value };
EmunetEngine engine;
try
{
    engine = new EmunetEngine(new EngineOptions
    {
        Name = "enginehost",
        Links = [new LinkOptions(kind, mode.Value, endpoint)],
        Network = network,
    }, loggers);
    engine.Start();
}
catch (EngineStartException e)
{
    Console.Error.WriteLine($"Emunet.EngineHost: {e.Message}");
    return 7;
}
using (engine)
{
    using var term = PosixSignalRegistration.Create(PosixSignal.SIGTERM, c => { c.Cancel = true; engine.RequestShutdown(); });
    using var interrupt = PosixSignalRegistration.Create(PosixSignal.SIGINT, c => { c.Cancel = true; engine.RequestShutdown(); });
    Console.Out.WriteLine($"engine started: {engine.Info.Device}");
    Console.Out.Flush();
    await engine.Completion;
}
return 0;
