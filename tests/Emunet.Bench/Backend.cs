using System.Diagnostics;
using System.Runtime.InteropServices;
using Emunet.GuestRig;

namespace Emunet.Bench;

/// <summary>The guest ports the backends forward to (the servers the guest script starts).</summary>
internal sealed record GuestPorts(int Iperf = 5201, int Close = 7007, int Echo = 7008, int Die = 7009);

/// <summary>Host loopback ports each backend forwards to <see cref="GuestPorts"/>.</summary>
internal sealed record HostForwards(int Iperf, int Close, int Echo, int Die)
{
    public static HostForwards Free() => new(LoopbackPorts.Free(), LoopbackPorts.Free(), LoopbackPorts.Free(), LoopbackPorts.Free());

    public IEnumerable<(int Host, int Guest)> Pairs(GuestPorts g) => [(Iperf, g.Iperf), (Close, g.Close), (Echo, g.Echo), (Die, g.Die)];
}

/// <summary>
/// One network backend for one guest boot: the QEMU arguments that attach the guest, and the backend's own process
/// (null for libslirp, which runs inside QEMU: its CPU and memory cannot be told apart from the emulated guest's).
/// </summary>
internal sealed class Backend : IDisposable
{
    public static readonly IReadOnlyList<string> Known = ["emunet", "vhost", "slirp", "passt"];
    /// <summary>The pseudo-backend that measures the guest's loopback.</summary>
    public const string LimitName = "limit";

    public static string Title(string name) => name switch
    {
        "emunet" => "Emunet stream",
        "vhost" => "Emunet vhost-user",
        "slirp" => "libslirp (QEMU user)",
        "passt" => "passt (Debian)",
        LimitName => "guest loopback (limit)",
        _ => name,
    };

    /// <summary>Emunet's own backends, whose ratios to each peer the table shows.</summary>
    public static bool IsEmunet(string name) => name is "emunet" or "vhost";

    private static readonly System.Collections.Concurrent.ConcurrentDictionary<Backend, byte> Running = new();

    static Backend()
    {
        // An interrupted run (Ctrl-C, SIGTERM) leaves no emunet or passt behind; QemuGuest does the same for QEMU.
        AppDomain.CurrentDomain.ProcessExit += (_, _) =>
        {
            foreach (var b in Running.Keys) b.Dispose();
        };
    }

    private readonly string _dir;
    private Process? _process;
    private Task<string>? _stderr;

    private Backend(string name, string dir)
    {
        Name = name;
        _dir = dir;
        Running[this] = 0;
    }

    public string Name { get; }
    public IReadOnlyList<string> NetworkArgs { get; private set; } = [];
    public int? ProcessId => _process?.Id;

    /// <param name="nativeEngine">Emunet's native executable, or null for the dotnet tool.</param>
    public static async Task<Backend> StartAsync(string name, HostForwards fwd, GuestPorts guest, int memoryMb, string? capture, string? nativeEngine)
    {
        var b = new Backend(name, Directory.CreateTempSubdirectory("emunet-bench-").FullName);
        try
        {
            await b.StartCoreAsync(fwd, guest, memoryMb, capture, nativeEngine);
            return b;
        }
        catch
        {
            b.Dispose();
            throw;
        }
    }

    private async Task StartCoreAsync(HostForwards fwd, GuestPorts guest, int memoryMb, string? capture, string? nativeEngine)
    {
        var sock = System.IO.Path.Combine(_dir, "net.sock");
        switch (Name)
        {
            case "emunet":
            case "vhost":
            {
                // As users run it: `emunet run` in its own process, the native executable or the dotnet tool.
                var args = new List<string> { "run", "--name", $"bench-{Environment.ProcessId}-{System.IO.Path.GetFileName(_dir)}",
                    Name == "emunet" ? "--socket" : "--vhost-user", sock, "--log-level", "Warning" };
                foreach (var (h, g) in fwd.Pairs(guest)) args.AddRange(["--forward", $"tcp:127.0.0.1:{h}:{g}"]);
                if (capture is not null) args.AddRange(["--capture", capture]);
                if (nativeEngine is not null) StartProcess(nativeEngine, args);
                else StartProcess("dotnet", args.Prepend(ToolDll));
                await WaitSocketAsync(sock);
                NetworkArgs = Name == "emunet" ? GuestNetwork.StreamUnix(sock) : GuestNetwork.VhostUser(sock, memoryMb);
                break;
            }
            case "slirp":
                NetworkArgs = GuestNetwork.User(string.Concat(fwd.Pairs(guest).Select(p => $",hostfwd=tcp:127.0.0.1:{p.Host}-:{p.Guest}")));
                break;
            case "passt":
                // passt drops root privileges to nobody: its socket folder must be writable by that user. -f: no
                // daemon, so the process started is the one measured.
                File.SetUnixFileMode(_dir, (UnixFileMode)0x3ff);
                StartProcess("passt", ["-f", "-q", "-4", "-s", sock, "-a", "10.0.2.15", "-n", "24", "-g", "10.0.2.2",
                    "-t", string.Join(',', fwd.Pairs(guest).Select(p => $"{p.Host}:{p.Guest}"))]);
                await WaitSocketAsync(sock);
                NetworkArgs = GuestNetwork.StreamUnix(sock);
                break;
            case LimitName:
                // Only the command channel crosses the network; the figures stay on the guest's loopback.
                NetworkArgs = GuestNetwork.User();
                break;
            default:
                throw new ArgumentException($"unknown backend '{Name}'");
        }
    }

    /// <summary>The emunet tool built beside this bench (same configuration and target framework).</summary>
    private static string ToolDll
    {
        get
        {
            var tfmDir = new DirectoryInfo(AppContext.BaseDirectory.TrimEnd('/'));
            var dll = System.IO.Path.Combine(RepoPaths.Root, "src", "Tool", "bin", tfmDir.Parent!.Name, tfmDir.Name, "Emunet.Tool.dll");
            return File.Exists(dll) ? dll : throw new FileNotFoundException($"The emunet tool is not built at {dll} (dotnet build Emunet.sln -c Release).");
        }
    }

    private void StartProcess(string program, IEnumerable<string> args)
    {
        var psi = new ProcessStartInfo(program) { RedirectStandardOutput = true, RedirectStandardError = true };
        foreach (var a in args) psi.ArgumentList.Add(a);
        _process = Process.Start(psi) ?? throw new InvalidOperationException($"{program} did not start.");
        _sampler = new Timer(_ => SamplePrivateRss(), null, 100, 100);
        _ = _process.StandardOutput.ReadToEndAsync();
        _stderr = _process.StandardError.ReadToEndAsync();
    }

    private async Task WaitSocketAsync(string sock)
    {
        var until = DateTime.UtcNow.AddSeconds(30);
        while (!File.Exists(sock))
        {
            if (_process!.HasExited)
                throw new InvalidOperationException($"{Name} exited ({_process.ExitCode}) before creating its socket: {(await _stderr!).Trim()}");
            if (DateTime.UtcNow > until) throw new TimeoutException($"{Name} did not create its socket within 30 s.");
            await Task.Delay(20);
        }
    }

    /// <summary>
    /// The process that does the backend's work: the one started, or for passt the child it forks into its own PID
    /// namespace (its isolation) while the parent only waits.
    /// </summary>
    private int? _worker;

    private int? Worker => _process is null ? null : _worker ??= ProcStats.Leaf(_process.Id);

    /// <summary>The backend process's CPU seconds so far (user + system), or null without a process of its own.</summary>
    public double? CpuSeconds() => Worker is { } pid ? ProcStats.CpuSeconds(pid) : null;

    /// <summary>The backend process's peak resident set (VmHWM) in bytes, or null.</summary>
    public long? PeakRss() => Worker is { } pid ? ProcStats.PeakRss(pid) : null;

    private Timer? _sampler;
    private long _peakPrivateRss = -1;

    /// <summary>
    /// The largest resident set seen without shared memory (RssAnon + RssFile, sampled every 100 ms), in bytes, or null:
    /// a vhost-user back-end maps the guest's RAM, and every guest page it has read or written a frame in counts in its
    /// resident set, though those pages are the guest's (QEMU's resident set holds them too).
    /// </summary>
    public long? PeakPrivateRss()
    {
        SamplePrivateRss();
        long v = Interlocked.Read(ref _peakPrivateRss);
        return v < 0 ? null : v;
    }

    private void SamplePrivateRss()
    {
        long rss;
        try
        {
            // The leaf looked up each time, not cached: passt forks its worker a moment after it starts.
            if (_process is not { HasExited: false } p || ProcStats.PrivateRss(ProcStats.Leaf(p.Id)) is not { } r) return;
            rss = r;
        }
        catch (Exception e) when (e is InvalidOperationException or IOException or UnauthorizedAccessException or FormatException) { return; }
        long seen;
        while (rss > (seen = Interlocked.Read(ref _peakPrivateRss)) && Interlocked.CompareExchange(ref _peakPrivateRss, rss, seen) != seen) { }
    }

    public void Dispose()
    {
        if (!Running.TryRemove(this, out _)) return;
        _sampler?.Dispose();
        if (_process is { HasExited: false })
        {
            // SIGTERM first: the tool removes its control socket and runtime files on a clean stop.
            _ = Kill(_process.Id, 15);
            if (!_process.WaitForExit(5000)) _process.Kill(true);
        }
        _process?.Dispose();
        try { Directory.Delete(_dir, true); } catch (IOException) { } catch (UnauthorizedAccessException) { }
    }

    [DllImport("libc", EntryPoint = "kill", SetLastError = true)]
    private static extern int Kill(int pid, int signal);
}

/// <summary>CPU time and peak memory of a process from /proc (Linux: proc(5)).</summary>
internal static class ProcStats
{
    private static readonly Lazy<double> TicksPerSecond = new(() =>
    {
        var psi = new ProcessStartInfo("getconf", ["CLK_TCK"]) { RedirectStandardOutput = true };
        using var p = Process.Start(psi)!;
        string s = p.StandardOutput.ReadToEnd().Trim();
        p.WaitForExit();
        return double.TryParse(s, System.Globalization.CultureInfo.InvariantCulture, out double v) && v > 0 ? v : 100;
    });

    /// <summary>Follows single children down from <paramref name="pid"/> (/proc/PID/task/PID/children) to the last one.</summary>
    public static int Leaf(int pid)
    {
        for (int depth = 0; depth < 4; depth++)
        {
            string[] children;
            try { children = File.ReadAllText($"/proc/{pid}/task/{pid}/children").Split(' ', StringSplitOptions.RemoveEmptyEntries); }
            catch (IOException) { return pid; }
            if (children.Length != 1) return pid;
            pid = int.Parse(children[0], System.Globalization.CultureInfo.InvariantCulture);
        }
        return pid;
    }

    /// <summary>utime + stime (fields 14 and 15 of /proc/PID/stat, after the parenthesised command name).</summary>
    public static double? CpuSeconds(int pid)
    {
        try
        {
            string stat = File.ReadAllText($"/proc/{pid}/stat");
            var f = stat[(stat.LastIndexOf(')') + 2)..].Split(' ');
            // f[0] is field 3 (state): utime is field 14 → f[11], stime field 15 → f[12].
            return (long.Parse(f[11], System.Globalization.CultureInfo.InvariantCulture) + long.Parse(f[12], System.Globalization.CultureInfo.InvariantCulture)) / TicksPerSecond.Value;
        }
        catch (IOException) { return null; }
    }

    /// <summary>RssAnon + RssFile of /proc/PID/status (the resident set without shared memory), in bytes.</summary>
    public static long? PrivateRss(int pid)
    {
        try
        {
            long total = 0;
            int found = 0;
            foreach (var line in File.ReadLines($"/proc/{pid}/status"))
                if (line.StartsWith("RssAnon:", StringComparison.Ordinal) || line.StartsWith("RssFile:", StringComparison.Ordinal))
                {
                    total += long.Parse(line[8..].Trim().Split(' ')[0], System.Globalization.CultureInfo.InvariantCulture) * 1024;
                    found++;
                }
            return found == 2 ? total : null;
        }
        catch (IOException) { return null; }
    }

    public static long? PeakRss(int pid)
    {
        try
        {
            foreach (var line in File.ReadLines($"/proc/{pid}/status"))
                if (line.StartsWith("VmHWM:", StringComparison.Ordinal))
                    return long.Parse(line[6..].Trim().Split(' ')[0], System.Globalization.CultureInfo.InvariantCulture) * 1024;
            return null;
        }
        catch (IOException) { return null; }
    }
}
