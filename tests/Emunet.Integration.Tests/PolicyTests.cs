using System.Net;
using System.Net.Sockets;
using System.Text.RegularExpressions;
using Emunet.Engine.Stack;
using Emunet.GuestRig;

namespace Emunet.Integration.Tests;

/// <summary>
/// What a real guest can reach: the host through 10.0.2.2, and nothing outside with --restrict while the DNS relay
/// keeps working. (A Linux guest never puts 127.0.0.0/8 on the wire, RFC 1122 §3.2.1.3; frames that do are crafted
/// in OutboundPolicyTests.)
/// </summary>
public sealed class PolicyTests
{
    /// <summary>A TCP listener on 127.0.0.1 that answers every client with "hi" and counts them.</summary>
    private sealed class CountingListener : IDisposable
    {
        private readonly TcpListener _listener = new(IPAddress.Loopback, 0);
        private int _accepted;

        public CountingListener()
        {
            _listener.Start();
            _ = Task.Run(async () =>
            {
                while (true)
                {
                    TcpClient c;
                    try { c = await _listener.AcceptTcpClientAsync(); }
                    catch (Exception) { return; }
                    Interlocked.Increment(ref _accepted);
                    using (c) { try { await c.GetStream().WriteAsync("hi\n"u8.ToArray()); } catch (IOException) { } }
                }
            });
        }

        public int Port => ((IPEndPoint)_listener.LocalEndpoint).Port;
        public int Accepted => Volatile.Read(ref _accepted);
        public void Dispose() => _listener.Stop();
    }

    [Fact]
    public async Task The_guest_reaches_the_host_only_through_the_alias_and_not_at_all_when_restricted()
    {
        using var listener = new CountingListener();
        using var udp = new LoopbackUdpEcho();
        using var dns = new LoopbackDnsServer();
        dns.Add("host.emunet.test", IPAddress.Parse("10.0.2.2"));
        string probes = $$"""
            r=$(timeout 5 nc 10.0.2.2 {{listener.Port}} </dev/null 2>&1); echo "alias rc=$? $r"
            echo x | timeout 5 socat -t 2 - UDP:10.0.2.2:{{udp.Port}} > /tmp/u; echo "udp-alias [$(cat /tmp/u)]"
            nslookup host.emunet.test 10.0.2.3 >/tmp/ns 2>&1; echo "dns rc=$?"
            """;

        using (var engine = new TestEngine(TestEngine.WithDns(dns.Port)))
        {
            var result = await QemuGuest.RunAsync(new GuestOptions { NetworkArgs = GuestNetwork.StreamUnix(engine.SocketPath), Script = probes });
            var o = result.Output;
            Assert.True(result.ExitCode == 0, result.ToString());
            Assert.Contains("alias rc=0 hi", o);
            Assert.Contains("udp-alias [echo:X]", o);
            Assert.Contains("dns rc=0", o);
            Assert.Equal(1, listener.Accepted);
        }

        using (var engine = new TestEngine(TestEngine.WithDns(dns.Port) with { Restrict = true }))
        {
            var result = await QemuGuest.RunAsync(new GuestOptions { NetworkArgs = GuestNetwork.StreamUnix(engine.SocketPath), Script = probes });
            var o = result.Output;
            Assert.True(result.ExitCode == 0, result.ToString());
            Assert.Matches(new Regex(@"alias rc=1 .*refused"), o);
            Assert.Contains("udp-alias []", o);
            Assert.Contains("dns rc=0", o); // the relay still answers
            Assert.Equal(1, listener.Accepted);
            var stats = await engine.Engine.GetStatisticsAsync();
            Assert.True(stats.DropsByReason.GetValueOrDefault("PolicyDenied") >= 2, string.Join(", ", stats.DropsByReason) + "\n" + o);
        }
    }
}
