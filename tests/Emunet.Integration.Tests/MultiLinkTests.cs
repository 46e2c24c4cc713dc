using System.Diagnostics;
using System.Net;
using System.Net.Sockets;
using System.Text;
using Emunet.Engine;
using Emunet.Engine.Forwarding;
using Emunet.Engine.Stack.Nat;
using Emunet.Engine.Wire;
using Emunet.GuestRig;
using Microsoft.Extensions.Logging.Abstractions;

namespace Emunet.Integration.Tests;

/// <summary>
/// One engine serving both links of the Android Emulator (its stand-in: radio card eth0, Wi-Fi card eth1): each link's
/// guest takes its own lease (10.0.2.15, 10.0.2.16), reaches the host through 10.0.2.2 over its own link, and is
/// reached by a forward (one naming 10.0.2.16); the connection table says which link a flow uses. And
/// <c>emunet launch --android</c> end to end, the emulator's exit code passed through.
/// </summary>
public sealed class MultiLinkTests
{
    private static readonly TimeSpan Step = TimeSpan.FromSeconds(120);

    /// <summary>
    /// The guest's side: each card's lease, a fetch from the host over each card (bound to it: both cards are on one
    /// subnet), an app on port 80 of each address that names its card.
    /// </summary>
    private static string BothLinks(int httpPort) => $"""
        . /run/lease.env
        echo "radio ip=$ip"
        . /run/lease.eth1.env
        echo "wifi ip=$ip"
        printf 'GET / HTTP/1.0\r\n\r\n' | socat -t 10 - TCP:10.0.2.2:{httpPort},so-bindtodevice=eth0 | tail -n 1 | sed 's/^/radio got /'
        printf 'GET / HTTP/1.0\r\n\r\n' | socat -t 10 - TCP:10.0.2.2:{httpPort},so-bindtodevice=eth1 | tail -n 1 | sed 's/^/wifi got /'
        """;

    [Fact]
    public async Task Two_links_one_engine_each_guest_reaches_the_host_and_is_reached_by_its_forward()
    {
        using var http = new LoopbackHttpServer();
        http.Serve("/", "hello link\n"u8.ToArray());
        using var control = new GuestControl();
        int radio = LoopbackPorts.Free();
        int wifi = LoopbackPorts.Free();
        using var engine = new EmunetEngine(new EngineOptions
        {
            Name = "two-links",
            Links =
            [
                new LinkOptions(LinkKind.Stream, LinkMode.Connect, $"tcp:127.0.0.1:{radio}"),
                new LinkOptions(LinkKind.Stream, LinkMode.Connect, $"tcp:127.0.0.1:{wifi}"),
            ],
        }, NullLoggerFactory.Instance);
        engine.Start();
        Assert.Equal(["10.0.2.15", "10.0.2.16"], engine.Info.Links.Select(l => l.GuestAddress));

        using var guest = QemuGuest.StartAndroid(new GuestOptions
        {
            NetworkArgs = [],
            Script = $"""
                {BothLinks(http.Port)}
                socat TCP-LISTEN:80,bind=10.0.2.15,reuseaddr,fork,so-bindtodevice=eth0 SYSTEM:'echo radio-app; sleep 60' &
                socat TCP-LISTEN:80,bind=10.0.2.16,reuseaddr,fork,so-bindtodevice=eth1 SYSTEM:'echo wifi-app; sleep 60' &
                while [ "$(netstat -ltn | grep -c ':80 ')" -lt 2 ]; do usleep 50000; done
                echo ready
                {control.WaitLine}
                echo "got $cmd"
                """,
        }, "-avd", "test", "-no-window", "-net-socket", $"listen=127.0.0.1:{radio}", "-wifi-socket", $"listen=127.0.0.1:{wifi}");
        await guest.WaitForLineAsync(l => l == "ready", Step);

        var toRadio = await engine.AddForwardAsync(ForwardSpec.Create(ForwardProtocol.Tcp, 0, 80));
        var toWifi = await engine.AddForwardAsync(ForwardSpec.Parse("hostfwd=tcp:127.0.0.1:0-10.0.2.16:80"));
        Assert.Equal(new IPv4Address(10, 0, 2, 16), toWifi.Spec.GuestAddress);
        using (var radioClient = new TcpClient(AddressFamily.InterNetwork))
        using (var wifiClient = new TcpClient(AddressFamily.InterNetwork))
        {
            Assert.Equal("radio-app", await ReadLineAsync(radioClient, toRadio.BoundPort));
            Assert.Equal("wifi-app", await ReadLineAsync(wifiClient, toWifi.BoundPort));
            var flows = await engine.ListConnectionsAsync();
            var radioFlow = Assert.Single(flows, c => c.Direction == FlowDirection.Forwarded && c.Forward == toRadio.Spec.ToString());
            var wifiFlow = Assert.Single(flows, c => c.Direction == FlowDirection.Forwarded && c.Forward == toWifi.Spec.ToString());
            Assert.Equal((0, "10.0.2.15:80"), (radioFlow.Link, radioFlow.GuestEndPoint.ToString()));
            Assert.Equal((1, "10.0.2.16:80"), (wifiFlow.Link, wifiFlow.GuestEndPoint.ToString()));
        }
        // Each link knows its own guest (its card's MAC) while it runs.
        Assert.All(engine.Info.Links, l => Assert.True(l.GuestConnected && l.GuestMac is not null, $"link {l.Index}: {l}"));
        Assert.NotEqual(engine.Info.Links[0].GuestMac, engine.Info.Links[1].GuestMac);
        // A forward to an address no link owns is refused with the links' addresses named.
        var refused = await Assert.ThrowsAsync<ArgumentException>(() => engine.AddForwardAsync(ForwardSpec.Parse("tcp:127.0.0.1:0:10.0.2.17:80")));
        Assert.Contains("10.0.2.15, 10.0.2.16", refused.Message);

        await control.SendAsync("done", Step);
        var result = await guest.WaitForExitAsync();
        Assert.True(result.ExitCode == 0, result.ToString());
        Assert.DoesNotContain("DHCP failed", result.Output);
        Assert.Contains("radio ip=10.0.2.15", result.Output);
        Assert.Contains("wifi ip=10.0.2.16", result.Output);
        Assert.Contains("radio got hello link", result.Output);
        Assert.Contains("wifi got hello link", result.Output);
        Assert.Contains("got done", result.Output);
    }

    private static async Task<string> ReadLineAsync(TcpClient client, int port)
    {
        await client.ConnectAsync(IPAddress.Loopback, port).WaitAsync(Step);
        using var reader = new StreamReader(client.GetStream(), Encoding.ASCII, leaveOpen: true);
        return await reader.ReadLineAsync().WaitAsync(Step) ?? "";
    }

    [Fact]
    public async Task Emunet_launch_android_serves_both_links_of_the_emulator_and_returns_its_exit_code()
    {
        using var http = new LoopbackHttpServer();
        http.Serve("/", "hello link\n"u8.ToArray());
        var (guestDir, qemuArgs) = QemuGuest.PrepareCommandLine(new GuestOptions
        {
            NetworkArgs = [],
            // isa-debug-exit: a byte v written to port 0xf4 makes QEMU exit with (v << 1) | 1; 3 gives 7.
            Script = $"{BothLinks(http.Port)}\nprintf '\\003' | dd of=/dev/port bs=1 seek=244 count=1 2>/dev/null",
        });
        qemuArgs.AddRange(["-device", "isa-debug-exit,iobase=0xf4,iosize=0x04"]);
        var runtime = Directory.CreateTempSubdirectory("emunet-launch-android-").FullName;
        try
        {
            var psi = new ProcessStartInfo("dotnet") { RedirectStandardOutput = true, RedirectStandardError = true, RedirectStandardInput = true };
            psi.ArgumentList.Add(ToolProcessTests.ToolDll);
            foreach (var a in (string[])["launch", "--android", "--name", "android", "--", QemuGuest.AndroidEmulator, "-avd", "test", "-no-window", "-qemu", .. qemuArgs])
                psi.ArgumentList.Add(a);
            psi.Environment["EMUNET_RUNTIME_DIR"] = runtime;
            using var tool = Process.Start(psi)!;
            var stdout = tool.StandardOutput.ReadToEndAsync();
            var stderr = tool.StandardError.ReadToEndAsync();
            using (var timeout = new CancellationTokenSource(Step * 2))
            {
                try { await tool.WaitForExitAsync(timeout.Token); }
                catch (OperationCanceledException)
                {
                    tool.Kill(true);
                    Assert.Fail($"emunet launch --android did not finish\n{await stderr}");
                }
            }
            var output = await stdout;
            string log = await stderr;
            Assert.True(tool.ExitCode == 7, $"exit {tool.ExitCode}\n{output}\n{log}");
            Assert.Contains("radio ip=10.0.2.15", output);
            Assert.Contains("wifi ip=10.0.2.16", output);
            Assert.Contains("radio got hello link", output);
            Assert.Contains("wifi got hello link", output);
            Assert.Empty(Directory.GetFiles(runtime, "*.sock", SearchOption.AllDirectories)); // the engine stopped with it
        }
        finally
        {
            Directory.Delete(guestDir, true);
            Directory.Delete(runtime, true);
        }
    }
}
