using Emunet.Engine.Diagnostics;
using Emunet.Engine.Devices.Stream;
using Emunet.Engine.Devices.VhostUser;
using Emunet.Engine.Runtime;
using Microsoft.Extensions.Logging;

namespace Emunet.Engine.Devices;

/// <summary>Builds the device a <see cref="LinkOptions"/> asks for. Throws <see cref="EngineStartException"/> naming the fix.</summary>
internal static class DeviceFactory
{
    public static IGuestDevice Create(LinkOptions link, EventLoop loop, Counters counters, ILogger logger) => (link.Kind, link.Mode) switch
    {
        (LinkKind.Stream, LinkMode.Listen) => new StreamDevice(loop, link.Endpoint, counters, logger),
        (LinkKind.Stream, _) => new StreamDevice(loop, EmulatorDialer.ForEndpoint(loop, link.Endpoint, "--connect", tcpAllowed: true, logger), counters, logger),
        (_, LinkMode.Listen) => new VhostUserDevice(loop, link.Endpoint, counters, logger),
        // QEMU as the vhost-user server: -chardev socket,id=c0,path=P,server=on -netdev vhost-user,chardev=c0.
        _ => new VhostUserDevice(loop, EmulatorDialer.ForEndpoint(loop, link.Endpoint, "--connect", tcpAllowed: false, logger), counters, logger),
    };
}
