using System.Security.Cryptography;
using Emunet.GuestRig;

namespace Emunet.Integration.Tests;

/// <summary>
/// The vhost-user virtio-net device against a real Linux guest: QEMU maps the guest's RAM into the engine (a shared
/// memfd) and frames move through the virtqueues; every check runs inside the guest with its own kernel and tools.
/// </summary>
public sealed class VhostUserTests
{
    [Fact]
    public async Task Guest_on_vhost_user_gets_lease_pings_and_moves_16_MiB_both_ways_with_matching_sha256()
    {
        const int size = 16 << 20;
        var body = RandomNumberGenerator.GetBytes(size);
        string sha = Convert.ToHexStringLower(SHA256.HashData(body));
        using var http = new LoopbackHttpServer();
        http.Serve("/blob", body);
        using var sink = new LoopbackHashSink(size);
        using var engine = new TestEngine(vhostUser: true);

        var result = await QemuGuest.RunAsync(new GuestOptions
        {
            NetworkArgs = GuestNetwork.VhostUser(engine.SocketPath, 512),
            MemoryMb = 512,
            Timeout = TimeSpan.FromMinutes(3),
            Script = $$"""
                . /run/lease.env
                echo "lease ip=$ip router=$router dns=$dns"
                ping -c 3 -W 2 10.0.2.2 >/tmp/ping 2>&1 && echo "ping ok" || { echo "ping failed"; cat /tmp/ping; }
                set -e
                got=$(wget -q -O - http://10.0.2.2:{{http.Port}}/blob | sha256sum | cut -d' ' -f1)
                echo "download sha=$got"
                dd if=/dev/urandom of=/tmp/up bs=1M count=16 2>/dev/null
                echo "upload local=$(sha256sum /tmp/up | cut -d' ' -f1)"
                echo "upload remote=$(nc 10.0.2.2 {{sink.Port}} < /tmp/up)"
                """,
        });

        var o = result.Output;
        Assert.True(result.ExitCode == 0, result.ToString());
        Assert.Contains("lease ip=10.0.2.15 router=10.0.2.2 dns=10.0.2.3", o);
        Assert.Contains("ping ok", o);
        Assert.Contains($"download sha={sha}", o);
        string local = o.Split('\n').First(l => l.StartsWith("upload local=", StringComparison.Ordinal))["upload local=".Length..].Trim();
        Assert.Equal(local, await sink.Result.WaitAsync(TimeSpan.FromSeconds(10)));
        var stats = await engine.Engine.GetStatisticsAsync();
        Assert.False(stats.DropsByReason.ContainsKey("VirtqueueMalformed"), string.Join(", ", stats.DropsByReason));
        Assert.False(stats.DropsByReason.ContainsKey("DeviceProtocolError"), string.Join(", ", stats.DropsByReason));
    }

    [Fact]
    public async Task Engine_serves_a_restarted_qemu_on_the_same_vhost_user_socket()
    {
        using var http = new LoopbackHttpServer();
        http.Serve("/", "ok-from-host\n"u8.ToArray());
        using var engine = new TestEngine(vhostUser: true);
        string script = $"wget -q -O - http://10.0.2.2:{http.Port}/";

        for (int boot = 0; boot < 2; boot++)
        {
            var result = await QemuGuest.RunAsync(new GuestOptions { NetworkArgs = GuestNetwork.VhostUser(engine.SocketPath), Script = script });
            Assert.True(result.ExitCode == 0, $"boot {boot}: {result}");
            Assert.Contains("ok-from-host", result.Output);
            // QEMU has exited: the device must notice, reset and listen again for the next boot.
            var until = DateTime.UtcNow.AddSeconds(10);
            while (engine.Engine.Info.GuestConnected && DateTime.UtcNow < until) await Task.Delay(20);
            Assert.False(engine.Engine.Info.GuestConnected, $"boot {boot}: the engine still sees the exited QEMU attached");
        }
    }
}
