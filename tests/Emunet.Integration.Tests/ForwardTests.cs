using System.Diagnostics;
using System.Globalization;
using System.Net;
using System.Net.Sockets;
using System.Text;
using Emunet.Engine.Forwarding;
using Emunet.Engine.Stack.Nat;
using Emunet.GuestRig;
using Xunit.Abstractions;

namespace Emunet.Integration.Tests;

/// <summary>The direct-to-emulator forwarder against a real guest: host client → Emunet → app in the guest.</summary>
public sealed class ForwardTests(ITestOutputHelper output)
{
    private static readonly TimeSpan Step = TimeSpan.FromSeconds(60);

    [Fact]
    public async Task Tcp_and_udp_forwards_carry_data_list_the_connection_and_refuse_when_the_guest_port_is_closed()
    {
        using var engine = new TestEngine();
        var pcap = Path.Combine(Path.GetTempPath(), $"emunet-fwd-{Environment.ProcessId}.pcap");
        await engine.Engine.StartCaptureAsync(pcap);
        try
        {
            await ForwardRoundTrips(engine);
            File.Delete(pcap);
        }
        catch (Exception e)
        {
            await engine.Engine.StopCaptureAsync();
            var stats = await engine.Engine.GetStatisticsAsync();
            throw new Exception($"{e.GetType().Name}: {e.Message}\ndrops: {string.Join(", ", stats.DropsByReason.Select(kv => $"{kv.Key}={kv.Value}"))}\ncapture kept at {pcap}", e);
        }
    }

    private static async Task ForwardRoundTrips(TestEngine engine)
    {
        using var control = new GuestControl();
        using var guest = QemuGuest.Start(new GuestOptions
        {
            NetworkArgs = GuestNetwork.StreamUnix(engine.SocketPath),
            Script = $"""
                socat TCP-LISTEN:10977,reuseaddr,fork EXEC:cat &
                socat UDP-RECVFROM:5353,fork SYSTEM:'read l; echo "guest:$l"' &
                while ! netstat -ltn | grep -q ':10977 '; do usleep 50000; done
                while ! netstat -lun | grep -q ':5353 '; do usleep 50000; done
                echo ready
                {control.WaitLine}
                echo "got $cmd"
                """,
        });
        await guest.WaitForLineAsync(l => l == "ready", Step);

        var echo = await engine.Engine.AddForwardAsync(ForwardSpec.Create(ForwardProtocol.Tcp, 0, 10977));
        var closed = await engine.Engine.AddForwardAsync(ForwardSpec.Create(ForwardProtocol.Tcp, 0, 10978));

        using (var client = new TcpClient(AddressFamily.InterNetwork))
        {
            await client.ConnectAsync(IPAddress.Loopback, echo.BoundPort);
            var s = client.GetStream();
            var payload = Encoding.ASCII.GetBytes(string.Concat(Enumerable.Repeat("emunet-forward-", 20000)));
            var send = s.WriteAsync(payload).AsTask();
            var back = new byte[payload.Length];
            await s.ReadExactlyAsync(back).AsTask().WaitAsync(Step);
            await send;
            Assert.Equal(payload, back);

            var conns = await engine.Engine.ListConnectionsAsync();
            var c = Assert.Single(conns, x => x.Direction == FlowDirection.Forwarded);
            Assert.Equal(FlowProtocol.Tcp, c.Protocol);
            Assert.Equal(new IPEndPoint(IPAddress.Parse("10.0.2.15"), 10977), c.GuestEndPoint);
            Assert.Equal(IPAddress.Parse("10.0.2.2"), c.GuestPeerEndPoint.Address);
            Assert.Equal(client.Client.LocalEndPoint, c.HostRemoteEndPoint);
            Assert.Equal(new IPEndPoint(IPAddress.Loopback, echo.BoundPort), c.HostLocalEndPoint);
            Assert.True(c.BytesFromGuest >= payload.Length && c.BytesToGuest >= payload.Length, $"{c.BytesFromGuest}/{c.BytesToGuest}");
            Assert.Equal(echo.Spec.ToString(), c.Forward);

            // Removing the forward stops the listener; the open connection lives on.
            Assert.NotNull(await engine.Engine.RemoveForwardAsync(ForwardProtocol.Tcp, IPAddress.Loopback, echo.BoundPort, force: false));
            var refused = await Assert.ThrowsAsync<SocketException>(() => new TcpClient().ConnectAsync(IPAddress.Loopback, echo.BoundPort));
            Assert.Equal(SocketError.ConnectionRefused, refused.SocketErrorCode);
            await s.WriteAsync("still-alive"u8.ToArray());
            var again = new byte[11];
            await s.ReadExactlyAsync(again).AsTask().WaitAsync(Step);
            Assert.Equal("still-alive", Encoding.ASCII.GetString(again));
        }

        // Nothing listens on guest port 10978: the host client is reset at once. The reset can beat the completion of
        // the client's own connect call on a busy machine, so it may surface there or at the first read.
        using (var client = new TcpClient(AddressFamily.InterNetwork))
        {
            var e = await Assert.ThrowsAnyAsync<Exception>(async () =>
            {
                await client.ConnectAsync(IPAddress.Loopback, closed.BoundPort);
                var buf = new byte[1];
                int n = await client.GetStream().ReadAsync(buf).AsTask().WaitAsync(Step);
                if (n == 0) throw new IOException("EOF instead of a reset");
            });
            var socketError = (e as SocketException ?? e.InnerException as SocketException)?.SocketErrorCode;
            Assert.True(socketError == SocketError.ConnectionReset, $"expected a reset, got {e}");
        }

        // A UDP forward: each datagram reaches the guest's app, and its answer comes back to the client.
        var udp = await engine.Engine.AddForwardAsync(ForwardSpec.Create(ForwardProtocol.Udp, 0, 5353));
        using (var u = new UdpClient(AddressFamily.InterNetwork))
        {
            u.Connect(IPAddress.Loopback, udp.BoundPort);
            await u.SendAsync("hello\n"u8.ToArray());
            var answer = await u.ReceiveAsync().WaitAsync(Step);
            Assert.Equal("guest:hello", Encoding.ASCII.GetString(answer.Buffer).Trim());
        }
        Assert.Contains(await engine.Engine.ListConnectionsAsync(), c => c.Protocol == FlowProtocol.Udp && c.Direction == FlowDirection.Forwarded);

        await control.SendAsync("done", Step);
        var result = await guest.WaitForExitAsync();
        Assert.True(result.ExitCode == 0, result.ToString());
    }

    [Fact]
    public async Task When_the_guest_app_dies_the_host_client_sees_it_within_100_ms_of_the_guest_reset()
    {
        using var engine = new TestEngine();
        var pcap = Path.Combine(Path.GetTempPath(), $"emunet-kill-{Environment.ProcessId}.pcap");
        await engine.Engine.StartCaptureAsync(pcap);
        using var control = new GuestControl();
        using var guest = QemuGuest.Start(new GuestOptions
        {
            NetworkArgs = GuestNetwork.StreamUnix(engine.SocketPath),
            Script = $"""
                # The app holds its socket open (stdin a pipe that stays open) until it is killed.
                sleep 600 | nc -l -p 10977 >/dev/null &
                echo $! > /tmp/app
                while ! netstat -ltn | grep -q ':10977 '; do usleep 50000; done
                echo ready
                {control.WaitLine}
                kill -9 $(cat /tmp/app)
                echo killed
                {control.WaitLine}
                """,
        });
        await guest.WaitForLineAsync(l => l == "ready", Step);
        var fwd = await engine.Engine.AddForwardAsync(ForwardSpec.Create(ForwardProtocol.Tcp, 0, 10977));
        using var client = new TcpClient(AddressFamily.InterNetwork);
        await client.ConnectAsync(IPAddress.Loopback, fwd.BoundPort);
        var s = client.GetStream();
        await s.WriteAsync("hello"u8.ToArray());
        // The connection is established end to end once it is listed as such.
        await WaitUntil(async () => (await engine.Engine.ListConnectionsAsync()).Any(c => c.Direction == FlowDirection.Forwarded && c.State == "ESTABLISHED"));

        DateTime observed = default;
        var read = Task.Run(() =>
        {
            try { return s.Read(new byte[16]) == 0 ? "eof" : "data"; }
            catch (IOException) { return "reset"; }
            finally { observed = DateTime.UtcNow; }
        });
        await control.SendAsync("kill", Step);
        var how = await read.WaitAsync(Step);
        Assert.True(how is "eof" or "reset", how);
        await engine.Engine.StopCaptureAsync();

        // The guest's FIN or RST as the engine saw it (host clock), read back by tshark.
        var fields = RunTshark(pcap, "tcp.srcport==10977 && (tcp.flags.fin==1 || tcp.flags.reset==1)");
        File.Delete(pcap);
        var first = fields.Split('\n', StringSplitOptions.RemoveEmptyEntries).First();
        var guestReset = DateTime.UnixEpoch.AddSeconds(double.Parse(first, CultureInfo.InvariantCulture));
        var delay = observed - guestReset;
        output.WriteLine($"the host client saw the guest's {how} {delay.TotalMilliseconds:0.00} ms after the guest sent it");
        Assert.True(delay < TimeSpan.FromMilliseconds(100) && delay > TimeSpan.FromMilliseconds(-5), $"host client saw the guest's reset {delay.TotalMilliseconds:0.0} ms after it left the guest");

        await control.SendAsync("done", Step);
        await guest.WaitForExitAsync();
    }

    private static async Task WaitUntil(Func<Task<bool>> condition)
    {
        var until = DateTime.UtcNow + Step;
        while (!await condition())
        {
            if (DateTime.UtcNow > until) throw new TimeoutException("condition not met");
            await Task.Delay(20);
        }
    }

    internal static string RunTshark(string pcap, string filter)
    {
        var psi = new ProcessStartInfo("tshark", ["-r", pcap, "-Y", filter, "-T", "fields", "-e", "frame.time_epoch"])
        {
            RedirectStandardOutput = true, RedirectStandardError = true,
        };
        using var p = Process.Start(psi)!;
        var output = p.StandardOutput.ReadToEnd();
        var err = p.StandardError.ReadToEnd();
        p.WaitForExit();
        Assert.True(p.ExitCode == 0, $"tshark failed: {err}");
        return output;
    }
}
