using System.Net;
using Emunet.Engine;
using Emunet.Engine.Stack;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Abstractions;

namespace Emunet.Integration.Tests;

/// <summary>A real Emunet engine on a fresh Unix socket path, for a guest to attach to with -netdev stream (or -netdev vhost-user).</summary>
internal sealed class TestEngine : IDisposable
{
    private readonly string _dir;

    public TestEngine(NetworkConfig? network = null, string? socket = null, IReadOnlyList<Emunet.Engine.Forwarding.ForwardSpec>? forwards = null, bool vhostUser = false)
    {
        _dir = Directory.CreateTempSubdirectory("emunet-it-").FullName;
        SocketPath = socket ?? Path.Combine(_dir, "guest.sock");
        Engine = new EmunetEngine(new EngineOptions
        {
            Name = "it",
            StreamSocket = vhostUser ? null : SocketPath,
            VhostUserSocket = vhostUser ? SocketPath : null,
            Network = network ?? new NetworkConfig(),
            Forwards = forwards ?? Array.Empty<Emunet.Engine.Forwarding.ForwardSpec>(),
        }, NullLoggerFactory.Instance);
        Engine.Start();
    }

    public EmunetEngine Engine { get; }
    public string SocketPath { get; }

    public static NetworkConfig WithDns(int port) => new() { DnsUpstream = [new IPEndPoint(IPAddress.Loopback, port)] };

    public void Dispose()
    {
        Engine.Dispose();
        try { Directory.Delete(_dir, true); } catch (IOException) { }
    }
}
