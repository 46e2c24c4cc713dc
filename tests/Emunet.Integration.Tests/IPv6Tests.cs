using System.Net;
using System.Net.Sockets;
using Emunet.Engine.Forwarding;
using System.Security.Cryptography;
using System.Text.RegularExpressions;
using Emunet.Engine.Stack;
using Emunet.Engine.Stack.Nat;
using Emunet.GuestRig;

namespace Emunet.Integration.Tests;

/// <summary>
/// IPv6 against the real Linux guest on both links: the kernel configures itself from Emunet's router advertisement
/// (SLAAC in fec0::/64, default route via fe80::2, the advertised MTU), pings the host alias and the DNS relay over
/// IPv6, and IPv4 keeps working beside it.
/// </summary>
public sealed class IPv6Tests
{
    // Waits (bounded) for a global address of the prefix that finished duplicate address detection.
    private const string Script = GuestScripts.WaitForSlaac + """
        echo "addr6 $(ip -6 addr show dev eth0 | grep 'inet6 fec0:' | head -1)"
        ip -6 addr show dev eth0
        echo "route6 $(ip -6 route show default)"
        echo "mtu6 $(cat /proc/sys/net/ipv6/conf/eth0/mtu)"
        ping -6 -c 3 -W 3 fec0::2 >/tmp/p6 2>&1 && echo "ping6 alias ok" || { echo "ping6 alias failed"; cat /tmp/p6; }
        ping -6 -c 1 -W 3 -s 3000 fec0::3 >/tmp/p6d 2>&1 && echo "ping6 dns ok" || { echo "ping6 dns failed"; cat /tmp/p6d; }
        ping -c 2 -W 2 10.0.2.2 >/tmp/p4 2>&1 && echo "ping4 ok" || { echo "ping4 failed"; cat /tmp/p4; }
        nslookup host.emunet.test fec0::3 >/tmp/ns6 2>&1; echo "nslookup6 rc=$?"; cat /tmp/ns6
        """;

    private static LoopbackDnsServer Resolver()
    {
        var dns = new LoopbackDnsServer();
        dns.Add("host.emunet.test", IPAddress.Parse("10.0.2.2"));
        return dns;
    }

    private static void AssertIPv6(GuestResult result)
    {
        var o = result.Output;
        Assert.True(result.ExitCode == 0, result.ToString());
        // SLAAC (RFC 4862): an EUI-64 address of the announced /64.
        var address = new Regex(@"addr6\s+inet6 (fec0::[0-9a-f:]+)/64").Match(o);
        Assert.True(address.Success, result.ToString());
        Assert.Matches(new Regex(@"route6 default via fe80::2 dev eth0"), o);
        Assert.Contains("mtu6 65520", o);
        Assert.Contains("ping6 alias ok", o);
        Assert.Contains("ping6 dns ok", o);
        Assert.Contains("ping4 ok", o);
        // Resolved through the relay on fec0::3 (upstream on IPv4 loopback).
        Assert.Contains("nslookup6 rc=0", o);
        Assert.Matches(new Regex(@"Name:\s+host\.emunet\.test\s+Address(:| 1:)?\s+10\.0\.2\.2"), o);
    }

    [Fact]
    public async Task Guest_configures_itself_by_slaac_and_pings_the_host_alias_over_the_stream_link()
    {
        using var dns = Resolver();
        using var engine = new TestEngine(TestEngine.WithDns(dns.Port));
        var result = await QemuGuest.RunAsync(new GuestOptions
        {
            NetworkArgs = GuestNetwork.StreamUnix(engine.SocketPath),
            Script = Script,
            Timeout = TimeSpan.FromMinutes(4),
        });
        AssertIPv6(result);
    }

    [Fact]
    public async Task Guest_configures_itself_by_slaac_and_pings_the_host_alias_over_vhost_user()
    {
        using var dns = Resolver();
        using var engine = new TestEngine(TestEngine.WithDns(dns.Port), vhostUser: true);
        var result = await QemuGuest.RunAsync(new GuestOptions
        {
            NetworkArgs = GuestNetwork.VhostUser(engine.SocketPath),
            Script = Script,
            Timeout = TimeSpan.FromMinutes(4),
        });
        AssertIPv6(result);
    }

    private static async Task TransferThroughTheHostAlias(bool vhostUser)
    {
        const int size = 16 << 20;
        var body = RandomNumberGenerator.GetBytes(size);
        string sha = Convert.ToHexStringLower(SHA256.HashData(body));
        using var http = new LoopbackHttpServer(address: IPAddress.IPv6Loopback);
        http.Serve("/blob", body);
        using var sink = new LoopbackHashSink(size, IPAddress.IPv6Loopback);
        using var http4 = new LoopbackHttpServer();
        http4.Serve("/small", "v4 still here"u8.ToArray());
        using var engine = new TestEngine(new NetworkConfig(), vhostUser: vhostUser);

        var result = await QemuGuest.RunAsync(new GuestOptions
        {
            NetworkArgs = vhostUser ? GuestNetwork.VhostUser(engine.SocketPath, 768) : GuestNetwork.StreamUnix(engine.SocketPath),
            MemoryMb = 768,
            Timeout = TimeSpan.FromMinutes(5),
            Script = GuestScripts.WaitForSlaac + $$"""
                set -e
                got=$(wget -q -O - 'http://[fec0::2]:{{http.Port}}/blob' | sha256sum | cut -d' ' -f1)
                echo "download6 sha=$got"
                dd if=/dev/urandom of=/tmp/up bs=1M count=16 2>/dev/null
                echo "upload6 local=$(sha256sum /tmp/up | cut -d' ' -f1)"
                echo "upload6 remote=$(socat -t 30 - TCP6:[fec0::2]:{{sink.Port}} < /tmp/up)"
                echo "v4 $(wget -q -O - http://10.0.2.2:{{http4.Port}}/small)"
                """,
        });

        Assert.True(result.ExitCode == 0, result.ToString());
        Assert.Contains($"download6 sha={sha}", result.Output);
        var local = Regex.Match(result.Output, "upload6 local=([0-9a-f]{64})").Groups[1].Value;
        Assert.Equal(local, await sink.Result.WaitAsync(TimeSpan.FromSeconds(10)));
        Assert.Contains($"upload6 remote={local}", result.Output);
        Assert.Contains("v4 v4 still here", result.Output);
    }

    [Fact]
    public Task Guest_downloads_and_uploads_16_MiB_over_tcp6_through_fec0_2_on_the_stream_link() => TransferThroughTheHostAlias(vhostUser: false);

    [Fact]
    public Task Guest_downloads_and_uploads_16_MiB_over_tcp6_through_fec0_2_over_vhost_user() => TransferThroughTheHostAlias(vhostUser: true);

    [Fact]
    public async Task A_forward_from_ipv6_loopback_reaches_the_guest_app_on_its_ipv6_address_beside_an_ipv4_forward()
    {
        using var engine = new TestEngine(new NetworkConfig());
        using var control = new GuestControl();
        using var guest = QemuGuest.Start(new GuestOptions
        {
            NetworkArgs = GuestNetwork.StreamUnix(engine.SocketPath),
            Timeout = TimeSpan.FromMinutes(4),
            Script = GuestScripts.WaitForSlaac + $"""
                socat TCP6-LISTEN:10977,reuseaddr,fork,ipv6only=1 SYSTEM:'read l; echo "guest6:$l"' &
                socat TCP4-LISTEN:10977,reuseaddr,fork SYSTEM:'read l; echo "guest4:$l"' &
                while ! netstat -ltn | grep -q ':::10977 '; do usleep 50000; done
                while ! netstat -ltn | grep -q '0.0.0.0:10977 '; do usleep 50000; done
                echo ready
                {control.WaitLine}
                echo "got $cmd"
                """,
        });
        await guest.WaitForLineAsync(l => l == "ready", TimeSpan.FromMinutes(2));

        var spec6 = ForwardSpec.Parse("tcp:[::1]:0:10977");
        Assert.Equal(IPAddress.IPv6Loopback, spec6.HostAddress);
        var f6 = await engine.Engine.AddForwardAsync(spec6);
        var f4 = await engine.Engine.AddForwardAsync(ForwardSpec.Create(ForwardProtocol.Tcp, 0, 10977));

        Assert.Equal("guest6:hello6", await RoundTrip(IPAddress.IPv6Loopback, f6.BoundPort, "hello6"));
        Assert.Equal("guest4:hello4", await RoundTrip(IPAddress.Loopback, f4.BoundPort, "hello4"));
        await control.SendAsync("done", TimeSpan.FromMinutes(1));
        var result = await guest.WaitForExitAsync();
        Assert.True(result.ExitCode == 0, result.ToString());
    }

    /// <summary>
    /// UDP over IPv6 on one link: the guest's datagram to fec0::2 reaches a UDP echo server on the host's ::1 and the
    /// answer comes back (data checked both ways: the server upper-cases it), while a deny rule for an IPv6 range
    /// (fec0::/64 at a second server's port) keeps a datagram from that server; then a UDP forward from [::1] reaches a
    /// guest UDP app on its IPv6 address, and its answer comes back to the host client.
    /// </summary>
    private static async Task UdpOverIPv6(bool vhostUser)
    {
        using var echo = new LoopbackUdpEcho(IPAddress.IPv6Loopback);
        using var denied = new LoopbackUdpEcho(IPAddress.IPv6Loopback);
        var policy = new NetworkConfig { OutboundRules = [OutboundRule.Parse($"[fec0::]/64:{denied.Port}", allow: false)] };
        using var engine = new TestEngine(policy, vhostUser: vhostUser);
        using var control = new GuestControl();
        using var guest = QemuGuest.Start(new GuestOptions
        {
            NetworkArgs = vhostUser ? GuestNetwork.VhostUser(engine.SocketPath) : GuestNetwork.StreamUnix(engine.SocketPath),
            Timeout = TimeSpan.FromMinutes(4),
            Script = GuestScripts.WaitForSlaac + $"""
                echo hello6 | timeout 10 socat -t 3 - UDP6:[fec0::2]:{echo.Port} > /tmp/u6; echo "udp6 [$(cat /tmp/u6)]"
                echo denied6 | timeout 10 socat -t 3 - UDP6:[fec0::2]:{denied.Port} > /tmp/d6 2>&1; echo "udp6-denied [$(cat /tmp/d6)]"
                socat UDP6-RECVFROM:5353,fork SYSTEM:'read l; echo "guest6:$l"' &
                while ! netstat -lun | grep -q ':::5353 '; do usleep 50000; done
                echo ready
                {control.WaitLine}
                echo "got $cmd"
                """,
        });
        await guest.WaitForLineAsync(l => l == "ready", TimeSpan.FromMinutes(3));

        var forward = await engine.Engine.AddForwardAsync(ForwardSpec.Parse("udp:[::1]:0:5353"));
        string answer;
        try { answer = await UdpRoundTrip(IPAddress.IPv6Loopback, forward.BoundPort, "hello-forward"); }
        catch (TimeoutException e)
        {
            var drops = (await engine.Engine.GetStatisticsAsync()).DropsByReason;
            throw new TimeoutException($"{e.Message}\ndrops: {string.Join(", ", drops)}\nguest:\n{string.Join("\n", guest.Lines)}", e);
        }
        Assert.Equal("guest6:hello-forward", answer);
        var flows = await engine.Engine.ListConnectionsAsync();
        var flow = Assert.Single(flows, f => f.Direction == FlowDirection.Forwarded);
        Assert.Equal(FlowProtocol.Udp, flow.Protocol);
        Assert.Equal(IPAddress.Parse("fec0::2"), flow.GuestPeerEndPoint.Address);
        Assert.Equal(5353, flow.GuestEndPoint.Port);
        Assert.StartsWith("fec0::", flow.GuestEndPoint.Address.ToString());

        await control.SendAsync("done", TimeSpan.FromMinutes(1));
        var result = await guest.WaitForExitAsync();
        Assert.True(result.ExitCode == 0, result.ToString());
        Assert.Contains("udp6 [echo:HELLO6]", result.Output);
        Assert.Equal(1, echo.Received);
        Assert.DoesNotContain("echo:DENIED6", result.Output);
        Assert.Equal(0, denied.Received);
        var stats = await engine.Engine.GetStatisticsAsync();
        Assert.True(stats.DropsByReason.GetValueOrDefault("PolicyDenied") >= 1, string.Join(", ", stats.DropsByReason));
    }

    [Fact]
    public Task Guest_udp_reaches_a_host_ipv6_loopback_server_and_a_udp_forward_from_ipv6_reaches_the_guest_on_the_stream_link() =>
        UdpOverIPv6(vhostUser: false);

    [Fact]
    public Task Guest_udp_reaches_a_host_ipv6_loopback_server_and_a_udp_forward_from_ipv6_reaches_the_guest_over_vhost_user() =>
        UdpOverIPv6(vhostUser: true);

    /// <summary>
    /// Sends <paramref name="line"/> to a UDP forward and returns the first answer line. The first datagram may beat
    /// the guest app or its address to Emunet (UDP may lose it), so it is sent again until an answer comes or two
    /// minutes have passed (an emulated guest on a loaded machine answers slowly).
    /// </summary>
    private static async Task<string> UdpRoundTrip(IPAddress address, int port, string line)
    {
        using var client = new UdpClient(address.AddressFamily);
        var to = new IPEndPoint(address, port);
        var payload = System.Text.Encoding.ASCII.GetBytes(line + "\n");
        var until = DateTime.UtcNow + TimeSpan.FromMinutes(2);
        await client.SendAsync(payload, to);   // binds the client, so it can receive
        var receive = client.ReceiveAsync();
        while (true)
        {
            // Wait for the answer up to a resend interval; the same receive stays pending across resends.
            if (await Task.WhenAny(receive, Task.Delay(TimeSpan.FromSeconds(3))) == receive)
                return System.Text.Encoding.ASCII.GetString((await receive).Buffer).Trim();
            if (DateTime.UtcNow > until) throw new TimeoutException($"No answer from the UDP forward on [{address}]:{port}.");
            await client.SendAsync(payload, to);
        }
    }

    private static async Task<string> RoundTrip(IPAddress address, int port, string line)
    {
        using var client = new TcpClient(address.AddressFamily);
        await client.ConnectAsync(address, port).WaitAsync(TimeSpan.FromMinutes(1));
        var stream = client.GetStream();
        await stream.WriteAsync(System.Text.Encoding.ASCII.GetBytes(line + "\n"));
        using var reader = new StreamReader(stream);
        return (await reader.ReadLineAsync().WaitAsync(TimeSpan.FromMinutes(1))) ?? "";
    }
}
