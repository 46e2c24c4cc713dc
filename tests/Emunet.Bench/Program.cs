using System.Diagnostics;
using System.Globalization;
using System.Net;
using System.Net.Sockets;
using System.Text;
using System.Text.RegularExpressions;
using Emunet.Engine;
using Emunet.Engine.Forwarding;
using Emunet.GuestRig;
using Microsoft.Extensions.Logging.Abstractions;

// Emunet's benchmark: the same guest, in the same run, on each backend. Measures, per backend:
//   outbound throughput (iperf3 in the guest to a server on host loopback via 10.0.2.2), both directions;
//   forwarded throughput (iperf3 on the host into the guest through the backend's port forward: the adb-forward path);
//   forwarded request rate (connect, 1-byte echo, close, sequentially, into a forking socat in the guest).
// Usage: dotnet run --project tests/Emunet.Bench -c Release [-- --seconds N] [--backends emunet,vhost,slirp,passt] (vhost: Emunet on vhost-user)
// emunet6, vhost6: the outbound columns over IPv6 (iperf3 in the guest to [fec0::2] = the host's [::1]); forwards stay IPv4.
int seconds = ArgInt("--seconds", 5);
var backends = (Arg("--backends") ?? "emunet,slirp,passt").Split(',');
var rows = new List<string[]>();
foreach (var backend in backends)
{
    Console.Error.WriteLine($"bench: {backend}...");
    try { rows.Add(await RunBackend(backend.Trim(), seconds)); }
    catch (Exception e)
    {
        Console.Error.WriteLine($"bench: {backend} failed: {e.Message}");
        rows.Add([backend, "error: " + e.Message.Split('\n')[0], "", "", ""]);
    }
}
var table = new StringBuilder();
table.AppendLine($"| backend | guest→host Mbit/s | host→guest Mbit/s | forward host→guest Mbit/s | forward requests/s |");
table.AppendLine("|---|---|---|---|---|");
foreach (var r in rows) table.AppendLine("| " + string.Join(" | ", r) + " |");
Console.WriteLine(table);
Directory.CreateDirectory(Path.Combine(RepoPaths.Build, "bench"));
File.WriteAllText(Path.Combine(RepoPaths.Build, "bench", "results.md"), $"{DateTime.UtcNow:u}, {seconds} s per iperf3 run, TCG guest\n\n{table}");
return 0;

async Task<string[]> RunBackend(string backend, int secs)
{
    const int guestIperf = 5201, guestEcho = 7007;
    int hostIperfPort = LoopbackPorts.Free();
    int fwdIperf = LoopbackPorts.Free(), fwdEcho = LoopbackPorts.Free();
    bool ipv6 = backend is "emunet6" or "vhost6";
    if (ipv6) backend = backend[..^1];
    using var iperf = new LoopbackIperf3Server(hostIperfPort, ipv6 ? System.Net.IPAddress.IPv6Loopback : null);
    var dir = Directory.CreateTempSubdirectory("emunet-bench-").FullName;
    var sock = Path.Combine(dir, "net.sock");
    EmunetEngine? engine = null;
    Process? passt = null;
    string[] netArgs;
    switch (backend)
    {
        case "emunet":
        case "vhost":
            engine = new EmunetEngine(new EngineOptions
            {
                Name = "bench", CapturePath = Arg("--capture"),
                StreamSocket = backend == "emunet" ? sock : null, VhostUserSocket = backend == "vhost" ? sock : null,
                Forwards = [ForwardSpec.Create(ForwardProtocol.Tcp, fwdIperf, guestIperf), ForwardSpec.Create(ForwardProtocol.Tcp, fwdEcho, guestEcho)],
            }, NullLoggerFactory.Instance);
            engine.Start();
            netArgs = backend == "emunet" ? GuestNetwork.StreamUnix(sock) : GuestNetwork.VhostUser(sock);
            break;
        case "slirp":
            netArgs = GuestNetwork.User($",hostfwd=tcp:127.0.0.1:{fwdIperf}-:{guestIperf},hostfwd=tcp:127.0.0.1:{fwdEcho}-:{guestEcho}");
            break;
        case "passt":
            // passt drops root privileges to nobody: its socket folder must be writable by that user.
            File.SetUnixFileMode(dir, (UnixFileMode)0x3ff);
            passt = Process.Start(new ProcessStartInfo("passt", ["-f", "-q", "-4", "-s", sock, "-a", "10.0.2.15", "-n", "24", "-g", "10.0.2.2",
                "-t", $"{fwdIperf}:{guestIperf},{fwdEcho}:{guestEcho}"]) { RedirectStandardOutput = true, RedirectStandardError = true })!;
            var until = DateTime.UtcNow.AddSeconds(10);
            while (!File.Exists(sock) && DateTime.UtcNow < until && !passt.HasExited) await Task.Delay(20);
            if (!File.Exists(sock)) throw new InvalidOperationException("passt did not create its socket");
            netArgs = GuestNetwork.StreamUnix(sock);
            break;
        default:
            throw new ArgumentException($"unknown backend '{backend}' (emunet, vhost, slirp, passt)");
    }
    try
    {
        using var guest = QemuGuest.Start(new GuestOptions
        {
            NetworkArgs = netArgs,
            Timeout = TimeSpan.FromSeconds(120 + 4 * secs),
            Script = $"""
                . /run/lease.env
                {(ipv6 ? "router=fec0::2; i=0; while [ $i -lt 60 ] && ! ip -6 addr show dev eth0 | grep 'inet6 fec0:' | grep -qv tentative; do sleep 1; i=$((i+1)); done" : "")}
                iperf3 -s -p {guestIperf} -D
                socat TCP-LISTEN:{guestEcho},fork,reuseaddr EXEC:cat &
                while ! netstat -ltn | grep -q ':{guestEcho} '; do usleep 50000; done
                echo "== up"; iperf3 -c $router -p {hostIperfPort} -t {secs} -f m
                echo "== down"; iperf3 -c $router -p {hostIperfPort} -t {secs} -f m -R
                echo outbound-done
                sleep 600
                """,
        });
        await guest.WaitForLineAsync(l => l == "outbound-done", TimeSpan.FromSeconds(90 + 3 * secs));
        var output = string.Join('\n', guest.Lines);
        string up = Receiver(output.Split("== down")[0]);
        string down = Receiver(output.Split("== down")[1]);
        Console.Error.WriteLine($"bench: {backend}: outbound done ({up}/{down}); forwarded iperf3...");
        string fwd = Receiver(RunHostIperf(fwdIperf, secs));
        Console.Error.WriteLine($"bench: {backend}: forwarded iperf3 {fwd}; request rate...");
        string rate = (await RequestRate(fwdEcho, TimeSpan.FromSeconds(secs))).ToString("0", CultureInfo.InvariantCulture);
        return [ipv6 ? backend + " (IPv6 via fec0::2)" : backend, up, down, fwd, rate]; // disposing the guest ends QEMU
    }
    finally
    {
        engine?.Dispose();
        if (passt is { HasExited: false }) passt.Kill(true);
        passt?.Dispose();
        Directory.Delete(dir, true);
    }
}

static string Receiver(string iperfText)
{
    var m = Regex.Match(iperfText, @"([\d.]+) Mbits/sec\s+(?:\d+\s+)?receiver");
    return m.Success ? m.Groups[1].Value : "n/a";
}

static string RunHostIperf(int port, int secs)
{
    var psi = new ProcessStartInfo("iperf3", ["-c", "127.0.0.1", "-p", port.ToString(), "-t", secs.ToString(), "-f", "m"]) { RedirectStandardOutput = true };
    using var p = Process.Start(psi)!;
    var o = p.StandardOutput.ReadToEndAsync();
    if (!p.WaitForExit((secs + 30) * 1000))
    {
        p.Kill(true);
        return "timed out";
    }
    return o.Result;
}

static async Task<double> RequestRate(int port, TimeSpan duration)
{
    var sw = Stopwatch.StartNew();
    int n = 0;
    var buf = new byte[1];
    while (sw.Elapsed < duration)
    {
        using var c = new TcpClient { NoDelay = true };
        using var cts = new CancellationTokenSource(TimeSpan.FromSeconds(10));
        await c.ConnectAsync(IPAddress.Loopback, port, cts.Token);
        var s = c.GetStream();
        await s.WriteAsync("x"u8.ToArray(), cts.Token);
        if (await s.ReadAsync(buf, cts.Token) != 1) throw new IOException("the echo did not come back");
        n++;
    }
    return n / sw.Elapsed.TotalSeconds;
}

string? Arg(string name) { int i = Array.IndexOf(args, name); return i >= 0 && i + 1 < args.Length ? args[i + 1] : null; }
int ArgInt(string name, int dflt) => int.TryParse(Arg(name), out int v) ? v : dflt;
