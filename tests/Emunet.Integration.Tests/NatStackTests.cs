using System.Net;
using System.Security.Cryptography;
using System.Text.RegularExpressions;
using Emunet.GuestRig;

namespace Emunet.Integration.Tests;

/// <summary>
/// The NAT stack against a real Linux guest attached with QEMU's -netdev stream to a real engine; every check runs
/// inside the guest with its own kernel and tools.
/// </summary>
public sealed class NatStackTests
{
    [Fact]
    public async Task Guest_gets_lease_pings_resolves_exchanges_udp_and_sees_refusal_at_once()
    {
        using var dns = new LoopbackDnsServer();
        dns.Add("host.emunet.test", IPAddress.Parse("10.0.2.2"));
        using var udp = new LoopbackUdpEcho();
        using var engine = new TestEngine(TestEngine.WithDns(dns.Port));
        int closedPort = LoopbackPorts.Free();

        var result = await QemuGuest.RunAsync(new GuestOptions
        {
            NetworkArgs = GuestNetwork.StreamUnix(engine.SocketPath),
            Script = $$"""
                . /run/lease.env
                echo "lease ip=$ip mask=$mask router=$router dns=$dns mtu=$mtu"
                echo "route $(ip route show default)"
                echo "resolv $(cat /etc/resolv.conf)"
                echo "linkmtu $(cat /sys/class/net/eth0/mtu)"
                ping -c 3 -W 2 10.0.2.2 >/tmp/ping 2>&1 && echo "ping ok" || { echo "ping failed"; cat /tmp/ping; }
                nslookup host.emunet.test 10.0.2.3 >/tmp/ns 2>&1; echo "nslookup rc=$?"; cat /tmp/ns
                echo hello | timeout 5 socat -t 2 - UDP:10.0.2.2:{{udp.Port}} > /tmp/udp; echo "udp $(cat /tmp/udp)"
                # DNS over TCP through 10.0.2.3: a length-prefixed A query for host.emunet.test.
                printf '\000\042\022\064\001\000\000\001\000\000\000\000\000\000\004host\006emunet\004test\000\000\001\000\001' \
                  | timeout 10 socat -t 3 - TCP:10.0.2.3:53 | od -An -tx1 | tr -d ' \n' > /tmp/tcpdns; echo "tcpdns $(cat /tmp/tcpdns)"
                t0=$(date +%s)
                timeout 5 nc 10.0.2.2 {{closedPort}} </dev/null >/tmp/refused 2>&1
                echo "refused rc=$? took=$(( $(date +%s) - t0 )) $(cat /tmp/refused)"
                """,
        });

        var o = result.Output;
        Assert.True(result.ExitCode == 0, result.ToString());
        Assert.Contains("lease ip=10.0.2.15 mask=24 router=10.0.2.2 dns=10.0.2.3 mtu=65520", o);
        Assert.Contains("route default via 10.0.2.2 dev eth0", o);
        Assert.Contains("resolv nameserver 10.0.2.3", o);
        Assert.Contains("linkmtu 65520", o);
        Assert.Contains("ping ok", o);
        Assert.Matches(new Regex(@"Name:\s+host\.emunet\.test\s+Address(:| 1:)?\s+10\.0\.2\.2"), o);
        Assert.True(dns.UdpQueries > 0, "the DNS query did not reach the host-side server");
        Assert.Contains("udp echo:HELLO", o);
        // The answer: same id (1234), a response (8x), one answer whose address is 10.0.2.2 (0a000202).
        Assert.Matches(new Regex(@"tcpdns [0-9a-f]{4}12348[0-9a-f]{3}[0-9a-f]*0a000202"), o);
        Assert.True(dns.TcpQueries > 0, "the TCP DNS query did not reach the host-side server");
        Assert.Matches(new Regex(@"refused rc=1 took=[01] .*Connection refused"), o);
    }

    [Fact]
    public async Task Guest_downloads_and_uploads_64_MiB_through_10_0_2_2_with_matching_sha256()
    {
        const int size = 64 << 20;
        var body = RandomNumberGenerator.GetBytes(size);
        string sha = Convert.ToHexStringLower(SHA256.HashData(body));
        using var http = new LoopbackHttpServer();
        http.Serve("/blob", body);
        using var sink = new LoopbackHashSink(size);
        using var engine = new TestEngine();

        var result = await QemuGuest.RunAsync(new GuestOptions
        {
            NetworkArgs = GuestNetwork.StreamUnix(engine.SocketPath),
            MemoryMb = 768,
            Timeout = TimeSpan.FromMinutes(4),
            Script = $$"""
                set -e
                got=$(wget -q -O - http://10.0.2.2:{{http.Port}}/blob | sha256sum | cut -d' ' -f1)
                echo "download sha=$got"
                dd if=/dev/urandom of=/tmp/up bs=1M count=64 2>/dev/null
                echo "upload local=$(sha256sum /tmp/up | cut -d' ' -f1)"
                echo "upload remote=$(nc 10.0.2.2 {{sink.Port}} < /tmp/up)"
                """,
        });

        Assert.True(result.ExitCode == 0, result.ToString());
        Assert.Contains($"download sha={sha}", result.Output);
        var local = Regex.Match(result.Output, "upload local=([0-9a-f]{64})").Groups[1].Value;
        Assert.Equal(local, await sink.Result.WaitAsync(TimeSpan.FromSeconds(10)));
        Assert.Contains($"upload remote={local}", result.Output);
    }

    [Fact]
    public async Task Iperf3_runs_10_s_each_way_without_a_stalled_interval()
    {
        int port = LoopbackPorts.Free();
        using var iperf = new LoopbackIperf3Server(port);
        using var engine = new TestEngine();

        var result = await QemuGuest.RunAsync(new GuestOptions
        {
            NetworkArgs = GuestNetwork.StreamUnix(engine.SocketPath),
            Timeout = TimeSpan.FromMinutes(3),
            Script = $"""
                set -e
                echo "== upload"
                iperf3 -c 10.0.2.2 -p {port} -t 10 -i 1 -f m
                echo "== download"
                iperf3 -c 10.0.2.2 -p {port} -t 10 -i 1 -f m -R
                """,
        });

        Assert.True(result.ExitCode == 0, result.ToString());
        foreach (var direction in result.Output.Split("== ", StringSplitOptions.RemoveEmptyEntries))
        {
            var intervals = Regex.Matches(direction, @"\]\s+(\d+\.\d+)-(\d+\.\d+)\s+sec\s+[\d.]+ \w?Bytes\s+([\d.]+) Mbits/sec")
                .Where(m => double.Parse(m.Groups[2].Value) - double.Parse(m.Groups[1].Value) < 2).ToList(); // per-second lines, not the 10 s summary (a loaded host stretches a few)
            Assert.True(intervals.Count >= 10, $"expected 10 one-second intervals:\n{direction}");
            Assert.All(intervals, m => Assert.True(double.Parse(m.Groups[3].Value) > 0, $"stalled interval: {m.Value}\n{direction}"));
        }
    }

    [Fact]
    public async Task Engine_serves_a_restarted_emulator_and_the_tcp_socket_form()
    {
        using var http = new LoopbackHttpServer();
        http.Serve("/", "ok-from-host\n"u8.ToArray());
        int port = LoopbackPorts.Free();
        using var engine = new TestEngine(socket: $"tcp:127.0.0.1:{port}");
        string script = $"wget -q -O - http://10.0.2.2:{http.Port}/";

        for (int boot = 0; boot < 2; boot++)
        {
            var result = await QemuGuest.RunAsync(new GuestOptions { NetworkArgs = GuestNetwork.SocketTcp(port), Script = script });
            Assert.True(result.ExitCode == 0, $"boot {boot}: {result}");
            Assert.Contains("ok-from-host", result.Output);
        }
    }

    [Fact]
    public async Task Finished_connections_leave_the_flow_table_whichever_side_closes_first()
    {
        using var http = new LoopbackHttpServer();
        http.Serve("/", "page\n"u8.ToArray());
        using var engine = new TestEngine();
        using var control = new GuestControl();
        using var guest = QemuGuest.Start(new GuestOptions
        {
            NetworkArgs = GuestNetwork.StreamUnix(engine.SocketPath),
            Script = $"""
                for i in 1 2 3; do wget -q -O /dev/null http://10.0.2.2:{http.Port}/; done
                echo fetched
                {control.WaitLine}
                """,
        });
        await guest.WaitForLineAsync(l => l == "fetched", TimeSpan.FromMinutes(2));
        var until = DateTime.UtcNow.AddSeconds(5);
        IReadOnlyList<Emunet.Engine.Stack.Nat.ConnectionInfo> left;
        // The guest's control connection (nc to the GuestControl port) is the one TCP flow allowed to remain.
        while ((left = (await engine.Engine.ListConnectionsAsync()).Where(c => c.Protocol == Emunet.Engine.Stack.Nat.FlowProtocol.Tcp && c.GuestPeerEndPoint.Port == http.Port).ToList()).Count > 0
               && DateTime.UtcNow < until)
            await Task.Delay(50);
        Assert.True(left.Count == 0, "connections left: " + string.Join("; ", left.Select(c => $"{c.GuestEndPoint} {c.State}")));
        await control.SendAsync("done", TimeSpan.FromSeconds(30));
        await guest.WaitForExitAsync();
    }
}
