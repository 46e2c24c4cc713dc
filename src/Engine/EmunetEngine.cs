using Emunet.Engine.Diagnostics;
using System.Diagnostics;
using System.Net;
using Emunet.Engine.Capture;
using Emunet.Engine.Control;
using Emunet.Engine.Devices;
using Emunet.Engine.Forwarding;
using Emunet.Engine.Runtime;
using Emunet.Engine.Stack;
using Emunet.Engine.Stack.Nat;
using Emunet.Engine.Wire;
using Microsoft.Extensions.Logging;

namespace Emunet.Engine;

/// <summary>
/// One engine instance: the guest links (a device and a stack each, all stacks sharing one flow table, its limits and
/// its buffer budget), the forwards, all owned by one thread running the <see cref="EventLoop"/>. The control API's
/// calls are marshalled onto that thread and answered with snapshots.
/// </summary>
public sealed class EmunetEngine : IEngineControl, IDisposable
{
    /// <summary>What <see cref="Info"/> shows of one link's guest, published by the owner thread at the end of each batch.</summary>
    private sealed record GuestView(bool Connected, string? Mac);

    private readonly EngineOptions _options;
    private readonly ILogger _logger;
    private readonly EventLoop _loop = new();
    private readonly Counters _counters = new();
    private readonly IGuestDevice[] _devices;
    private readonly LinkSet _links = new();
    private readonly FlowTable _flows;
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
        // Read once: every flow, forward and emulator socket is checked against it from here on.
        var headroom = _loop.Headroom = DescriptorHeadroom.FromProcess();
        var deviceLogger = loggerFactory.CreateLogger("Emunet.Device");
        var links = options.EffectiveLinks();
        var guests = GuestAddresses(links, options.Network);
        _flows = new FlowTable(_loop, _counters, new BufferBudget(options.Network.ConnectionBufferBudget), _logger);
        var map = _map = new AddressMap(options.Network);
        _devices = new IGuestDevice[links.Count];
        try
        {
            for (int i = 0; i < links.Count; i++)
            {
                _devices[i] = DeviceFactory.Create(links[i], _loop, _counters, deviceLogger);
                var stack = new NetStack(_loop, _devices[i], options.Network with { Guest = guests[i] }, map, _counters, loggerFactory,
                    _flows, link: i, _links);
                _links.Add(stack);
                _devices[i].Handler = stack;
            }
        }
        catch
        {
            foreach (var d in _devices) d?.Dispose();
            throw;
        }
        _forwards = new ForwardTable(_loop, _links, _counters, loggerFactory.CreateLogger("Emunet.Forward"));
        if (_flows.FitTo(headroom))
            _logger.LogWarning("The open-file limit is {Limit}: {Headroom} descriptors are kept free for the emulator and the control socket, and the flow table holds at most {Tcp} TCP, {Udp} UDP and {Icmp} ICMP flows. Raise it (ulimit -n) for more.",
                headroom.Limit, headroom.Size, _flows.LimitOf(FlowProtocol.Tcp), _flows.LimitOf(FlowProtocol.Udp), _flows.LimitOf(FlowProtocol.Icmp));
        _guestView = new GuestViewPublisher(this);
        _loop.AddEndOfBatch(_guestView);
    }

    /// <summary>
    /// Each link's guest address: the one its options give, else the plan's guest for the first link (10.0.2.15) and
    /// the next free address after the one before for the others (10.0.2.16, as the Android Emulator's Wi-Fi guest).
    /// Every address must be a host of the subnet, not the gateway or DNS, and not another link's.
    /// </summary>
    internal static IPv4Address[] GuestAddresses(IReadOnlyList<LinkOptions> links, NetworkConfig network)
    {
        if (links.Count > LinkSet.MaxLinks)
            throw new EngineStartException($"An engine serves at most {LinkSet.MaxLinks} guest links; {links.Count} were given.");
        var result = new IPv4Address[links.Count];
        for (int i = 0; i < links.Count; i++)
        {
            IPv4Address guest;
            if (links[i].GuestAddress is { } given) guest = given;
            else if (i == 0) guest = network.Guest;
            else
            {
                guest = new IPv4Address(result[i - 1].Value + 1);
                while (network.IsOwnAddress(guest) || Array.IndexOf(result, guest, 0, i) >= 0) guest = new IPv4Address(guest.Value + 1);
            }
            if (!guest.InSubnet(network.Network, network.PrefixLength) || guest == network.Network || guest == network.BroadcastAddress)
                throw new EngineStartException($"The guest address {guest} of link {i + 1} is not a host of {network.Network}/{network.PrefixLength}.");
            if (network.IsOwnAddress(guest))
                throw new EngineStartException($"The guest address {guest} of link {i + 1} is Emunet's own (the gateway {network.Gateway}, the DNS relay {network.Dns}); choose another.");
            if (Array.IndexOf(result, guest, 0, i) >= 0)
                throw new EngineStartException($"Two guest links have the address {guest}; give each its own (--guest-address).");
            result[i] = guest;
        }
        return result;
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

    public InstanceInfo Info
    {
        get
        {
            var views = _guestView.Current;
            var links = new LinkInfo[_devices.Length];
            bool anyConnected = false;
            for (int i = 0; i < links.Length; i++)
            {
                links[i] = new LinkInfo
                {
                    Index = i,
                    Device = _devices[i].Description,
                    GuestAddress = _links[i].ConfiguredGuest.ToString(), // fixed at construction: safe off the owner thread
                    GuestConnected = views[i].Connected,
                    GuestMac = views[i].Mac,
                };
                anyConnected |= views[i].Connected;
            }
            return new InstanceInfo
            {
                Name = _options.Name,
                ProcessId = Environment.ProcessId,
                Version = typeof(EmunetEngine).Assembly.GetName().Version?.ToString(3) ?? "0.0.0",
                Device = _devices[0].Description,
                ControlSocket = _options.ControlSocketPath ?? "",
                Started = _started,
                GuestConnected = anyConnected,
                GuestMac = views[0].Mac,
                OutboundPolicy = _policy,
                Links = links,
            };
        }
    }

    /// <summary>
    /// Keeps what <see cref="Info"/> shows of each link's guest (device attached, MAC learned) as immutable values the
    /// control thread may read: the owner thread compares and republishes them after each batch, so no caller ever
    /// reads device or stack state off the owner thread.
    /// </summary>
    private sealed class GuestViewPublisher : IEndOfBatch
    {
        private readonly EmunetEngine _engine;
        private volatile GuestView[] _current;

        public GuestViewPublisher(EmunetEngine engine)
        {
            _engine = engine;
            _current = new GuestView[engine._devices.Length];
            Array.Fill(_current, new GuestView(false, null));
        }

        public GuestView[] Current => _current;

        public void OnEndOfBatch()
        {
            var now = _current;
            for (int i = 0; i < now.Length; i++)
            {
                bool connected = _engine._devices[i].IsConnected;
                var mac = _engine._links[i].GuestMac;
                var view = now[i];
                if (view.Connected == connected && (view.Mac is null) == (mac is null) && (mac is null || view.Mac == mac.Value.ToString())) continue;
                var next = (GuestView[])now.Clone(); // rare: a guest came, went or changed its MAC
                next[i] = new GuestView(connected, mac?.ToString());
                _current = now = next;
            }
        }
    }

    /// <summary>Binds the device socket and the forwards given at start, then starts the owner thread.</summary>
    public void Start()
    {
        try
        {
            foreach (var device in _devices) device.Start();
            foreach (var remap in _options.Network.Remaps) _map.Remaps.Add(remap);
            foreach (var spec in _options.Forwards) AddForwardOnOwner(spec);
            if (_options.CapturePath is not null) StartCaptureOnOwner(_options.CapturePath);
        }
        catch (Exception e) when (e is InvalidOperationException or ArgumentException or IOException or UnauthorizedAccessException)
        {
            StopAll();
            throw new EngineStartException(e.Message, e);
        }
        catch (EngineStartException)
        {
            StopAll(); // a later link's device failed: the earlier ones are closed too
            throw;
        }
        _thread = new Thread(RunLoop) { Name = $"emunet:{_options.Name}", IsBackground = true };
        _thread.Start();
        _logger.LogInformation("Engine '{Name}' started on {Device}.", _options.Name, string.Join(", ", _devices.Select(d => d.Description)));
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
        for (int i = 0; i < _links.Count; i++) Safely(_links[i].Dispose, "the stack");
        foreach (var device in _devices) Safely(device.Dispose, "the device");
        Safely(() => { foreach (var device in _devices) device.Tap = null; _capture.Dispose(); }, "the capture");
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
            var list = new List<ConnectionInfo>(_flows.Count);
            _flows.Snapshot(list);
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
            FramesToGuestDirect = _counters.FramesToGuestDirect,
            BytesFromGuest = _counters.BytesFromGuest,
            BytesToGuest = _counters.BytesToGuest,
            TotalDrops = _counters.TotalDrops,
            DropsByReason = _counters.DropSnapshot(),
            TcpFlows = _flows.CountOf(FlowProtocol.Tcp),
            UdpFlows = _flows.CountOf(FlowProtocol.Udp),
            Forwards = _forwards.Count,
            BufferBytes = _flows.Budget.Used,
            BufferBudget = _flows.Budget.Limit,
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
    private void UpdateTap()
    {
        Link.FrameTap? tap = _capture.IsActive ? _capture.OnFrame : null;
        foreach (var device in _devices) device.Tap = tap;
    }

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
            foreach (var device in _devices) device.Dispose();
            _completion.TrySetResult();
        }
        _loop.Dispose();
    }
}
