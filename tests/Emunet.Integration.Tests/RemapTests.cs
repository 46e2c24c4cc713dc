using System.Net;
using System.Net.Sockets;
using System.Text.RegularExpressions;
using Emunet.Engine.Stack;
using Emunet.GuestRig;

namespace Emunet.Integration.Tests;

/// <summary>
/// Guest-to-host remaps on a real guest (adb reverse, QEMU guestfwd): the guest's 10.0.2.2:P and a free address of
/// its network reach the host ports chosen, for TCP and UDP, even under --restrict, where nothing else is reachable.
/// </summary>
public sealed class RemapTests
{
    /// <summary>A TCP listener on 127.0.0.1 that answers every client with its name.</summary>
    private sealed class NamedListener : IDisposable
    {
        private readonly TcpListener _listener = new(IPAddress.Loopback, 0);

        public NamedListener(string name)
        {
            _listener.Start();
            byte[] line = System.Text.Encoding.ASCII.GetBytes(name + "\n");
            _ = Task.Run(async () =>
            {
                while (true)
                {
                    TcpClient c;
                    try { c = await _listener.AcceptTcpClientAsync(); }
                    catch (Exception) { return; }
                    using (c) { try { await c.GetStream().WriteAsync(line); } catch (IOException) { } }
                }
            });
        }

        public int Port => ((IPEndPoint)_listener.LocalEndpoint).Port;
        public void Dispose() => _listener.Stop();
    }

    [Fact]
    public async Task Remapped_ports_reach_the_chosen_host_ports_even_when_restricted()
    {
        using var app = new NamedListener("app");
        using var other = new NamedListener("other");
        using var udp = new LoopbackUdpEcho();
        Assert.True(GuestRemap.TryParse($"tcp:8000:{app.Port}", new NetworkConfig().Gateway, out var byPort, out _));
        Assert.True(GuestRemap.TryParse($"guestfwd=tcp:10.0.2.100:80-127.0.0.1:{other.Port}", new NetworkConfig().Gateway, out var guestFwd, out _));
        var network = new NetworkConfig { Restrict = true, Remaps = [byPort, guestFwd] };

        using var engine = new TestEngine(network);
        // One more at run time, as 'emunet reverse add udp:5353 udp:PORT' adds it.
        await engine.Engine.AddRemapAsync("udp:5353", $"udp:{udp.Port}");
        Assert.Equal(3, (await engine.Engine.ListRemapsAsync()).Count);

        string script = $$"""
            r=$(timeout 5 nc 10.0.2.2 8000 </dev/null 2>&1); echo "remap rc=$? $r"
            r=$(timeout 5 nc 10.0.2.100 80 </dev/null 2>&1); echo "guestfwd rc=$? $r"
            echo x | timeout 5 socat -t 2 - UDP:10.0.2.2:5353 > /tmp/u; echo "udp-remap [$(cat /tmp/u)]"
            r=$(timeout 5 nc 10.0.2.2 {{app.Port}} </dev/null 2>&1); echo "direct rc=$? $r"
            """;
        var result = await QemuGuest.RunAsync(new GuestOptions { NetworkArgs = GuestNetwork.StreamUnix(engine.SocketPath), Script = script });
        var o = result.Output;
        Assert.True(result.ExitCode == 0, result.ToString());
        Assert.Contains("remap rc=0 app", o);
        Assert.Contains("guestfwd rc=0 other", o);
        Assert.Contains("udp-remap [echo:X]", o);
        // The host port itself is not reachable: --restrict still holds for everything not remapped.
        Assert.Matches(new Regex(@"direct rc=1 .*refused"), o);

        // Removed, the remap is gone for new connections.
        Assert.NotNull(await engine.Engine.RemoveRemapAsync(RemapProtocol.Tcp, null, 8000));
        Assert.Null(await engine.Engine.RemoveRemapAsync(RemapProtocol.Tcp, null, 8000));
        Assert.Equal(2, (await engine.Engine.ListRemapsAsync()).Count);
    }
}
