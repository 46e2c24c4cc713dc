using Emunet.Engine.Diagnostics;
using Emunet.Engine.Devices.Stream;
using Emunet.Engine.Devices.VhostUser;
using Emunet.Engine.Runtime;
using Microsoft.Extensions.Logging;

namespace Emunet.Engine.Devices;

/// <summary>Builds the device a <see cref="LinkOptions"/> asks for. Throws <see cref="EngineStartException"/> naming the fix.</summary>
internal static class DeviceFactory
{
    public static IGuestDevice Create(LinkOptions link, EventLoop loop, Counters counters, ILogger logger)
    {
        if (link.Mode != LinkMode.Listen)
            throw new EngineStartException($"Dialling out to an emulator ({link.Endpoint}) is not available in this build; let the emulator connect instead.");
        return link.Kind switch
        {
            LinkKind.Stream => new StreamDevice(loop, link.Endpoint, counters, logger),
            _ => new VhostUserDevice(loop, link.Endpoint, counters, logger),
        };
    }
}
