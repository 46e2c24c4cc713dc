using System.Collections.Concurrent;
using System.Diagnostics;
using System.Text;

namespace Emunet.GuestRig;

/// <summary>How to boot the test guest.</summary>
public sealed record GuestOptions
{
    /// <summary>QEMU arguments that give the guest its network card, e.g. <see cref="GuestNetwork.User"/>.</summary>
    public required IReadOnlyList<string> NetworkArgs { get; init; }
    /// <summary>A busybox sh script run as root inside the guest after DHCP; its exit status is the guest's result.</summary>
    public required string Script { get; init; }
    /// <summary>More files to put into the guest's root file system (path relative to /, content).</summary>
    public IReadOnlyDictionary<string, byte[]> Files { get; init; } = new Dictionary<string, byte[]>();
    /// <summary>The whole run, boot included, must end within this or QEMU is killed.</summary>
    public TimeSpan Timeout { get; init; } = TimeSpan.FromMinutes(2);
    public int MemoryMb { get; init; } = 512;
    public int Cpus { get; init; } = 1;
    /// <summary>Take a DHCP lease before the script runs.</summary>
    public bool Dhcp { get; init; } = true;
    /// <summary>A reboot in the guest restarts it in the same QEMU (whose script then runs again) instead of ending QEMU.</summary>
    public bool AllowReboot { get; init; }
}

/// <summary>Fragments of guest shell scripts that several tests share.</summary>
public static class GuestScripts
{
    /// <summary>
    /// Waits (at most 60 s) for a global address in fec0::/64 that finished duplicate address detection (SLAAC from
    /// Emunet's router advertisement). When none came it says what the guest's IPv6 looked like instead (addresses,
    /// link, the interface's IPv6 switches, the kernel's IPv6 and link messages), so a failure names its cause.
    /// </summary>
    public const string WaitForSlaac = """
        i=0
        while [ $i -lt 60 ]; do
          ip -6 addr show dev eth0 | grep 'inet6 fec0:' | grep -qv tentative && break
          sleep 1; i=$((i+1))
        done
        if [ $i -ge 60 ]; then
          echo "slaac: no fec0::/64 address after 60 s"
          ip -6 addr show dev eth0; ip link show dev eth0
          echo "slaac: disable_ipv6=$(cat /proc/sys/net/ipv6/conf/eth0/disable_ipv6) accept_ra=$(cat /proc/sys/net/ipv6/conf/eth0/accept_ra) mtu=$(cat /sys/class/net/eth0/mtu) carrier=$(cat /sys/class/net/eth0/carrier)"
          dmesg | grep -i -E 'ipv6|eth0|virtio|duplicate' | tail -20
        fi
        """ + "\n"; // a line of its own: scripts go on after it
}

/// <summary>QEMU network arguments for the guest's one virtio-net card.</summary>
public static class GuestNetwork
{
    private const string Device = "virtio-net-pci,netdev=n0,romfile=";

    /// <summary>QEMU's built-in libslirp (<c>-netdev user</c>).</summary>
    public static string[] User(string extra = "") => ["-netdev", "user,id=n0" + extra, "-device", Device];

    /// <summary>QEMU 7.2+ stream socket to a Unix socket path (Emunet's <c>--socket PATH</c>).</summary>
    public static string[] StreamUnix(string path) =>
        ["-netdev", $"stream,id=n0,server=off,addr.type=unix,addr.path={path}", "-device", Device];

    /// <summary>The older <c>-netdev socket,connect=</c> with the same framing (Emunet's <c>--socket tcp:127.0.0.1:PORT</c>).</summary>
    public static string[] SocketTcp(int port) => ["-netdev", $"socket,id=n0,connect=127.0.0.1:{port}", "-device", Device];

    /// <summary>
    /// QEMU listens on 127.0.0.1:<paramref name="port"/> with the socket back-end (<c>-netdev socket,listen=</c>, as the
    /// Android Emulator's <c>-net-socket listen=</c>); Emunet dials it (<c>tcp:127.0.0.1:PORT</c>, link mode Connect).
    /// </summary>
    public static string[] SocketListenTcp(int port) => ["-netdev", $"socket,id=n0,listen=127.0.0.1:{port}", "-device", Device];

    /// <summary>QEMU 7.2+ listens on a Unix socket path with the stream back-end; Emunet dials it (<c>unix:PATH</c>, link mode Connect).</summary>
    public static string[] StreamServerUnix(string path) =>
        ["-netdev", $"stream,id=n0,server=on,addr.type=unix,addr.path={path}", "-device", Device];

    /// <summary>QEMU 7.2+ listens on 127.0.0.1:<paramref name="port"/> with the stream back-end; Emunet dials it.</summary>
    public static string[] StreamServerTcp(int port) =>
        ["-netdev", $"stream,id=n0,server=on,addr.type=inet,addr.host=127.0.0.1,addr.port={port}", "-device", Device];

    /// <summary>
    /// vhost-user to a Unix socket path (Emunet's <c>--vhost-user PATH</c>). The guest's RAM must be a shared memfd the
    /// back-end can map; <paramref name="memoryMb"/> must equal <see cref="GuestOptions.MemoryMb"/>. vectors=0: MSI-X
    /// under TCG with vhost-user is not dependable on the test hosts, INTx is.
    /// </summary>
    public static string[] VhostUser(string path, int memoryMb = 512) => VhostUserChardev($"socket,id=c0,path={path}", memoryMb);

    /// <summary>
    /// vhost-user with QEMU as the socket's server (<c>-chardev socket,server=on</c>): QEMU waits at start-up until the
    /// back-end connects, and Emunet dials it (<c>unix:PATH</c>, link mode Connect). Otherwise as <see cref="VhostUser"/>.
    /// </summary>
    public static string[] VhostUserServer(string path, int memoryMb = 512) => VhostUserChardev($"socket,id=c0,path={path},server=on", memoryMb);

    private static string[] VhostUserChardev(string chardev, int memoryMb) =>
    [
        "-object", $"memory-backend-memfd,id=mem,size={memoryMb}M,share=on", "-numa", "node,memdev=mem",
        "-chardev", chardev, "-netdev", "vhost-user,id=n0,chardev=c0",
        "-device", "virtio-net-pci,netdev=n0,vectors=0,romfile=",
    ];
}

/// <summary>What a guest run produced.</summary>
public sealed record GuestResult(int ExitCode, string Output, string Console)
{
    public override string ToString() => $"guest exit {ExitCode}\n--- output ---\n{Output}\n--- console (tail) ---\n{Tail(Console, 3000)}";

    private static string Tail(string s, int n) => s.Length <= n ? s : s[^n..];
}

/// <summary>
/// Boots the test guest under QEMU (TCG), runs a script inside it and collects its output (second serial port) and
/// exit status. QEMU is always killed on dispose, on timeout and when the test process exits; nothing is left behind.
/// </summary>
public sealed class QemuGuest : IDisposable
{
    public const string ReadyMarker = "__EMUNET_READY__";
    private const string ExitMarker = "__EMUNET_EXIT__=";
    private static readonly ConcurrentDictionary<QemuGuest, byte> Running = new();

    static QemuGuest()
    {
        AppDomain.CurrentDomain.ProcessExit += (_, _) =>
        {
            foreach (var g in Running.Keys) g.Dispose();
        };
    }

    private readonly Process _process;
    private readonly string _dir;
    private readonly List<string> _lines = new();
    private readonly object _gate = new();
    private TaskCompletionSource _changed = new(TaskCreationOptions.RunContinuationsAsynchronously);
    private readonly Task _reader;
    private readonly DateTime _deadline;
    private int? _exitCode;

    private QemuGuest(Process process, string dir, TimeSpan timeout)
    {
        _process = process;
        _dir = dir;
        _deadline = DateTime.UtcNow + timeout;
        Running[this] = 0;
        _reader = Task.Run(ReadOutputAsync);
    }

    /// <summary>The process id of qemu-system-x86_64 (the Android stand-in execs it, so the same id).</summary>
    public int ProcessId => _process.Id;

    /// <summary>Boots the guest; the script starts right after boot and DHCP.</summary>
    public static QemuGuest Start(GuestOptions options)
    {
        var (dir, args) = PrepareCommandLine(options);
        args.AddRange(options.NetworkArgs);
        return StartProcess("qemu-system-x86_64", args, dir, options.Timeout);
    }

    /// <summary>The stand-in for the Android Emulator's <c>emulator</c> binary (tests/guest/fake-android-emulator).</summary>
    public static string AndroidEmulator => Path.Combine(RepoPaths.Root, "tests", "guest", "fake-android-emulator");

    /// <summary>
    /// Boots the guest through <see cref="AndroidEmulator"/>: <paramref name="androidArgs"/> are the emulator's own
    /// options (<c>-net-socket listen=127.0.0.1:P</c>, <c>-wifi-socket …</c>, <c>-avd NAME</c>, …) and the guest's QEMU
    /// arguments follow <c>-qemu</c>, as the real emulator passes them on. <see cref="GuestOptions.NetworkArgs"/> are
    /// added after those (usually none: the emulator's flags give the cards).
    /// </summary>
    public static QemuGuest StartAndroid(GuestOptions options, params string[] androidArgs)
    {
        var (dir, qemuArgs) = PrepareCommandLine(options);
        return StartProcess(AndroidEmulator, [.. androidArgs, "-qemu", .. qemuArgs, .. options.NetworkArgs], dir, options.Timeout);
    }

    private static QemuGuest StartProcess(string program, List<string> args, string dir, TimeSpan timeout)
    {
        var psi = new ProcessStartInfo(program)
        {
            RedirectStandardInput = true, RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false,
        };
        foreach (var a in args) psi.ArgumentList.Add(a);
        Process process;
        try
        {
            process = Process.Start(psi) ?? throw new InvalidOperationException($"{program} did not start.");
        }
        catch (System.ComponentModel.Win32Exception e)
        {
            Directory.Delete(dir, true);
            throw new InvalidOperationException($"{program} cannot be run; qemu-system-x86_64 comes with scripts/setup.sh (apt-get install qemu-system-x86).", e);
        }
        return new QemuGuest(process, dir, timeout);
    }

    /// <summary>
    /// The QEMU arguments (without the program name and without <see cref="GuestOptions.NetworkArgs"/>) that boot the
    /// guest with the script: for a wrapper such as <c>emunet launch -- qemu-system-x86_64 ...</c> that adds the network
    /// itself. The script's output goes to QEMU's standard output. The caller deletes the returned folder.
    /// </summary>
    public static (string Folder, List<string> Args) PrepareCommandLine(GuestOptions options)
    {
        var image = GuestImage.Ensure();
        var dir = Directory.CreateTempSubdirectory("emunet-guest-").FullName;
        var files = new List<(string, byte[], int)> { ("test.sh", Encoding.UTF8.GetBytes(options.Script), 0x1ed) };
        foreach (var (name, content) in options.Files) files.Add((name.TrimStart('/'), content, 0x1a4));
        var initrd = Path.Combine(dir, "initrd.cpio");
        using (var f = File.Create(initrd))
        {
            using (var b = File.OpenRead(image.Initramfs)) b.CopyTo(f);
            f.Write(Cpio.Build(files));
        }
        var args = new List<string>
        {
            "-accel", "tcg,thread=multi", "-m", options.MemoryMb.ToString(), "-smp", options.Cpus.ToString(),
            "-nodefaults", "-no-user-config", "-display", "none",
            "-kernel", image.Kernel, "-initrd", initrd,
            "-append", "console=ttyS0 quiet panic=-1" + (options.Dhcp ? "" : " emunet.nodhcp"),
            "-serial", "file:" + Path.Combine(dir, "console.log"), "-serial", "stdio",
        };
        if (!options.AllowReboot) args.Add("-no-reboot");
        return (dir, args);
    }

    /// <summary>Boots the guest, runs the script to its end and returns the result.</summary>
    public static async Task<GuestResult> RunAsync(GuestOptions options)
    {
        using var guest = Start(options);
        return await guest.WaitForExitAsync();
    }

    /// <summary>The script's output so far, one entry per line.</summary>
    public IReadOnlyList<string> Lines
    {
        get { lock (_gate) return _lines.ToArray(); }
    }

    /// <summary>Waits for an output line that matches; throws with the output so far when the guest ends or time runs out first.</summary>
    public async Task<string> WaitForLineAsync(Func<string, bool> match, TimeSpan timeout)
    {
        var until = DateTime.UtcNow + timeout;
        int seen = 0;
        while (true)
        {
            Task changed;
            lock (_gate)
            {
                for (; seen < _lines.Count; seen++)
                    if (match(_lines[seen])) return _lines[seen];
                if (_exitCode is not null || _process.HasExited && _reader.IsCompleted)
                    throw new InvalidOperationException($"The guest ended before the awaited line.\n{Snapshot()}");
                changed = _changed.Task;
            }
            var left = until - DateTime.UtcNow;
            if (left <= TimeSpan.Zero || await Task.WhenAny(changed, Task.Delay(left)) != changed)
                throw new TimeoutException($"No matching guest output within {timeout.TotalSeconds:0} s.\n{Snapshot()}");
        }
    }

    /// <summary>Waits for the script's end (the guest powers off), killing QEMU at the run's deadline.</summary>
    public async Task<GuestResult> WaitForExitAsync()
    {
        var left = _deadline - DateTime.UtcNow;
        using var cts = new CancellationTokenSource(left > TimeSpan.Zero ? left : TimeSpan.Zero);
        try
        {
            await _process.WaitForExitAsync(cts.Token);
            await _reader;
        }
        catch (OperationCanceledException)
        {
            Kill();
            throw new TimeoutException($"The guest did not finish within its timeout; QEMU was killed.\n{Snapshot()}");
        }
        lock (_gate)
        {
            if (_exitCode is null)
                throw new InvalidOperationException($"QEMU exited ({_process.ExitCode}) without the guest's exit marker.\n{Snapshot()}");
            return new GuestResult(_exitCode.Value, string.Join('\n', _lines), ReadConsole());
        }
    }

    private async Task ReadOutputAsync()
    {
        var stderr = _process.StandardError.ReadToEndAsync();
        while (await _process.StandardOutput.ReadLineAsync() is { } raw)
        {
            var line = raw.TrimEnd('\r');
            lock (_gate)
            {
                if (line.StartsWith(ExitMarker, StringComparison.Ordinal) && int.TryParse(line.AsSpan(ExitMarker.Length), out int rc))
                    _exitCode = rc;
                else if (line != ReadyMarker || _lines.Count > 0)
                    _lines.Add(line);
                var old = _changed;
                _changed = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
                old.SetResult();
            }
        }
        var err = await stderr;
        lock (_gate)
        {
            if (err.Length > 0) _lines.Add("[qemu stderr] " + err.Trim());
            _changed.TrySetResult();
        }
    }

    private string Snapshot()
    {
        lock (_gate)
            return new GuestResult(_exitCode ?? -1, string.Join('\n', _lines), ReadConsole()).ToString();
    }

    private string ReadConsole()
    {
        try
        {
            using var f = new FileStream(Path.Combine(_dir, "console.log"), FileMode.Open, FileAccess.Read, FileShare.ReadWrite);
            using var r = new StreamReader(f);
            return r.ReadToEnd();
        }
        catch (IOException) { return ""; }
    }

    private void Kill()
    {
        try
        {
            if (!_process.HasExited) _process.Kill(entireProcessTree: true);
            _process.WaitForExit(5000);
        }
        catch (InvalidOperationException) { }
    }

    public void Dispose()
    {
        if (!Running.TryRemove(this, out _)) return;
        Kill();
        _process.Dispose();
        try { Directory.Delete(_dir, true); } catch (IOException) { } catch (UnauthorizedAccessException) { }
    }
}
