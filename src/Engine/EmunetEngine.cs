using Emunet.Engine.Diagnostics;
using System.Diagnostics;
using System.Net;
using Emunet.Engine.Capture;
using Emunet.Engine.Control;
using Emunet.Engine.Devices;
using Emunet.Engine.Forwarding;
using Emunet.Engine.Interop;
using Emunet.Engine.Runtime;
using Emunet.Engine.Stack;
using Emunet.Engine.Wire;
using Emunet.Engine.Stack.Nat;
using Microsoft.Extensions.Logging;

namespace Emunet.Engine;

/// <summary>
/// One engine instance: the guest's device, the NAT stack, the forwards, all owned by one thread running the
/// <see cref="EventLoop"/>. The control API's calls are marshalled onto that thread and answered with snapshots.
/// </summary>
public sealed class EmunetEngine : IEngineControl, IDisposable
{
    /// <summary>What <see cref="Info"/> shows of the guest, published by the owner thread at the end of each batch.</summary>
    private sealed record GuestView(bool Connected, string? Mac);

    private readonly EngineOptions _options;
    private readonly ILogger _logger;
    private readonly EventLoop _loop = new();
    private readonly Counters _counters = new();
    private readonly IGuestDevice _device;
    private readonly NetStack _stack;
    private readonly ForwardTable _forwards;
    private readonly AddressMap _map;
    private readonly CaptureTap _capture;
    private readonly string _policy;
    private readonly RateLimitedLoggerFactory _loggers;
    private readonly GuestViewPublisher _guestView;
    private readonly TaskCompletionSource _completion = new(TaskCreationOptions.RunContinuationsAsynchronously);
    private readonly DateTimeOffset _started = DateTimeOffset.Now;
    private Thread? _thread;
    private int _disposed;

    public EmunetEngine(EngineOptions options, ILoggerFactory loggerFactory)
    {
        _options = options;
        _policy = DescribePolicy(options.Network); // the options never change: described once
        // Every log line the engine writes passes one rate limit (a guest can trigger many of them).
        _loggers = new RateLimitedLoggerFactory(loggerFactory);
        loggerFactory = _loggers;
        _logger = loggerFactory.CreateLogger("Emunet.Engine");
        _capture = new CaptureTap(reason => _logger.LogWarning("{Reason}", reason));
        _loop.SetFaultReporter(ReportFault);
        var deviceLogger = loggerFactory.CreateLogger("Emunet.Device");
        var links = options.EffectiveLinks();
        if (links.Count > 1)
            throw new EngineStartException("This engine serves one guest link; give one --socket or --vhost-user.");
        _device = DeviceFactory.Create(links[0], _loop, _counters, deviceLogger);
        var map = _map = new AddressMap(options.Network);
        _stack = new NetStack(_loop, _device, options.Network, map, _counters, loggerFactory);
        _forwards = new ForwardTable(_loop, _stack, _counters, loggerFactory.CreateLogger("Emunet.Forward"));
        if (Libc.OpenFileLimit() is long nofile && _stack.Flows.FitTo(nofile))
            _logger.LogWarning("The open-file limit is {Limit}: the flow table holds at most {Tcp} TCP, {Udp} UDP and {Icmp} ICMP flows. Raise it (ulimit -n) for more.",
                nofile, _stack.Flows.LimitOf(FlowProtocol.Tcp), _stack.Flows.LimitOf(FlowProtocol.Udp), _stack.Flows.LimitOf(FlowProtocol.Icmp));
        _device.Handler = _stack;
        _guestView = new GuestViewPublisher(this);
        _loop.AddEndOfBatch(_guestView);
    }

    /// <summary>
    /// A handler threw and the loop contained it (the flow, frame or request is dropped): counted, and logged with
    /// the trace — rate-limited like every line.
    /// </summary>
    private void ReportFault(object handler, Exception error)
    {
        _counters.Drop(DropReason.InternalFault);
        _logger.LogError(error, "A fault in {Handler} was contained; that one flow, frame or request was dropped and the engine goes on.",
            handler.GetType().Name);
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
        GuestConnected = _guestView.Current.Connected,
        GuestMac = _guestView.Current.Mac,
        OutboundPolicy = _policy,
    };

    /// <summary>
    /// Keeps what <see cref="Info"/> shows of the guest (device attached, MAC learned) as an immutable value the
    /// control thread may read: the owner thread compares and republishes it after each batch, so no caller ever
    /// reads device or stack state off the owner thread.
    /// </summary>
    private sealed class GuestViewPublisher(EmunetEngine engine) : IEndOfBatch
    {
        private volatile GuestView _current = new(false, null);

        public GuestView Current => _current;

        public void OnEndOfBatch()
        {
            bool connected = engine._device.IsConnected;
            var mac = engine._stack.GuestMac;
            var now = _current;
            if (now.Connected == connected && (now.Mac is null) == (mac is null) && (mac is null || now.Mac == mac.Value.ToString())) return;
            _current = new GuestView(connected, mac?.ToString());
        }
    }

    /// <summary>Binds the device socket and the forwards given at start, then starts the owner thread.</summary>
    public void Start()
    {
        _device.Start();
        try
        {
            foreach (var remap in _options.Network.Remaps) _map.Remaps.Add(remap);
            foreach (var spec in _options.Forwards) AddForwardOnOwner(spec);
            if (_options.CapturePath is not null) StartCaptureOnOwner(_options.CapturePath);
        }
        catch (Exception e) when (e is InvalidOperationException or ArgumentException or IOException or UnauthorizedAccessException)
        {
            StopAll();
            throw new EngineStartException(e.Message, e);
        }
        _thread = new Thread(RunLoop) { Name = $"emunet:{_options.Name}", IsBackground = true };
        _thread.Start();
        _logger.LogInformation("Engine '{Name}' started on {Device}.", _options.Name, _device.Description);
        if (_policy != OpenPolicy) _logger.LogInformation("Outbound policy: {Policy}.", _policy);
    }

    private const string OpenPolicy = "open";

    /// <summary>The outbound policy as one line: what the guest may reach, rules in the order they apply.</summary>
    internal static string DescribePolicy(NetworkConfig network)
    {
        var parts = new List<string>();
        if (network.Restrict) parts.Add("restricted (the guest reaches only the DNS relay; forwards still come in)");
        if (!network.MapGatewayToLoopback) parts.Add("no host loopback at 10.0.2.2");
        if (network.OutboundRules.Count > 0) parts.Add("rules, first match wins: " + string.Join(", then ", network.OutboundRules) + ", else allow");
        return parts.Count == 0 ? OpenPolicy : string.Join("; ", parts);
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
            StopAll();
        }
    }

    /// <summary>Closes everything; each part on its own, so one that throws cannot leave the others (or the sockets) behind.</summary>
    private void StopAll()
    {
        Safely(_forwards.StopAll, "the forwards");
        Safely(_stack.Dispose, "the stack");
        Safely(_device.Dispose, "the device");
        Safely(() => { _device.Tap = null; _capture.Dispose(); }, "the capture");
    }

    private void Safely(Action step, string what)
    {
        try { step(); }
        catch (Exception e) when (e is not OutOfMemoryException) { _logger.LogError(e, "Closing {What} failed; the rest is closed anyway.", what); }
    }

    public Task<ForwardInfo> AddForwardAsync(ForwardSpec spec, CancellationToken cancellationToken = default) =>
        _loop.InvokeAsync(() => AddForwardOnOwner(spec));

    private ForwardInfo AddForwardOnOwner(ForwardSpec spec) => _forwards.Add(spec);

    public Task<IReadOnlyList<ForwardInfo>> ListForwardsAsync(CancellationToken cancellationToken = default) =>
        _loop.InvokeAsync<IReadOnlyList<ForwardInfo>>(_forwards.List);

    public Task<ForwardInfo?> RemoveForwardAsync(ForwardProtocol protocol, IPAddress hostAddress, int hostPort, bool force, CancellationToken cancellationToken = default) =>
        _loop.InvokeAsync(() => _forwards.Remove(protocol, hostAddress, hostPort, resetConnections: force));

    public Task<IReadOnlyList<ConnectionInfo>> ListConnectionsAsync(CancellationToken cancellationToken = default) =>
        _loop.InvokeAsync<IReadOnlyList<ConnectionInfo>>(() =>
        {
            var list = new List<ConnectionInfo>(_stack.Flows.Count);
            _stack.Flows.Snapshot(list);
            return list;
        });

    public Task<GuestRemap> AddRemapAsync(string spec, string? target, CancellationToken cancellationToken = default) =>
        _loop.InvokeAsync(() =>
        {
            var gateway = _options.Network.Gateway;
            bool parsed = target is null
                ? GuestRemap.TryParse(spec, gateway, out var remap, out string? error)
                : GuestRemap.TryParsePair(spec, target, gateway, out remap, out error);
            if (!parsed || remap is null) throw new ArgumentException(error);
            _map.Remaps.Add(remap);
            _logger.LogInformation("Remap: the guest's {Protocol} {Guest} reaches {Host}.", remap.ProtocolName, remap.GuestEndPoint, remap.Host);
            return remap;
        });

    public Task<IReadOnlyList<GuestRemap>> ListRemapsAsync(CancellationToken cancellationToken = default) =>
        _loop.InvokeAsync(_map.Remaps.List);

    public Task<GuestRemap?> RemoveRemapAsync(RemapProtocol protocol, IPv4Address? guestAddress, int guestPort, CancellationToken cancellationToken = default) =>
        _loop.InvokeAsync(() => _map.Remaps.Remove(protocol, guestAddress ?? _options.Network.Gateway, guestPort));

    public Task<EngineStatistics> GetStatisticsAsync(CancellationToken cancellationToken = default) =>
        _loop.InvokeAsync(() => new EngineStatistics
        {
            FramesFromGuest = _counters.FramesFromGuest,
            FramesToGuest = _counters.FramesToGuest,
            BytesFromGuest = _counters.BytesFromGuest,
            BytesToGuest = _counters.BytesToGuest,
            TotalDrops = _counters.TotalDrops,
            DropsByReason = _counters.DropSnapshot(),
            TcpFlows = _stack.Flows.CountOf(FlowProtocol.Tcp),
            UdpFlows = _stack.Flows.CountOf(FlowProtocol.Udp),
            Forwards = _forwards.Count,
            BufferBytes = _stack.Flows.Budget.Used,
            BufferBudget = _stack.Flows.Budget.Limit,
            CaptureFile = _capture.FilePath,
            CaptureFailure = _capture.Failure,
            LiveCaptures = _capture.LiveCount,
            LiveCaptureFramesDropped = _capture.LiveFramesDropped,
            LogLinesSuppressed = _loggers.Suppressed,
        });

    public Task StartCaptureAsync(string path, CancellationToken cancellationToken = default) =>
        _loop.InvokeAsync(() => { StartCaptureOnOwner(path); return 0; });

    public Task<string?> StopCaptureAsync(CancellationToken cancellationToken = default) =>
        _loop.InvokeAsync(StopCaptureOnOwner);

    private void StartCaptureOnOwner(string path)
    {
        if (_capture.IsRunning)
            throw new InvalidOperationException($"A capture to '{_capture.FilePath}' is already running; stop it first.");
        _capture.Start(path);
        UpdateTap();
        _logger.LogInformation("Capturing frames to {Path}.", _capture.FilePath);
    }

    private string? StopCaptureOnOwner()
    {
        if (!_capture.IsRunning && _capture.Failure is { } failure)
            throw new InvalidOperationException(failure);
        var path = _capture.Stop();
        UpdateTap();
        if (path is not null) _logger.LogInformation("Capture to {Path} stopped.", path);
        return path;
    }

    /// <summary>The device's tap is set only while a capture wants frames: no capture costs nothing per frame.</summary>
    private void UpdateTap() => _device.Tap = _capture.IsActive ? _capture.OnFrame : null;

    public Task<ILiveCaptureStream> OpenLiveCaptureAsync(CancellationToken cancellationToken = default) =>
        _loop.InvokeAsync<ILiveCaptureStream>(() =>
        {
            var live = new LiveCapture();
            if (!_capture.AddLive(live))
                throw new InvalidOperationException($"{CaptureTap.MaxLiveCaptures} live captures are running already; stop one first.");
            UpdateTap();
            _logger.LogInformation("Streaming a live capture to a control client.");
            return new LiveCaptureStream(live, () => _loop.Post(() => { _capture.RemoveLive(live); UpdateTap(); }));
        });

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
}
