using System.Diagnostics;
using Emunet.GuestRig;

namespace Emunet.Integration.Tests;

/// <summary>
/// The echo relay through the host's ping sockets, for both families, proven with a real guest: the engine runs in a
/// network namespace of the test's own, linked by a veth pair to a second one that holds the "remote" addresses
/// 192.0.2.2 and 2001:db8::2 (documentation ranges, reachable only there). The guest's pings to them can only be
/// answered by that namespace's kernel, through Emunet's ICMP and ICMPv6 ping sockets (allowed in the engine's
/// namespace by its own net.ipv4.ping_group_range, which governs both families). Needs root (ip netns).
/// </summary>
public sealed class PingRelayTests
{
    private static string Ip(params string[] args)
    {
        var psi = new ProcessStartInfo("ip") { RedirectStandardOutput = true, RedirectStandardError = true };
        foreach (var a in args) psi.ArgumentList.Add(a);
        using var p = Process.Start(psi)!;
        string output = p.StandardOutput.ReadToEnd() + p.StandardError.ReadToEnd();
        p.WaitForExit();
        Assert.True(p.ExitCode == 0, $"ip {string.Join(' ', args)}: {output} (this test creates network namespaces: it needs root and iproute2)");
        return output;
    }

    /// <summary>Two namespaces joined by a veth pair: the engine's (.1) and the remote one (.2).</summary>
    private sealed class NamespacePair : IDisposable
    {
        public string Engine { get; } = $"emunet-ping-{Environment.ProcessId}-e";
        public string Remote { get; } = $"emunet-ping-{Environment.ProcessId}-r";

        public NamespacePair()
        {
            Ip("netns", "add", Engine);
            Ip("netns", "add", Remote);
            Ip("link", "add", "ve", "netns", Engine, "type", "veth", "peer", "name", "vr", "netns", Remote);
            foreach (var (ns, dev, n) in new[] { (Engine, "ve", 1), (Remote, "vr", 2) })
            {
                Ip("-n", ns, "link", "set", "lo", "up");
                Ip("-n", ns, "addr", "add", $"192.0.2.{n}/24", "dev", dev);
                Ip("-n", ns, "addr", "add", $"2001:db8::{n}/64", "dev", dev, "nodad");
                Ip("-n", ns, "link", "set", dev, "up");
            }
        }

        public void Dispose()
        {
            try { Ip("netns", "del", Engine); } catch (Exception) { }
            try { Ip("netns", "del", Remote); } catch (Exception) { }
        }
    }

    private const string Script = GuestScripts.WaitForSlaac + """
        ping -c 3 -W 3 192.0.2.2 >/tmp/p4 2>&1 && echo "relay4 ok" || echo "relay4 failed"
        cat /tmp/p4
        ping -6 -c 3 -W 3 2001:db8::2 >/tmp/p6 2>&1 && echo "relay6 ok" || echo "relay6 failed"
        cat /tmp/p6
        """;

    [Theory]
    [InlineData(true)]
    [InlineData(false)]
    public async Task A_guest_pings_a_remote_address_of_either_family_through_the_hosts_ping_sockets(bool allowPingSockets)
    {
        using var namespaces = new NamespacePair();
        var dir = Directory.CreateTempSubdirectory("emunet-ping-").FullName;
        string socket = Path.Combine(dir, "g.sock");
        var psi = new ProcessStartInfo("ip") { RedirectStandardError = true, RedirectStandardOutput = true };
        foreach (var a in new[] { "netns", "exec", namespaces.Engine, "bash", "-c",
            (allowPingSockets ? "sysctl -qw net.ipv4.ping_group_range='0 2147483647' && " : "sysctl -qw net.ipv4.ping_group_range='1 0' && ")
            + $"exec dotnet \"{ToolProcessTests.ToolDll}\" run --socket \"{socket}\" --name ping --log-level Information" })
            psi.ArgumentList.Add(a);
        psi.Environment["EMUNET_RUNTIME_DIR"] = Path.Combine(dir, "run");
        using var engine = Process.Start(psi)!;
        var log = new System.Collections.Concurrent.ConcurrentQueue<string>();
        engine.ErrorDataReceived += (_, e) => { if (e.Data is not null) log.Enqueue(e.Data); };
        engine.OutputDataReceived += (_, e) => { if (e.Data is not null) log.Enqueue(e.Data); };
        engine.BeginErrorReadLine();
        engine.BeginOutputReadLine();
        try
        {
            var deadline = Stopwatch.StartNew();
            while (!File.Exists(socket))
            {
                Assert.False(engine.HasExited, "the engine exited: " + string.Join('\n', log));
                Assert.True(deadline.Elapsed < TimeSpan.FromSeconds(30), "no engine socket within 30 s: " + string.Join('\n', log));
                await Task.Delay(20);
            }
            var result = await QemuGuest.RunAsync(new GuestOptions
            {
                NetworkArgs = GuestNetwork.StreamUnix(socket),
                Script = Script,
                Timeout = TimeSpan.FromMinutes(4),
            });
            string o = result.Output, context = result + "\nengine:\n" + string.Join('\n', log);
            if (allowPingSockets)
            {
                // Answered by the remote namespace's kernel: no address of Emunet's, nor of the engine's namespace.
                Assert.True(o.Contains("relay4 ok") && o.Contains("64 bytes from 192.0.2.2"), context);
                Assert.True(o.Contains("relay6 ok") && o.Contains("64 bytes from 2001:db8::2"), context);
            }
            else
            {
                // Ping sockets refused: the guest hears so at once (administratively prohibited), for each family.
                Assert.True(o.Contains("relay4 failed") && o.Contains("relay6 failed"), context);
                Assert.DoesNotContain("64 bytes from", o);
                Assert.Contains(log, l => l.Contains("refuses ICMP ping sockets", StringComparison.Ordinal));
                Assert.Contains(log, l => l.Contains("refuses ICMPv6 ping sockets", StringComparison.Ordinal));
            }
        }
        finally
        {
            if (!engine.HasExited) engine.Kill();
            await engine.WaitForExitAsync();
            try { Directory.Delete(dir, true); } catch (IOException) { }
        }
    }
}
