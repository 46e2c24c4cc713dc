using System.Net;
using System.Text.Json;
using Emunet.Engine.Control;
using Emunet.Engine.Forwarding;
using Emunet.Engine.Stack.Nat;
using Microsoft.Extensions.Logging.Abstractions;

namespace Emunet.Fuzz.Targets;

/// <summary>
/// The <c>control</c> target: one request line (the input up to its first newline, at most
/// <see cref="ControlProtocol.MaxRequestBytes"/>) through the control server's request handling, in-process, against
/// an engine that never fails. So every reply must be an answer the protocol defines: never <c>internal</c>, and
/// always one line of valid JSON.
/// </summary>
internal static class ControlTarget
{
    public static void Run(ReadOnlySpan<byte> input)
    {
        int newline = input.IndexOf((byte)'\n');
        var line = input[..(newline < 0 ? input.Length : newline)];
        if (line.Length > ControlProtocol.MaxRequestBytes) line = line[..ControlProtocol.MaxRequestBytes];
        var server = new ControlServer(new QuietEngine(), "/nonexistent/emunet-fuzz.sock", NullLogger.Instance);
        var reply = server.HandleLineAsync(line.ToArray(), CancellationToken.None).GetAwaiter().GetResult();
        if (!reply.Ok && reply.Error?.Code == ControlErrorCodes.Internal)
            throw new FuzzInvariantException($"The control server failed inside: {reply.Error.Message}");
        byte[] encoded = ControlServer.Encode(reply);
        if (encoded[^1] != (byte)'\n' || Array.IndexOf(encoded, (byte)'\n') != encoded.Length - 1)
            throw new FuzzInvariantException("A reply is not exactly one line.");
        using var _ = JsonDocument.Parse(encoded);
    }

    /// <summary>An engine that answers every call with a plausible snapshot and never throws.</summary>
    private sealed class QuietEngine : IEngineControl
    {
        private static readonly DateTimeOffset Epoch = DateTimeOffset.UnixEpoch;

        public InstanceInfo Info => new()
        {
            Name = "fuzz", ProcessId = 1, Version = "0.1.0", Device = "stream:unix:/tmp/fuzz.sock",
            ControlSocket = "/tmp/fuzz-control.sock", Started = Epoch, GuestConnected = true, GuestMac = "52:54:00:12:34:56",
        };

        private static ForwardInfo Forward(ForwardSpec spec) => new() { Spec = spec, BoundPort = spec.HostPort == 0 ? 40000 : spec.HostPort, Created = Epoch };

        public Task<ForwardInfo> AddForwardAsync(ForwardSpec spec, CancellationToken cancellationToken = default) =>
            Task.FromResult(Forward(spec));

        public Task<IReadOnlyList<ForwardInfo>> ListForwardsAsync(CancellationToken cancellationToken = default) =>
            Task.FromResult<IReadOnlyList<ForwardInfo>>([Forward(new ForwardSpec(ForwardProtocol.Tcp, IPAddress.Loopback, 10977, 10977))]);

        public Task<ForwardInfo?> RemoveForwardAsync(ForwardProtocol protocol, IPAddress hostAddress, int hostPort, bool force,
            CancellationToken cancellationToken = default) =>
            Task.FromResult<ForwardInfo?>(Forward(new ForwardSpec(protocol, hostAddress, hostPort, hostPort)));

        public Task<IReadOnlyList<ConnectionInfo>> ListConnectionsAsync(CancellationToken cancellationToken = default) =>
            Task.FromResult<IReadOnlyList<ConnectionInfo>>(
            [
                new() { Id = 1, Protocol = FlowProtocol.Tcp, Direction = FlowDirection.Forwarded, State = "ESTABLISHED",
                    GuestEndPoint = new(IPAddress.Parse("10.0.2.15"), 10977), GuestPeerEndPoint = new(IPAddress.Parse("10.0.2.2"), 55132),
                    HostLocalEndPoint = new(IPAddress.Loopback, 10977), HostRemoteEndPoint = new(IPAddress.Loopback, 49770),
                    Started = Epoch, Forward = "tcp:10977" },
                new() { Id = 2, Protocol = FlowProtocol.Udp, Direction = FlowDirection.Outbound, State = "dns",
                    GuestEndPoint = new(IPAddress.Parse("10.0.2.15"), 5353), GuestPeerEndPoint = new(IPAddress.Parse("10.0.2.3"), 53),
                    Started = Epoch },
            ]);

        public Task<EngineStatistics> GetStatisticsAsync(CancellationToken cancellationToken = default) =>
            Task.FromResult(new EngineStatistics { DropsByReason = new Dictionary<string, long> { ["FrameTooShort"] = 1 } });

        public Task StartCaptureAsync(string path, CancellationToken cancellationToken = default) => Task.CompletedTask;

        public Task<string?> StopCaptureAsync(CancellationToken cancellationToken = default) => Task.FromResult<string?>(null);

        public void RequestShutdown() { }
    }
}
