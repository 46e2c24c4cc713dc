using System.Diagnostics;
using System.Net;
using Emunet.Engine.Control;
using Emunet.Engine.Devices;
using Emunet.Engine.Devices.Stream;
using Emunet.Engine.Forwarding;
using Emunet.Engine.Runtime;
using Emunet.Engine.Stack;
using Emunet.Engine.Stack.Nat;
using Microsoft.Extensions.Logging;

namespace Emunet.Engine;

/// <summary>
/// One engine instance: the guest's device, the NAT stack, the forwards, all owned by one thread running the
/// <see cref="EventLoop"/>. The control API's calls are marshalled onto that thread and answered with snapshots.
/// </summary>
public sealed class EmunetEngine : IEngineControl, IDisposable
{
    private readonly EngineOptions _options;
    private readonly ILogger _logger;
    private readonly EventLoop _loop = new();
    private readonly Counters _counters = new();
    private readonly StreamDevice _device;
    private readonly NetStack _stack;
    private readonly List<IFlowSource> _flowSources = new();
    private readonly Dictionary<(ForwardProtocol, IPAddress, int), ForwardEntry> _forwards = new();
    private readonly TaskCompletionSource _completion = new(TaskCreationOptions.RunContinuationsAsynchronously);
    private readonly DateTimeOffset _started = DateTimeOffset.Now;
    private Thread? _thread;
    private int _disposed;

    public EmunetEngine(EngineOptions options, ILoggerFactory loggerFactory)
    {
        _options = options;
        _logger = loggerFactory.CreateLogger("Emunet.Engine");
        if (options.VhostUserSocket is not null)
            throw new EngineStartException("The vhost-user device is not available in this build; use --socket PATH (QEMU -netdev stream).");
        if (options.StreamSocket is null)
            throw new EngineStartException("No guest device given: use --socket PATH (QEMU -netdev stream) or --socket tcp:127.0.0.1:PORT.");
        _device = new StreamDevice(_loop, options.StreamSocket, _counters, loggerFactory.CreateLogger("Emunet.Device"));
        _stack = BuildStack(loggerFactory);
        _device.Handler = _stack;
    }

    private NetStack BuildStack(ILoggerFactory loggerFactory)
    {
        var map = new AddressMap(_options.Network);
        var stack = new NetStack(_loop, _device, _options.Network, map, _counters, loggerFactory.CreateLogger("Emunet.Stack"));
        _flowSources.Add(stack);
        return stack;
    }

    /// <summary>Completes when the engine has stopped.</summary>
    public Task Completion => _completion.Task;

    public InstanceInfo Info => new()
    {
        Name = _options.Name,
        ProcessId = Environment.ProcessId,
        Version = typeof(EmunetEngine).Assembly.GetName().Version?.ToString(3) ?? "0.0.0",
        Device = _device.Description,
        ControlSocket = _options.ControlSocketPath ?? "",
        Started = _started,
        GuestConnected = _device.IsConnected,
    };

    /// <summary>Binds the device socket and the forwards given at start, then starts the owner thread.</summary>
    public void Start()
    {
        _device.Start();
        try
        {
            foreach (var spec in _options.Forwards) AddForwardOnOwner(spec);
        }
        catch (Exception e) when (e is InvalidOperationException or ArgumentException)
        {
            _device.Dispose();
            throw new EngineStartException(e.Message, e);
        }
        _thread = new Thread(RunLoop) { Name = $"emunet:{_options.Name}", IsBackground = true };
        _thread.Start();
        _logger.LogInformation("Engine '{Name}' started on {Device}.", _options.Name, _device.Description);
    }

    private void RunLoop()
    {
        try
        {
            _loop.Run();
            _completion.TrySetResult();
        }
        catch (Exception e)
        {
            _logger.LogCritical(e, "The engine loop failed.");
            _completion.TrySetException(e);
        }
        finally
        {
            foreach (var f in _forwards.Values) f.Stop(force: true);
            _forwards.Clear();
            _stack.Dispose();
            _device.Dispose();
        }
    }

    public Task<ForwardInfo> AddForwardAsync(ForwardSpec spec, CancellationToken cancellationToken = default) =>
        _loop.InvokeAsync(() => AddForwardOnOwner(spec));

    private ForwardInfo AddForwardOnOwner(ForwardSpec spec)
    {
        var key = (spec.Protocol, spec.HostAddress, spec.HostPort);
        if (spec.HostPort != 0 && _forwards.ContainsKey(key))
            throw new InvalidOperationException($"A forward on {spec.Protocol.ToString().ToLowerInvariant()} {spec.HostAddress}:{spec.HostPort} already exists in this engine.");
        var entry = ForwardEntry.Start(spec);
        _forwards[(spec.Protocol, spec.HostAddress, entry.BoundPort)] = entry;
        _logger.LogInformation("Forward {Spec} listening on port {Port}.", spec, entry.BoundPort);
        return entry.Info;
    }

    public Task<IReadOnlyList<ForwardInfo>> ListForwardsAsync(CancellationToken cancellationToken = default) =>
        _loop.InvokeAsync<IReadOnlyList<ForwardInfo>>(() => _forwards.Values.Select(f => f.Info).ToList());

    public Task<ForwardInfo?> RemoveForwardAsync(ForwardProtocol protocol, IPAddress hostAddress, int hostPort, bool force, CancellationToken cancellationToken = default) =>
        _loop.InvokeAsync(() =>
        {
            if (!_forwards.Remove((protocol, hostAddress, hostPort), out var entry)) return null;
            entry.Stop(force);
            return (ForwardInfo?)entry.Info;
        });

    public Task<IReadOnlyList<ConnectionInfo>> ListConnectionsAsync(CancellationToken cancellationToken = default) =>
        _loop.InvokeAsync<IReadOnlyList<ConnectionInfo>>(() =>
        {
            var list = new List<ConnectionInfo>();
            foreach (var s in _flowSources) s.Snapshot(list);
            return list;
        });

    public Task<EngineStatistics> GetStatisticsAsync(CancellationToken cancellationToken = default) =>
        _loop.InvokeAsync(() => new EngineStatistics
        {
            FramesFromGuest = _counters.FramesFromGuest,
            FramesToGuest = _counters.FramesToGuest,
            BytesFromGuest = _counters.BytesFromGuest,
            BytesToGuest = _counters.BytesToGuest,
            TotalDrops = _counters.TotalDrops,
            DropsByReason = _counters.DropSnapshot(),
            Forwards = _forwards.Count,
        });

    public Task StartCaptureAsync(string path, CancellationToken cancellationToken = default) =>
        throw new NotSupportedException("Capture is not available in this build.");

    public Task<string?> StopCaptureAsync(CancellationToken cancellationToken = default) =>
        throw new NotSupportedException("Capture is not available in this build.");

    public void RequestShutdown() => _loop.Stop();

    public void Dispose()
    {
        if (Interlocked.Exchange(ref _disposed, 1) != 0) return;
        if (_thread is not null)
        {
            _loop.Stop();
            _thread.Join();
        }
        else
        {
            _device.Dispose();
            _completion.TrySetResult();
        }
        _loop.Dispose();
    }

    /// <summary>A forward's host listener. Placeholder until the forwarder is wired: it binds (so errors are real) and resets what it accepts.</summary>
    private sealed class ForwardEntry
    {
        private readonly System.Net.Sockets.Socket _socket;
        public ForwardInfo Info { get; }
        public int BoundPort => Info.BoundPort;

        private ForwardEntry(System.Net.Sockets.Socket socket, ForwardInfo info)
        {
            _socket = socket;
            Info = info;
        }

        public static ForwardEntry Start(ForwardSpec spec)
        {
            var s = spec.Protocol == ForwardProtocol.Tcp
                ? new System.Net.Sockets.Socket(spec.HostAddress.AddressFamily, System.Net.Sockets.SocketType.Stream, System.Net.Sockets.ProtocolType.Tcp)
                : new System.Net.Sockets.Socket(spec.HostAddress.AddressFamily, System.Net.Sockets.SocketType.Dgram, System.Net.Sockets.ProtocolType.Udp);
            try
            {
                s.Bind(new IPEndPoint(spec.HostAddress, spec.HostPort));
                if (spec.Protocol == ForwardProtocol.Tcp) s.Listen(64);
            }
            catch (System.Net.Sockets.SocketException e)
            {
                s.Dispose();
                throw new InvalidOperationException(e.SocketErrorCode == System.Net.Sockets.SocketError.AddressAlreadyInUse
                    ? $"Port {spec.HostPort} on {spec.HostAddress} is already in use."
                    : $"Cannot listen on {spec.HostAddress}:{spec.HostPort}: {e.Message}");
            }
            return new ForwardEntry(s, new ForwardInfo { Spec = spec, BoundPort = ((IPEndPoint)s.LocalEndPoint!).Port, Created = DateTimeOffset.Now });
        }

        public void Stop(bool force) => _socket.Dispose();
    }

}
