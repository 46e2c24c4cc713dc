using System.Globalization;
using System.Text.RegularExpressions;
using Emunet.GuestRig;

namespace Emunet.Bench;

/// <summary>
/// One guest booted on one backend: the guest starts its servers (iperf3, connserver in its three modes) and then runs
/// whatever the bench sends over a <see cref="CommandChannel"/>, so the bench decides the order of the figures and
/// reads the backend's CPU time around each. Figures land in a <see cref="ResultSet"/> under (backend, MTU mode).
/// </summary>
internal sealed partial class GuestSession : IDisposable
{
    private const int MemoryMb = 512;
    private static readonly GuestPorts Ports = new();
    private readonly BenchOptions _o;
    private readonly Backend _backend;
    private readonly QemuGuest _guest;
    private readonly CommandChannel _control;
    private readonly LoopbackIperf3Server _hostIperf;
    private LoopbackIperf3Server? _hostIperf6;
    private readonly HostForwards _fwd;
    private int _commands;

    private GuestSession(BenchOptions o, Backend backend, QemuGuest guest, CommandChannel control, LoopbackIperf3Server hostIperf, HostForwards fwd)
    {
        _o = o;
        _backend = backend;
        _guest = guest;
        _control = control;
        _hostIperf = hostIperf;
        _fwd = fwd;
    }

    private bool IsLimit => _backend.Name == Backend.LimitName;
    private string Device => IsLimit ? "lo" : "eth0";

    /// <summary>Boots the guest on <paramref name="backendName"/> and waits until its servers listen.</summary>
    public static async Task<GuestSession> StartAsync(BenchOptions o, string backendName)
    {
        var fwd = HostForwards.Free();
        var control = new CommandChannel();
        var hostIperf = new LoopbackIperf3Server(LoopbackPorts.Free());
        Backend? backend = null;
        QemuGuest? guest = null;
        try
        {
            backend = await Backend.StartAsync(backendName, fwd, Ports, MemoryMb, o.Capture, o.NativeEngine);
            var p = Ports;
            guest = QemuGuest.Start(new GuestOptions
            {
                NetworkArgs = o.QemuDump is { } dump && backendName is "emunet" or "slirp" or "passt"
                    // QEMU's own record of the guest's frames at its network layer, the same for every backend on it
                    // (vhost-user frames bypass that layer).
                    ? [.. backend.NetworkArgs, "-object", $"filter-dump,id=dump0,netdev=n0,maxlen=256,file={Path.Combine(dump, $"{backendName}-{DateTime.UtcNow:HHmmss}.pcap")}"]
                    : backend.NetworkArgs,
                MemoryMb = MemoryMb,
                Timeout = TimeSpan.FromHours(2), // the bench ends the guest itself; this only bounds a lost run
                Script = $"""
                    . /run/lease.env
                    iperf3 -s -p {p.Iperf} -D
                    connserver close {p.Close} &
                    connserver echo {p.Echo} &
                    ( while :; do connserver die {p.Die}; usleep 10000; done ) &
                    while ! netstat -ltn | grep -q ':{p.Die} '; do usleep 50000; done
                    while ! netstat -ltn | grep -q ':{p.Iperf} '; do usleep 50000; done
                    mtu0=$(cat /sys/class/net/eth0/mtu)
                    echo "@@ready"
                    {control.GuestLoop}
                    """,
            });
            await guest.WaitForLineAsync(l => l == "@@ready", TimeSpan.FromMinutes(5));
            return new GuestSession(o, backend, guest, control, hostIperf, fwd);
        }
        catch
        {
            guest?.Dispose();
            backend?.Dispose();
            hostIperf.Dispose();
            control.Dispose();
            throw;
        }
    }

    /// <summary>Runs a shell command in the guest and returns its output lines.</summary>
    private async Task<IReadOnlyList<string>> GuestAsync(string command, TimeSpan timeout)
    {
        int id = ++_commands;
        string done = $"@@done {id}";
        int start = _guest.Lines.Count;
        await _control.SendAsync(id, $"{command}; echo \"{done}\"", TimeSpan.FromSeconds(60));
        await _guest.WaitForLineAsync(l => l == done, timeout);
        return _guest.Lines.Skip(start).TakeWhile(l => l != done).ToArray();
    }

    /// <summary>The backend's CPU use while nothing moves, as a percentage of one core.</summary>
    public async Task MeasureIdleAsync(ResultSet results, int rep)
    {
        if (IsLimit || _backend.CpuSeconds() is not { } before) return;
        var sw = System.Diagnostics.Stopwatch.StartNew();
        await Task.Delay(TimeSpan.FromSeconds(_o.IdleSeconds)); // a measurement window, not a wait for a condition
        double after = _backend.CpuSeconds() ?? before;
        results.Add(_backend.Name, null, rep, "idle-cpu", 100 * (after - before) / sw.Elapsed.TotalSeconds);
    }

    /// <summary>Every per-MTU figure at <paramref name="mode"/>.</summary>
    public async Task MeasureAsync(MtuMode mode, ResultSet results, int rep)
    {
        string mtu = mode == MtuMode.Android ? "1500" : IsLimit ? "65536" : "$mtu0";
        var lines = await GuestAsync($"ip link set {Device} mtu {mtu}; echo \"@@mtu $(cat /sys/class/net/{Device}/mtu)\"", TimeSpan.FromSeconds(60));
        var m = lines.Select(l => MtuLine().Match(l)).FirstOrDefault(x => x.Success) ?? throw new InvalidOperationException("the guest did not report its MTU");
        results.Add(_backend.Name, mode, rep, "mtu", double.Parse(m.Groups[1].Value, CultureInfo.InvariantCulture));

        double? cpu0 = _backend.CpuSeconds();
        double bytes = 0;
        var selected = Cases.Throughput.Where(c => _o.CaseFilter is null || _o.CaseFilter.Contains(c.Key)).ToArray();
        // The limit runs the loopback cases the selected figures compare with (1 and/or 4 streams).
        var cases = IsLimit ? Cases.Limit.Where(l => selected.Any(c => c.LimitKey == l.Key)) : selected;
        foreach (var c in cases)
        {
            if (c.Route == Route.GuestToHostServerIPv6 && !Backend.IsEmunet(_backend.Name)) continue;
            // A figure that fails twice is reported as failed and the others go on (the guest's iperf3 server can
            // still be busy with a previous test whose close the backend has not passed on).
            for (int attempt = 1; attempt <= 2; attempt++)
            {
                try
                {
                    double mbps = await ThroughputAsync(c);
                    results.Add(_backend.Name, mode, rep, c.Key, mbps);
                    bytes += mbps * 1e6 / 8 * _o.Seconds;
                    Console.Error.WriteLine($"bench:   {_backend.Name} {mode.Name()} {c.Key}: {mbps:0} Mbit/s");
                    break;
                }
                catch (InvalidOperationException e) when (attempt == 1 && e.Message.StartsWith("iperf3", StringComparison.Ordinal))
                {
                    Console.Error.WriteLine($"bench:   {_backend.Name} {mode.Name()} {c.Key}: {e.Message.Split('\n')[0]}; once more");
                }
                catch (InvalidOperationException e) when (e.Message.StartsWith("iperf3", StringComparison.Ordinal))
                {
                    results.AddError($"{Backend.Title(_backend.Name)}, {mode.Name()}, {c.Key}, repetition {rep + 1}: {string.Join(' ', e.Message.Split('\n', StringSplitOptions.RemoveEmptyEntries).Take(2))}");
                }
            }
        }
        if (cpu0 is { } c0 && _backend.CpuSeconds() is { } c1 && bytes > 0)
            results.Add(_backend.Name, mode, rep, "cpu-per-gib", (c1 - c0) / (bytes / (1L << 30)));
        if (IsLimit) return;

        var window = TimeSpan.FromSeconds(_o.Seconds);
        await FigureAsync(results, mode, rep, "connections", async () =>
        {
            var conn = await HostClients.ConnectionRateAsync(_fwd.Close, window);
            results.Add(_backend.Name, mode, rep, "conn-rate", conn.PerSecond);
            results.Add(_backend.Name, mode, rep, "conn-p50", conn.P50Ms);
            results.Add(_backend.Name, mode, rep, "conn-p99", conn.P99Ms);
            Console.Error.WriteLine($"bench:   {_backend.Name} {mode.Name()}: {conn.PerSecond:0} conn/s (p50 {conn.P50Ms:0.00} ms, p99 {conn.P99Ms:0.00} ms, slowest {conn.MaxMs:0.0} ms)");
        });
        await FigureAsync(results, mode, rep, "request/response", async () =>
        {
            var rr = await HostClients.RequestResponseAsync(_fwd.Echo, window);
            results.Add(_backend.Name, mode, rep, "rr-p50", rr.P50Ms);
            results.Add(_backend.Name, mode, rep, "rr-p99", rr.P99Ms);
        });
        await FigureAsync(results, mode, rep, "app death", async () =>
            results.Add(_backend.Name, mode, rep, "death", await HostClients.AppDeathAsync(_fwd.Die, _o.DeathSamples)));
    }

    /// <summary>Runs one host-side figure; a failure is reported under its name and the run goes on.</summary>
    private async Task FigureAsync(ResultSet results, MtuMode mode, int rep, string name, Func<Task> measure)
    {
        try
        {
            await measure();
        }
        catch (Exception e) when (e is IOException or TimeoutException or System.Net.Sockets.SocketException or OperationCanceledException)
        {
            Console.Error.WriteLine($"bench:   {_backend.Name} {mode.Name()} {name} failed: {e.Message}");
            results.AddError($"{Backend.Title(_backend.Name)}, {mode.Name()}, {name}, repetition {rep + 1}: {e.Message.Split('\n')[0]}");
        }
    }

    public void RecordPeakRss(ResultSet results, int rep)
    {
        if (_backend.PeakRss() is { } rss) results.Add(_backend.Name, null, rep, "rss", rss / (1024.0 * 1024));
        if (_backend.PeakPrivateRss() is { } own) results.Add(_backend.Name, null, rep, "rss-private", own / (1024.0 * 1024));
    }

    private async Task<double> ThroughputAsync(ThroughputCase c)
    {
        string flags = $"-t {_o.Seconds} -P {c.Streams} -f m" + (c.Reverse ? " -R" : "");
        var timeout = TimeSpan.FromSeconds(_o.Seconds + 90);
        string output = c.Route switch
        {
            Route.GuestToHostServer => string.Join('\n', await GuestAsync($"iperf3 -c $router -p {_hostIperf.Port} {flags}", timeout)),
            Route.GuestLoopback => string.Join('\n', await GuestAsync($"iperf3 -c 127.0.0.1 -p {Ports.Iperf} {flags}", timeout)),
            Route.HostThroughForward => await HostClients.Iperf3Async(_fwd.Iperf, flags, timeout),
            Route.GuestToHostServerIPv6 => string.Join('\n', await GuestAsync(
                // The guest's fec0::/64 address comes by SLAAC from Emunet's router advertisement; wait until DAD is done.
                "i=0; while [ $i -lt 100 ] && ! ip -6 addr show dev eth0 | grep 'inet6 fec0:' | grep -qv tentative; do usleep 100000; i=$((i+1)); done; "
                + $"iperf3 -c fec0::2 -p {HostIperf6().Port} {flags}", timeout)),
            _ => throw new ArgumentOutOfRangeException(nameof(c)),
        };
        string? why = output.Split('\n').FirstOrDefault(l => l.Contains("error", StringComparison.Ordinal))?.Trim();
        return Iperf3.ReceiverMbps(output, c.Streams) ?? throw new InvalidOperationException($"iperf3 {c.Key} gave no receiver figure ({why ?? "no error line"})\n{output}");
    }

    /// <summary>The host's iperf3 server on ::1, made for the first IPv6 figure.</summary>
    private LoopbackIperf3Server HostIperf6() =>
        _hostIperf6 ??= new LoopbackIperf3Server(LoopbackPorts.Free(), System.Net.IPAddress.IPv6Loopback);

    [GeneratedRegex(@"^@@mtu (\d+)$")]
    private static partial Regex MtuLine();

    public void Dispose()
    {
        _guest.Dispose();
        _backend.Dispose();
        _hostIperf.Dispose();
        _hostIperf6?.Dispose();
        _control.Dispose();
    }
}

/// <summary>Reads iperf3's text report (-f m).</summary>
internal static partial class Iperf3
{
    /// <summary>The receiver's Mbit/s: the [SUM] line with several streams, the stream's own line with one.</summary>
    public static double? ReceiverMbps(string output, int streams)
    {
        foreach (var line in output.Split('\n'))
        {
            if (!line.Contains("receiver", StringComparison.Ordinal)) continue;
            if (streams > 1 && !line.StartsWith("[SUM]", StringComparison.Ordinal)) continue;
            var m = Rate().Match(line);
            if (m.Success) return double.Parse(m.Groups[1].Value, CultureInfo.InvariantCulture);
        }
        return null;
    }

    [GeneratedRegex(@"([\d.]+) Mbits/sec")]
    private static partial Regex Rate();
}
