using System.Diagnostics;
using System.Text;
using Emunet.Engine;
using Emunet.Engine.Stack;
using Emunet.Engine.Wire;
using Emunet.GuestRig;
using Microsoft.Extensions.Logging.Abstractions;
using Xunit.Abstractions;

namespace Emunet.Integration.Tests;

/// <summary>
/// Dial-out links on the real guest: the emulator listens (QEMU's <c>-netdev socket,listen=</c> and
/// <c>-netdev stream,server=on</c>, the Android Emulator's <c>-net-socket</c>/<c>-wifi-socket listen=</c> through its
/// stand-in) and the engine connects to it, whichever starts first; and an engine killed under a running guest is
/// replaced without restarting QEMU: the guest keeps its address, its pings come back, its lease renews, new
/// connections work.
/// </summary>
public sealed class DialOutTests(ITestOutputHelper output)
{
    private static readonly TimeSpan Listening = TimeSpan.FromSeconds(30);

    /// <summary>The guest's checks once its card is up: its lease, the host through 10.0.2.2, a TCP fetch.</summary>
    private static string Reach(int httpPort) => $"""
        . /run/lease.env
        echo "ip=$ip"
        ping -c 2 -W 2 10.0.2.2 >/dev/null 2>&1 && echo "ping ok" || echo "ping failed"
        wget -q -O - http://10.0.2.2:{httpPort}/
        """;

    [Fact]
    public async Task DialOut_tcp_the_engine_dials_qemu_listening_with_netdev_socket()
    {
        using var http = new LoopbackHttpServer();
        http.Serve("/", "dialled over tcp\n"u8.ToArray());
        int port = LoopbackPorts.Free();
        using var guest = QemuGuest.Start(new GuestOptions { NetworkArgs = GuestNetwork.SocketListenTcp(port), Script = Reach(http.Port) });
        await LoopbackPorts.WaitListeningAsync(port, Listening); // QEMU first
        using var engine = StartEngine(new LinkOptions(LinkKind.Stream, LinkMode.Connect, $"tcp:127.0.0.1:{port}"));
        Assert.Equal($"stream:connect:tcp:127.0.0.1:{port}", engine.Info.Device);

        var result = await guest.WaitForExitAsync();
        Assert.True(result.ExitCode == 0, result.ToString());
        Assert.Contains("ip=10.0.2.15", result.Output);
        Assert.Contains("ping ok", result.Output);
        Assert.Contains("dialled over tcp", result.Output);
    }

    [Fact]
    public async Task DialOut_unix_the_engine_dials_qemu_listening_with_netdev_stream_server()
    {
        using var http = new LoopbackHttpServer();
        http.Serve("/", "dialled over a unix socket\n"u8.ToArray());
        var dir = Directory.CreateTempSubdirectory("emunet-dial-").FullName;
        try
        {
            var path = Path.Combine(dir, "qemu.sock");
            using var guest = QemuGuest.Start(new GuestOptions { NetworkArgs = GuestNetwork.StreamServerUnix(path), Script = Reach(http.Port) });
            await LoopbackPorts.WaitSocketFileAsync(path, Listening); // QEMU first
            using var engine = StartEngine(new LinkOptions(LinkKind.Stream, LinkMode.Connect, $"unix:{path}"));
            Assert.Equal($"stream:connect:unix:{path}", engine.Info.Device);

            var result = await guest.WaitForExitAsync();
            Assert.True(result.ExitCode == 0, result.ToString());
            Assert.Contains("ip=10.0.2.15", result.Output);
            Assert.Contains("ping ok", result.Output);
            Assert.Contains("dialled over a unix socket", result.Output);
        }
        finally
        {
            Directory.Delete(dir, true);
        }
    }

    [Fact]
    public async Task DialOut_vhost_user_the_engine_dials_qemu_as_the_chardev_server()
    {
        using var http = new LoopbackHttpServer();
        http.Serve("/", "dialled vhost-user\n"u8.ToArray());
        var dir = Directory.CreateTempSubdirectory("emunet-dial-").FullName;
        try
        {
            var path = Path.Combine(dir, "vhost.sock");
            using var guest = QemuGuest.Start(new GuestOptions { NetworkArgs = GuestNetwork.VhostUserServer(path), Script = Reach(http.Port) });
            await LoopbackPorts.WaitSocketFileAsync(path, Listening); // QEMU first; it waits for the back-end
            using var engine = StartEngine(new LinkOptions(LinkKind.VhostUser, LinkMode.Connect, $"unix:{path}"));
            Assert.Equal($"vhost-user:connect:unix:{path}", engine.Info.Device);

            var result = await guest.WaitForExitAsync();
            Assert.True(result.ExitCode == 0, result.ToString());
            Assert.Contains("ip=10.0.2.15", result.Output);
            Assert.Contains("ping ok", result.Output);
            Assert.Contains("dialled vhost-user", result.Output);
        }
        finally
        {
            Directory.Delete(dir, true);
        }
    }

    /// <summary>
    /// The Android Emulator's way, engines first: one engine per link dials the stand-in's <c>-net-socket</c> (radio,
    /// eth0, 10.0.2.15) and <c>-wifi-socket</c> (Wi-Fi, eth1, 10.0.2.16) until it listens; both cards come up, and each
    /// reaches the host through its own link (a packet from .16 on the radio link would be dropped as spoofed).
    /// </summary>
    [Fact]
    public async Task DialOut_android_stand_in_both_links_come_up_when_the_engines_dial_first()
    {
        using var http = new LoopbackHttpServer();
        http.Serve("/", "radio link\n"u8.ToArray());
        int radio = LoopbackPorts.Free();
        int wifi = LoopbackPorts.Free();
        using var radioEngine = StartEngine(new LinkOptions(LinkKind.Stream, LinkMode.Connect, $"tcp:127.0.0.1:{radio}"));
        using var wifiEngine = StartEngine(new LinkOptions(LinkKind.Stream, LinkMode.Connect, $"tcp:127.0.0.1:{wifi}"),
            new NetworkConfig { Guest = new IPv4Address(10, 0, 2, 16) });
        using var guest = QemuGuest.StartAndroid(new GuestOptions
        {
            NetworkArgs = [],
            Script = $"""
                {Reach(http.Port)}
                . /run/lease.eth1.env
                echo "wifi ip=$ip"
                ping -c 2 -W 2 -I eth1 10.0.2.2 >/dev/null 2>&1 && echo "wifi ping ok" || echo "wifi ping failed"
                """,
        }, "-avd", "test", "-no-window", "-no-snapshot", "-net-socket", $"listen=127.0.0.1:{radio}", "-wifi-socket", $"listen=127.0.0.1:{wifi}");

        var result = await guest.WaitForExitAsync();
        Assert.True(result.ExitCode == 0, result.ToString());
        Assert.DoesNotContain("DHCP failed", result.Output);
        Assert.Contains("ip=10.0.2.15", result.Output);
        Assert.Contains("ping ok", result.Output);
        Assert.Contains("radio link", result.Output);
        Assert.Contains("wifi ip=10.0.2.16", result.Output);
        Assert.Contains("wifi ping ok", result.Output);
        Assert.True((await wifiEngine.GetStatisticsAsync()).FramesFromGuest > 0);
    }

    /// <summary>
    /// An engine process SIGKILLed while the guest pings 10.0.2.2 in a loop; a new one with the same arguments; the
    /// pings answer again within 10 s of its start, with QEMU never restarted: the guest kept 10.0.2.15, its DHCP
    /// client's renewal (RFC 2131 RENEWING, unicast) is acked by the new engine, and a new TCP connection works. Over
    /// the Android stand-in's <c>-net-socket listen=</c> (TCP), QEMU 7.2's <c>-netdev stream,server=on</c> (Unix) and
    /// vhost-user with QEMU as the chardev server.
    /// </summary>
    [Theory]
    [InlineData(AndroidNetSocket)]
    [InlineData(QemuStreamServer)]
    [InlineData(QemuVhostUserServer)]
    public async Task DialOut_engine_killed_and_restarted_costs_the_guest_a_pause_not_its_network(string emulator)
    {
        using var http = new LoopbackHttpServer();
        http.Serve("/", "after the restart\n"u8.ToArray());
        int port = LoopbackPorts.Free();
        var dir = Directory.CreateTempSubdirectory("emunet-dial-").FullName;
        var path = Path.Combine(dir, "qemu.sock");
        try
        {
            await KillAndRestart(emulator, http.Port, port, path);
        }
        finally
        {
            Directory.Delete(dir, true);
        }
    }

    public const string AndroidNetSocket = "android -net-socket listen=";
    public const string QemuStreamServer = "qemu -netdev stream,server=on";
    public const string QemuVhostUserServer = "qemu -chardev socket,server=on -netdev vhost-user";

    private async Task KillAndRestart(string emulator, int httpPort, int port, string path)
    {
        var options = new GuestOptions
        {
            NetworkArgs = emulator switch
            {
                QemuStreamServer => GuestNetwork.StreamServerUnix(path),
                QemuVhostUserServer => GuestNetwork.VhostUserServer(path),
                _ => [],
            },
            Timeout = TimeSpan.FromMinutes(4),
            Script = $$"""
                . /run/lease.env
                echo "lease ip=$ip"
                # A DHCP client that stays bound, so that a renewal can be asked of it after the restart.
                udhcpc -i eth0 -s /etc/udhcpc.script -O mtu -f -t 10 -T 1 -p /run/udhcpc.pid >/run/udhcpc-bound.log 2>&1 &
                i=0
                while [ "$(grep -c '^bound eth0' /run/dhcp-events)" -lt 2 ] && [ $i -lt 200 ]; do usleep 100000; i=$((i+1)); done
                n=0; ok=0; lost=0
                while [ $n -lt 600 ]; do
                  n=$((n+1))
                  if ping -c 1 -W 1 10.0.2.2 >/dev/null 2>&1; then
                    if [ $lost -gt 0 ]; then echo "ping back $n"; break; fi
                    ok=1; echo "ping ok $n"
                  elif [ $ok = 1 ]; then
                    lost=$((lost+1)); echo "ping lost $n"
                  else
                    echo "ping not yet $n"
                  fi
                  usleep 200000
                done
                [ $lost -gt 0 ] || { echo "no ping was lost"; exit 1; }
                ip -4 addr show dev eth0 | grep -q "inet 10.0.2.15/" && echo "address kept"
                kill -USR1 "$(cat /run/udhcpc.pid)"
                i=0
                while ! grep -q '^renew eth0 10.0.2.15' /run/dhcp-events && [ $i -lt 150 ]; do usleep 100000; i=$((i+1)); done
                grep '^renew eth0' /run/dhcp-events | sed 's/^/dhcp /'
                wget -q -O - http://10.0.2.2:{{httpPort}}/
                """,
        };
        bool stream = emulator != AndroidNetSocket;
        using var guest = stream
            ? QemuGuest.Start(options)
            : QemuGuest.StartAndroid(options, "-avd", "test", "-no-window", "-net-socket", $"listen=127.0.0.1:{port}");
        if (stream) await LoopbackPorts.WaitSocketFileAsync(path, Listening);
        else await LoopbackPorts.WaitListeningAsync(port, Listening);
        var endpoint = stream ? $"unix:{path}" : $"tcp:127.0.0.1:{port}";
        string[] engineArgs = emulator == QemuVhostUserServer ? ["--connect", endpoint, "--vhost-user"] : ["--connect", endpoint];

        using (var first = await EngineProcess.StartAsync(engineArgs))
        {
            Assert.Contains($"{(emulator == QemuVhostUserServer ? "vhost-user" : "stream")}:connect:{endpoint}", first.StartLine);
            await guest.WaitForLineAsync(l => l.StartsWith("ping ok", StringComparison.Ordinal), TimeSpan.FromSeconds(120));
            first.KillHard();
            await guest.WaitForLineAsync(l => l.StartsWith("ping lost", StringComparison.Ordinal), TimeSpan.FromSeconds(30));
        }
        var restart = Stopwatch.StartNew();
        using var second = await EngineProcess.StartAsync(engineArgs);
        await guest.WaitForLineAsync(l => l.StartsWith("ping back", StringComparison.Ordinal), TimeSpan.FromSeconds(10));
        Assert.True(restart.Elapsed < TimeSpan.FromSeconds(10), $"pings came back {restart.Elapsed.TotalSeconds:0.0} s after the new engine started");
        output.WriteLine($"pings came back {restart.Elapsed.TotalSeconds:0.0} s after the new engine process started");

        var result = await guest.WaitForExitAsync();
        Assert.True(result.ExitCode == 0, result.ToString() + "\n--- second engine ---\n" + second.Log);
        Assert.Contains("lease ip=10.0.2.15", result.Output);
        Assert.Contains("address kept", result.Output);
        Assert.Contains("dhcp renew eth0 10.0.2.15", result.Output);
        Assert.Contains("after the restart", result.Output);
        Assert.Contains(emulator == QemuVhostUserServer ? "front-end attached" : "Emulator attached", second.Log);
    }

    private static EmunetEngine StartEngine(LinkOptions link, NetworkConfig? network = null)
    {
        var engine = new EmunetEngine(new EngineOptions { Name = "dial", Links = [link], Network = network ?? new NetworkConfig() }, NullLoggerFactory.Instance);
        try
        {
            engine.Start();
        }
        catch
        {
            engine.Dispose();
            throw;
        }
        return engine;
    }

    /// <summary>tests/Emunet.EngineHost as its own process: one engine, no control socket, killed with SIGKILL.</summary>
    private sealed class EngineProcess : IDisposable
    {
        private readonly Process _process;
        private readonly StringBuilder _log = new();

        private EngineProcess(Process process) => _process = process;

        public string StartLine { get; private set; } = "";

        public string Log
        {
            get { lock (_log) return _log.ToString(); }
        }

        private static string HostDll
        {
            get
            {
                // Same configuration as this test assembly (bin/Debug or bin/Release).
                var config = new DirectoryInfo(AppContext.BaseDirectory.TrimEnd('/')).Parent!.Name;
                var dll = Path.Combine(RepoPaths.Root, "tests", "Emunet.EngineHost", "bin", config, "net10.0", "Emunet.EngineHost.dll");
                Assert.True(File.Exists(dll), $"build the engine host first: {dll}");
                return dll;
            }
        }

        public static async Task<EngineProcess> StartAsync(string[] args)
        {
            var psi = new ProcessStartInfo("dotnet") { RedirectStandardOutput = true, RedirectStandardError = true };
            psi.ArgumentList.Add(HostDll);
            foreach (var a in args) psi.ArgumentList.Add(a);
            var host = new EngineProcess(Process.Start(psi)!);
            var started = new TaskCompletionSource<string>(TaskCreationOptions.RunContinuationsAsynchronously);
            host._process.OutputDataReceived += (_, e) =>
            {
                if (e.Data is null) { started.TrySetException(new InvalidOperationException($"the engine host ended before starting:\n{host.Log}")); return; }
                host.Append(e.Data);
                if (e.Data.StartsWith("engine started:", StringComparison.Ordinal)) started.TrySetResult(e.Data);
            };
            host._process.ErrorDataReceived += (_, e) =>
            {
                if (e.Data is not null) host.Append(e.Data);
            };
            host._process.BeginOutputReadLine();
            host._process.BeginErrorReadLine();
            try
            {
                host.StartLine = await started.Task.WaitAsync(TimeSpan.FromSeconds(30));
            }
            catch
            {
                host.Dispose();
                throw;
            }
            return host;
        }

        private void Append(string line)
        {
            lock (_log) _log.AppendLine(line);
        }

        /// <summary>SIGKILL: no clean-up of any kind, as a crash or an OOM kill.</summary>
        public void KillHard()
        {
            Assert.Equal(0, kill(_process.Id, 9));
            Assert.True(_process.WaitForExit(10_000), "the engine host survived SIGKILL");
        }

        public void Dispose()
        {
            try
            {
                if (!_process.HasExited) _process.Kill(true);
                _process.WaitForExit(10_000);
            }
            catch (InvalidOperationException) { }
            _process.Dispose();
        }

        [System.Runtime.InteropServices.DllImport("libc", SetLastError = true)]
        private static extern int kill(int pid, int signal);
    }
}
