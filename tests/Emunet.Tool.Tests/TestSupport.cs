using System.Diagnostics;
using System.Net;
using System.Net.Sockets;
using System.Text;
using Emunet.Engine.Control;
using Emunet.Engine.Forwarding;
using Emunet.Engine.Stack.Nat;

namespace Emunet.Tool.Tests;

/// <summary>A scratch folder with a short path (Unix socket paths are limited to 107 bytes); deleted on dispose.</summary>
internal sealed class TempFolder : IDisposable
{
    public TempFolder()
    {
        Path = System.IO.Path.Combine("/tmp", "emt-" + Guid.NewGuid().ToString("N")[..8]);
        Directory.CreateDirectory(Path);
    }

    public string Path { get; }

    public string File(string name) => System.IO.Path.Combine(Path, name);

    public void Dispose()
    {
        try { Directory.Delete(Path, recursive: true); } catch (IOException) { }
    }
}

/// <summary>Points <see cref="RuntimeDirectory"/> at a fresh folder for the test's duration. Tests using it share one
/// non-parallel collection, since the variable is process-wide.</summary>
internal sealed class RuntimeDirScope : IDisposable
{
    private readonly string? _saved = Environment.GetEnvironmentVariable(RuntimeDirectory.OverrideVariable);
    private readonly TempFolder _folder = new();

    public RuntimeDirScope()
    {
        Path = System.IO.Path.Combine(_folder.Path, "run");
        Environment.SetEnvironmentVariable(RuntimeDirectory.OverrideVariable, Path);
    }

    public string Path { get; }

    public string Scratch(string name) => _folder.File(name);

    public void Dispose()
    {
        Environment.SetEnvironmentVariable(RuntimeDirectory.OverrideVariable, _saved);
        _folder.Dispose();
    }
}

[CollectionDefinition(Name, DisableParallelization = true)]
public sealed class RuntimeDirCollection
{
    public const string Name = "runtime directory";
}

internal static class Wait
{
    /// <summary>Polls <paramref name="condition"/> until it holds or <paramref name="timeout"/> passes; then fails the test.</summary>
    public static void Until(Func<bool> condition, string what, TimeSpan? timeout = null)
    {
        var sw = Stopwatch.StartNew();
        var limit = timeout ?? TimeSpan.FromSeconds(10);
        while (!condition())
        {
            if (sw.Elapsed > limit) Assert.Fail($"Timed out after {limit.TotalSeconds} s waiting for: {what}");
            Thread.Sleep(10);
        }
    }
}

/// <summary>An <see cref="IEngineControl"/> whose answers and failures a test sets.</summary>
internal sealed class FakeEngine : IEngineControl
{
    public Exception? AddForwardFailure;
    public Exception? CaptureFailure;
    public readonly List<ForwardSpec> Added = new();
    public readonly List<ConnectionInfo> Connections = new();
    public int ShutdownRequests;
    public int Calls;
    public string? CapturePath;
    public TaskCompletionSource? BlockStats;

    public InstanceInfo Info => new()
    {
        Name = "fake", ProcessId = Environment.ProcessId, Version = "0.1.0", Device = "stream:unix:/tmp/fake.sock",
        ControlSocket = "/tmp/fake-control.sock", Started = DateTimeOffset.UnixEpoch,
    };

    public Task<ForwardInfo> AddForwardAsync(ForwardSpec spec, CancellationToken cancellationToken = default)
    {
        Interlocked.Increment(ref Calls);
        if (AddForwardFailure is not null) return Task.FromException<ForwardInfo>(AddForwardFailure);
        lock (Added) Added.Add(spec);
        return Task.FromResult(new ForwardInfo { Spec = spec, BoundPort = spec.HostPort == 0 ? 40000 : spec.HostPort, Created = DateTimeOffset.UnixEpoch });
    }

    public Task<IReadOnlyList<ForwardInfo>> ListForwardsAsync(CancellationToken cancellationToken = default)
    {
        Interlocked.Increment(ref Calls);
        lock (Added)
            return Task.FromResult<IReadOnlyList<ForwardInfo>>(Added.Select(s => new ForwardInfo { Spec = s, BoundPort = s.HostPort, Created = DateTimeOffset.UnixEpoch }).ToList());
    }

    public Task<ForwardInfo?> RemoveForwardAsync(ForwardProtocol protocol, IPAddress hostAddress, int hostPort, bool force, CancellationToken cancellationToken = default)
    {
        Interlocked.Increment(ref Calls);
        lock (Added)
        {
            var spec = Added.FirstOrDefault(s => s.Protocol == protocol && s.HostAddress.Equals(hostAddress) && s.HostPort == hostPort);
            if (spec is null) return Task.FromResult<ForwardInfo?>(null);
            Added.Remove(spec);
            return Task.FromResult<ForwardInfo?>(new ForwardInfo { Spec = spec, BoundPort = hostPort, Created = DateTimeOffset.UnixEpoch });
        }
    }

    public Task<IReadOnlyList<ConnectionInfo>> ListConnectionsAsync(CancellationToken cancellationToken = default)
    {
        Interlocked.Increment(ref Calls);
        lock (Connections) return Task.FromResult<IReadOnlyList<ConnectionInfo>>(Connections.ToList());
    }

    public async Task<EngineStatistics> GetStatisticsAsync(CancellationToken cancellationToken = default)
    {
        Interlocked.Increment(ref Calls);
        if (BlockStats is not null) await BlockStats.Task;
        return new EngineStatistics { FramesFromGuest = 3, DropsByReason = new Dictionary<string, long> { ["FrameTooShort"] = 2 }, TotalDrops = 2 };
    }

    public Task StartCaptureAsync(string path, CancellationToken cancellationToken = default)
    {
        Interlocked.Increment(ref Calls);
        if (CaptureFailure is not null) return Task.FromException(CaptureFailure);
        CapturePath = path;
        return Task.CompletedTask;
    }

    public Task<string?> StopCaptureAsync(CancellationToken cancellationToken = default)
    {
        Interlocked.Increment(ref Calls);
        string? p = CapturePath;
        CapturePath = null;
        return Task.FromResult(p);
    }

    public void RequestShutdown() => Interlocked.Increment(ref ShutdownRequests);
}

/// <summary>A raw line client, for sending what <see cref="ControlClient"/> never would.</summary>
internal sealed class RawClient : IDisposable
{
    private readonly Socket _socket;
    private readonly NetworkStream _stream;
    private readonly StreamReader _reader;

    public RawClient(string path)
    {
        _socket = new Socket(AddressFamily.Unix, SocketType.Stream, ProtocolType.Unspecified) { ReceiveTimeout = 10_000 };
        _socket.Connect(new UnixDomainSocketEndPoint(path));
        _stream = new NetworkStream(_socket, ownsSocket: false);
        _reader = new StreamReader(_stream, Encoding.UTF8);
    }

    public void Send(string text) => _socket.Send(Encoding.UTF8.GetBytes(text));

    public void Send(byte[] bytes) => _socket.Send(bytes);

    /// <summary>The next reply line, or null when the server closed the connection.</summary>
    public string? ReadLine() => _reader.ReadLine();

    public void Dispose()
    {
        _reader.Dispose();
        _stream.Dispose();
        _socket.Dispose();
    }
}

/// <summary>A <see cref="FakeEngine"/> served as instance <paramref name="name"/> of the current runtime folder.</summary>
internal sealed class FakeInstance : IAsyncDisposable
{
    private readonly ControlServer _server;

    public FakeInstance(string name)
    {
        RuntimeDirectory.Ensure();
        _server = new ControlServer(Engine, RuntimeDirectory.SocketPathFor(name), Microsoft.Extensions.Logging.Abstractions.NullLogger.Instance);
        _server.Start();
    }

    public FakeEngine Engine { get; } = new();

    public ValueTask DisposeAsync() => _server.DisposeAsync();
}
