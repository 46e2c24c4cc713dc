using System.Net;
using System.Net.Sockets;
using System.Text.Json;
using Emunet.Engine.Control;

namespace Emunet.Tool.Tests;

/// <summary>Runs `emunet` commands in-process against real engines (no guest attached), writing to string writers.</summary>
[Collection(RuntimeDirCollection.Name)]
public sealed class ToolCommandTests : IDisposable
{
    private readonly RuntimeDirScope _scope = new();

    public void Dispose() => _scope.Dispose();

    internal static async Task<(int Code, string Out, string Err)> Cli(params string[] args)
    {
        var output = new StringWriter();
        var error = new StringWriter();
        int code = await EmunetCli.InvokeAsync(args, output, error, CancellationToken.None);
        return (code, output.ToString(), error.ToString());
    }

    /// <summary>`emunet run` on a background task until disposed (the token stands in for SIGINT).</summary>
    internal sealed class RunningTool : IAsyncDisposable
    {
        private readonly CancellationTokenSource _stop = new();
        public readonly StringWriter Error = new();
        public Task<int> Exit { get; }
        public string Name { get; }

        public RunningTool(string name, params string[] extra)
        {
            Name = name;
            string[] args = ["run", "--name", name, "--log-level", "Warning", .. extra];
            Exit = Task.Run(() => EmunetCli.InvokeAsync(args, TextWriter.Null, Error, _stop.Token));
            Wait.Until(() => Exit.IsCompleted || RuntimeDirectory.IsLive(RuntimeDirectory.SocketPathFor(name)), $"instance '{name}' to answer");
            Assert.False(Exit.IsCompleted, $"run exited early: {Error}");
        }

        public async Task<int> StopAsync()
        {
            _stop.Cancel();
            return await Exit.WaitAsync(TimeSpan.FromSeconds(15));
        }

        public async ValueTask DisposeAsync()
        {
            if (!Exit.IsCompleted) await StopAsync();
            _stop.Dispose();
        }
    }

    private string DeviceSocket(string name) => _scope.Scratch(name + ".dev");

    private static int FreePort()
    {
        var l = new TcpListener(IPAddress.Loopback, 0);
        l.Start();
        int port = ((IPEndPoint)l.LocalEndpoint).Port;
        l.Stop();
        return port;
    }

    private static bool PortFree(int port)
    {
        var l = new TcpListener(IPAddress.Loopback, port);
        try { l.Start(); return true; }
        catch (SocketException) { return false; }
        finally { l.Stop(); }
    }

    [Fact]
    public async Task Version_prints_the_package_version()
    {
        var (code, output, _) = await Cli("--version");
        Assert.Equal(0, code);
        Assert.Equal("0.1.0", output.Trim());
    }

    [Fact]
    public async Task Help_lists_the_commands_and_the_exit_codes()
    {
        var (code, output, _) = await Cli("--help");
        Assert.Equal(0, code);
        Assert.Contains("emunet [command] [options]", output);
        foreach (string command in new[] { "run", "launch", "forward", "reverse", "connections", "instances", "stats", "capture", "stop", "completion" })
            Assert.Contains($"  {command}", output);
        Assert.Contains("Exit codes:", output);
        foreach (var value in Enum.GetValues<ExitCode>())
            Assert.Contains($"{(int)value}  {value}", output);
    }

    [Fact]
    public async Task Run_help_tells_how_to_attach_qemu_to_either_device()
    {
        var (code, output, _) = await Cli("run", "--help");
        Assert.Equal(0, code);
        Assert.Contains("--socket <PATH|tcp:127.0.0.1:PORT>", output);
        Assert.Contains("-netdev stream,id=n0,server=off,addr.type=unix,addr.path=PATH", output);
        Assert.Contains("--vhost-user <PATH>", output);
        Assert.Contains("memory-backend-memfd,id=mem,size=<RAM>,share=on", output);
        Assert.Contains("-netdev vhost-user,id=n0,chardev=c0", output);
    }

    [Fact]
    public async Task Subcommand_help_has_no_exit_code_table()
    {
        var (code, output, _) = await Cli("forward", "add", "--help");
        Assert.Equal(0, code);
        Assert.Contains("--instance", output);
        Assert.DoesNotContain("Exit codes:", output);
    }

    [Theory]
    [InlineData("frobnicate")]
    [InlineData("forward", "add")]
    [InlineData("connections", "--protocol", "sctp")]
    [InlineData("run", "--mtu", "many")]
    public async Task Parse_errors_exit_with_UsageError(params string[] args)
    {
        var (code, _, err) = await Cli(args);
        Assert.Equal((int)ExitCode.UsageError, code);
        Assert.StartsWith("emunet: ", err);
    }

    [Theory]
    [InlineData("run")]
    [InlineData("run", "--guest-address", "10.0.2.16", "--socket", "/tmp/a.sock")]
    [InlineData("run", "--socket", "/tmp/a.sock", "--guest-address", "10.0.2")]
    [InlineData("run", "--socket", "/tmp/a.sock", "--guest-address", "10.0.2.16", "--guest-address", "10.0.2.17")]
    [InlineData("run", "--socket", "/tmp/a.sock", "--forward", "sctp:1")]
    [InlineData("run", "--socket", "/tmp/a.sock", "--mtu", "100")]
    [InlineData("run", "--socket", "/tmp/a.sock", "--dns-upstream", "not-an-address")]
    [InlineData("run", "--socket", "/tmp/a.sock", "--name", "../x")]
    [InlineData("run", "--socket", "/tmp/a.sock", "--deny", "10.0.0")]
    [InlineData("run", "--socket", "/tmp/a.sock", "--allow", "10.0.0.0/40")]
    [InlineData("run", "--socket", "/tmp/a.sock", "--allow", "10.0.0.1:70000")]
    [InlineData("run", "--socket", "/tmp/a.sock", "--deny", "[2001:db8::/32")]
    [InlineData("run", "--socket", "/tmp/a.sock", "--deny", "2001:db8::/129")]
    [InlineData("run", "--socket", "/tmp/a.sock", "--buffer-budget", "0")]
    [InlineData("run", "--connect", "ftp:127.0.0.1:5000")]
    [InlineData("launch")]
    public async Task Invalid_run_options_exit_with_UsageError(params string[] args)
    {
        var (code, _, err) = await Cli(args);
        Assert.Equal((int)ExitCode.UsageError, code);
        Assert.StartsWith("emunet: ", err);
    }

    [Fact]
    public async Task Connect_dials_an_emulator_that_listens_and_names_its_arguments()
    {
        using var emulator = new System.Net.Sockets.TcpListener(System.Net.IPAddress.Loopback, 0);
        emulator.Start();
        int port = ((System.Net.IPEndPoint)emulator.LocalEndpoint).Port;
        await using var run = new RunningTool("dial", "--connect", $"tcp:127.0.0.1:{port}");
        using var link = await emulator.AcceptSocketAsync().WaitAsync(TimeSpan.FromSeconds(10));
        var instances = await Cli("instances", "--json");
        var info = JsonDocument.Parse(instances.Out).RootElement.EnumerateArray().Single();
        Assert.Equal($"stream:connect:tcp:127.0.0.1:{port}", info.GetProperty("device").GetString());
        Assert.Equal(["-netdev", $"socket,id=n0,listen=127.0.0.1:{port}", "-device", "virtio-net-pci,netdev=n0"],
            Emunet.Engine.Control.EmulatorArguments.For(info.GetProperty("device").GetString()!));
    }

    [Theory]
    [InlineData("stream:tcp:127.0.0.1:5600", "-netdev socket,id=n0,connect=127.0.0.1:5600 -device virtio-net-pci,netdev=n0", "-net-socket connect=127.0.0.1:5600")]
    [InlineData("stream:connect:tcp:127.0.0.1:5600", "-netdev socket,id=n0,listen=127.0.0.1:5600 -device virtio-net-pci,netdev=n0", "-net-socket listen=127.0.0.1:5600")]
    [InlineData("stream:connect:unix:/run/e.sock", "-netdev stream,id=n0,server=on,addr.type=unix,addr.path=/run/e.sock -device virtio-net-pci,netdev=n0", null)]
    [InlineData("stream:unix:/run/e.sock", "-netdev stream,id=n0,server=off,addr.type=unix,addr.path=/run/e.sock -device virtio-net-pci,netdev=n0", null)]
    public void A_tcp_link_is_attached_with_netdev_socket_and_has_an_android_hint(string device, string qemu, string? android)
    {
        // -netdev socket exists in QEMU 7.2 and in the Android Emulator's 2.12 fork, which lacks -netdev stream.
        Assert.Equal(qemu, string.Join(' ', Emunet.Engine.Control.EmulatorArguments.For(device)));
        Assert.Equal(android, Emunet.Engine.Control.EmulatorArguments.AndroidFor(device));
    }

    [Theory]
    [InlineData("Two guest links have the address 10.0.2.15", "--socket", "A", "--socket", "B", "--guest-address", "10.0.2.15")]
    [InlineData("is Emunet's own", "--socket", "A", "--guest-address", "10.0.2.2")]
    [InlineData("is not a host of 10.0.2.0/24", "--socket", "A", "--guest-address", "192.168.1.5")]
    public async Task Guest_addresses_that_clash_or_leave_the_subnet_are_refused_at_start(string why, params string[] links)
    {
        string[] args = ["run", "--name", "clash", .. links.Select(a => a.Length == 1 ? DeviceSocket("clash-" + a) : a)];
        var (code, _, err) = await Cli(args);
        Assert.Equal((int)ExitCode.StartFailed, code);
        Assert.Contains(why, err);
        Assert.False(RuntimeDirectory.IsLive(RuntimeDirectory.SocketPathFor("clash")));
    }

    [Fact]
    public async Task Several_links_are_listed_with_their_guests_and_arguments_and_forwards_name_a_guest()
    {
        using var emulator = new System.Net.Sockets.TcpListener(System.Net.IPAddress.Loopback, 0);
        emulator.Start();
        int port = ((System.Net.IPEndPoint)emulator.LocalEndpoint).Port;
        string sock = DeviceSocket("links");
        await using var run = new RunningTool("links", "--socket", sock, "--connect", $"tcp:127.0.0.1:{port}", "--guest-address", "10.0.2.20");

        var json = await Cli("info", "--json");
        Assert.Equal(0, json.Code);
        var links = JsonDocument.Parse(json.Out).RootElement.GetProperty("links").EnumerateArray().ToList();
        Assert.Equal([$"stream:unix:{sock}", $"stream:connect:tcp:127.0.0.1:{port}"], links.Select(l => l.GetProperty("device").GetString()));
        Assert.Equal(["10.0.2.15", "10.0.2.20"], links.Select(l => l.GetProperty("guestAddress").GetString()));

        var text = await Cli("info");
        Assert.Contains($"Link 0     stream:unix:{sock}, guest 10.0.2.15, no guest attached", text.Out);
        Assert.Contains($"Link 1     stream:connect:tcp:127.0.0.1:{port}, guest 10.0.2.20", text.Out);
        Assert.Contains($"-netdev stream,id=n0,server=off,addr.type=unix,addr.path={sock} -device virtio-net-pci,netdev=n0 -netdev socket,id=n1,listen=127.0.0.1:{port} -device virtio-net-pci,netdev=n1", text.Out);

        var added = await Cli("forward", "add", "tcp:0:80", "--guest-address", "10.0.2.20", "--json");
        Assert.True(added.Code == 0, added.Err);
        var forward = JsonDocument.Parse(added.Out).RootElement;
        Assert.Equal("10.0.2.20", forward.GetProperty("guestAddress").GetString());
        Assert.EndsWith(":10.0.2.20:80", forward.GetProperty("spec").GetString());
        var hostfwd = await Cli("forward", "add", "hostfwd=tcp:127.0.0.1:0-10.0.2.20:81");
        Assert.True(hostfwd.Code == 0, hostfwd.Err);
        Assert.Contains("-> guest 10.0.2.20 port 81", hostfwd.Out);
        var first = await Cli("forward", "add", "tcp:0:82");
        Assert.Contains("-> guest port 82", first.Out);

        var nobody = await Cli("forward", "add", "tcp:127.0.0.1:0:10.0.2.17:80");
        Assert.NotEqual(0, nobody.Code);
        Assert.Contains("no guest link of this engine has the address 10.0.2.17 (its links' guests: 10.0.2.15, 10.0.2.20)", nobody.Err);
        var both = await Cli("forward", "add", "tcp:127.0.0.1:0:10.0.2.15:80", "--guest-address", "10.0.2.20");
        Assert.Equal((int)ExitCode.UsageError, both.Code);
        Assert.Equal(3, (await Cli("forward", "list", "--json")).Out.Split("\"spec\"").Length - 1);
    }

    [Fact]
    public async Task Forwards_from_ipv6_show_their_host_endpoint_in_brackets()
    {
        await using var run = new RunningTool("fwd6", "--socket", DeviceSocket("fwd6"));
        var tcp = await Cli("forward", "add", "tcp:[::1]:0:80");
        Assert.True(tcp.Code == 0, tcp.Err);
        var added = System.Text.RegularExpressions.Regex.Match(tcp.Out, @"^Forwarding tcp \[::1\]:(\d+) -> guest port 80$",
            System.Text.RegularExpressions.RegexOptions.Multiline);
        Assert.True(added.Success, tcp.Out);
        string port = added.Groups[1].Value;
        var udp = await Cli("forward", "add", "udp:[::1]:0:5353", "--json");
        Assert.True(udp.Code == 0, udp.Err);
        var udpForward = JsonDocument.Parse(udp.Out).RootElement;
        int udpPort = udpForward.GetProperty("hostPort").GetInt32();
        Assert.Equal("::1", udpForward.GetProperty("address").GetString());
        Assert.Equal($"[::1]:{udpPort}", udpForward.GetProperty("hostEndPoint").GetString());
        Assert.Equal($"udp:[::1]:{udpPort}:5353", udpForward.GetProperty("spec").GetString());
        Assert.True(Emunet.Engine.Forwarding.ForwardSpec.TryParse(udpForward.GetProperty("spec").GetString()!, out _, out _));

        var list = await Cli("forward", "list");
        Assert.Contains($"[::1]:{port}", list.Out);
        Assert.Contains($"[::1]:{udpPort}", list.Out);
        var json = JsonDocument.Parse((await Cli("forward", "list", "--json")).Out).RootElement.EnumerateArray().ToList();
        Assert.Equal(new[] { $"[::1]:{port}", $"[::1]:{udpPort}" }.Order(), json.Select(f => f.GetProperty("hostEndPoint").GetString()).Order());
        Assert.Contains($"tcp:[::1]:{port}:80", json.Select(f => f.GetProperty("spec").GetString()));

        var removed = await Cli("forward", "remove", $"tcp:[::1]:{port}");
        Assert.True(removed.Code == 0, removed.Err);
        Assert.Contains($"Removed tcp [::1]:{port} -> guest port 80", removed.Out);
    }

    [Fact]
    public void Connections_of_ipv6_flows_show_bracketed_endpoints()
    {
        var dto = ConnectionDto.From(new Emunet.Engine.Stack.Nat.ConnectionInfo
        {
            Id = 1, Protocol = Emunet.Engine.Stack.Nat.FlowProtocol.Udp, Direction = Emunet.Engine.Stack.Nat.FlowDirection.Forwarded,
            GuestEndPoint = IPEndPoint.Parse("[fec0::5054:ff:fe12:3456]:5353"), GuestPeerEndPoint = IPEndPoint.Parse("[fec0::2]:49152"),
            HostLocalEndPoint = IPEndPoint.Parse("[::1]:5353"), HostRemoteEndPoint = IPEndPoint.Parse("[::1]:40000"),
            State = "open", Started = DateTimeOffset.UtcNow,
        });
        Assert.Equal(("[fec0::5054:ff:fe12:3456]:5353", "[fec0::2]:49152", "[::1]:5353", "[::1]:40000"),
            (dto.Guest, dto.GuestPeer, dto.HostLocal, dto.HostRemote));
        Assert.Equal("[::1]:5353", DisplayText.EndPoint("::1", 5353));
        Assert.Equal("127.0.0.1:5353", DisplayText.EndPoint("127.0.0.1", 5353));
    }

    [Theory]
    [InlineData(new[] { "emulator", "-avd", "Pixel" }, new[] { "emulator", "-avd", "Pixel", "-net-socket", "listen=127.0.0.1:40001", "-wifi-socket", "listen=127.0.0.1:40002" })]
    [InlineData(new[] { "emulator", "-avd", "Pixel", "-qemu", "-m", "2G" }, new[] { "emulator", "-avd", "Pixel", "-net-socket", "listen=127.0.0.1:40001", "-wifi-socket", "listen=127.0.0.1:40002", "-qemu", "-m", "2G" })]
    public void Launch_android_adds_both_links_before_the_qemu_arguments(string[] emulator, string[] expected) =>
        Assert.Equal(expected, EmunetCli.AndroidCommandLine(emulator, 40001, 40002));

    [Fact]
    public void Launch_android_ports_keep_clear_of_the_console_and_adb_range()
    {
        var taken = new List<int>();
        for (int i = 0; i < 20; i++)
        {
            int port = EmunetCli.FreeAndroidLinkPort(taken);
            Assert.False(port is >= EmunetCli.AndroidFirstPort and <= EmunetCli.AndroidLastPort);
            Assert.DoesNotContain(port, taken);
            taken.Add(port);
        }
    }

    [Fact]
    public void Android_flags_name_the_radio_link_then_the_wifi_link()
    {
        Assert.Equal("-net-socket listen=127.0.0.1:40001 -wifi-socket listen=127.0.0.1:40002",
            Emunet.Engine.Control.EmulatorArguments.AndroidForLinks(["stream:connect:tcp:127.0.0.1:40001", "stream:connect:tcp:127.0.0.1:40002"]));
        Assert.Equal("-net-socket connect=127.0.0.1:40001",
            Emunet.Engine.Control.EmulatorArguments.AndroidForLinks(["stream:tcp:127.0.0.1:40001", "stream:unix:/run/x.sock"]));
        Assert.Null(Emunet.Engine.Control.EmulatorArguments.AndroidForLinks(["stream:unix:/run/x.sock"]));
    }

    [Fact]
    public async Task Allow_and_deny_rules_keep_their_command_line_order()
    {
        await using var run = new RunningTool("policy", "--socket", DeviceSocket("policy"),
            "--deny", "192.0.2.0/24:443", "--allow", "192.0.2.0/24", "--restrict", "--deny", "198.51.100.7",
            "--allow", "[fec0::2]:8080", "--deny", "2001:db8::/32");
        var instances = await Cli("instances", "--json");
        string policy = JsonDocument.Parse(instances.Out).RootElement.EnumerateArray().Single().GetProperty("outboundPolicy").GetString()!;
        Assert.Contains("restricted", policy);
        Assert.Contains("first match wins: deny 192.0.2.0/24:443, then allow 192.0.2.0/24, then deny 198.51.100.7/32, "
            + "then allow [fec0::2]/128:8080, then deny 2001:db8::/32, else allow", policy);
    }

    [Fact]
    public async Task Client_commands_without_an_instance_exit_with_NoInstance()
    {
        foreach (var args in new[] { new[] { "forward", "list" }, ["connections"], ["stats"], ["capture", "stop"] })
        {
            var (code, _, err) = await Cli(args);
            Assert.Equal((int)ExitCode.NoInstance, code);
            Assert.Contains("No Emunet instance is running", err);
        }
        var named = await Cli("stats", "--instance", "nosuch");
        Assert.Equal((int)ExitCode.NoInstance, named.Code);
    }

    [Fact]
    public async Task Run_serves_forwards_and_shuts_down_cleanly()
    {
        int port = FreePort();
        string device = DeviceSocket("one");
        int code;
        await using (var run = new RunningTool("one", "--socket", device, "--forward", $"tcp:{port}:80"))
        {
            Assert.True(File.Exists(device));
            Assert.False(PortFree(port));

            var list = await Cli("forward", "list", "--json");
            Assert.Equal(0, list.Code);
            var forwards = JsonDocument.Parse(list.Out).RootElement;
            Assert.Equal(1, forwards.GetArrayLength());
            Assert.Equal(port, forwards[0].GetProperty("hostPort").GetInt32());
            Assert.Equal(80, forwards[0].GetProperty("guestPort").GetInt32());

            var table = await Cli("forward", "list");
            Assert.Contains("PROTO  HOST", table.Out);
            Assert.Contains($"127.0.0.1:{port}", table.Out);

            var add = await Cli("forward", "add", "tcp:0:22", "--json");
            Assert.Equal(0, add.Code);
            int bound = JsonDocument.Parse(add.Out).RootElement.GetProperty("hostPort").GetInt32();
            Assert.Equal(0, JsonDocument.Parse(add.Out).RootElement.GetProperty("requestedHostPort").GetInt32()); // any free port was asked for
            Assert.False(PortFree(bound));

            var remove = await Cli("forward", "remove", bound.ToString());
            Assert.Equal(0, remove.Code);
            Assert.Contains($"Removed tcp 127.0.0.1:{bound}", remove.Out);
            Assert.True(PortFree(bound));

            var again = await Cli("forward", "remove", $"tcp:127.0.0.1:{bound}");
            Assert.Equal((int)ExitCode.NotFound, again.Code);

            var instances = await Cli("instances", "--json");
            var info = JsonDocument.Parse(instances.Out).RootElement.EnumerateArray().Single();
            Assert.Equal("one", info.GetProperty("name").GetString());
            Assert.Equal($"stream:unix:{device}", info.GetProperty("device").GetString());

            var stats = await Cli("stats", "--json");
            Assert.Equal(0, stats.Code);
            Assert.Equal(1, JsonDocument.Parse(stats.Out).RootElement.GetProperty("forwards").GetInt32());
            Assert.Contains("Frames from guest", (await Cli("stats")).Out);

            var connections = await Cli("connections", "--protocol", "tcp", "--port", "80", "--state", "Established", "--json");
            Assert.Equal(0, connections.Code);
            Assert.Equal(0, JsonDocument.Parse(connections.Out).RootElement.GetArrayLength());

            code = await run.StopAsync();
        }
        Assert.Equal(0, code);
        Assert.False(File.Exists(RuntimeDirectory.SocketPathFor("one")));
        Assert.False(File.Exists(device));
        Assert.True(PortFree(port));
    }

    [Fact]
    public async Task Connections_and_forward_list_read_replies_of_ten_thousand_flows()
    {
        await using var fake = new FakeInstance("big");
        for (int i = 1; i <= 10_000; i++) fake.Engine.Connections.Add(ControlServerTests.ManyFlow(i));
        for (int i = 1; i <= 1000; i++) fake.Engine.Added.Add(Emunet.Engine.Forwarding.ForwardSpec.Create(Emunet.Engine.Forwarding.ForwardProtocol.Tcp, 20000 + i));

        var json = await Cli("connections", "--json");
        Assert.True(json.Code == 0, json.Err);
        Assert.Equal(10_000, JsonDocument.Parse(json.Out).RootElement.GetArrayLength());
        var table = await Cli("connections");
        Assert.True(table.Code == 0, table.Err);
        Assert.Equal(10_000 + 2, table.Out.Split('\n', StringSplitOptions.RemoveEmptyEntries).Length);
        var forwards = await Cli("forward", "list", "--json");
        Assert.True(forwards.Code == 0, forwards.Err);
        Assert.Equal(1000, JsonDocument.Parse(forwards.Out).RootElement.GetArrayLength());
    }

    [Theory]
    [InlineData("forward", "add", "tcp:99999")]
    [InlineData("forward", "remove", "0")]
    [InlineData("connections", "--port", "70000")]
    [InlineData("stop", "--timeout", "0")]
    public async Task Invalid_values_are_usage_errors_with_or_without_an_instance(params string[] args)
    {
        var none = await Cli(args);
        Assert.Equal((int)ExitCode.UsageError, none.Code);
        await using (new RunningTool("valid", "--socket", DeviceSocket("valid")))
        {
            var one = await Cli(args);
            Assert.Equal((int)ExitCode.UsageError, one.Code);
            Assert.Equal(none.Err, one.Err);
        }
    }

    [Fact]
    public async Task A_duplicate_forward_exits_with_Conflict()
    {
        await using var run = new RunningTool("dup", "--socket", DeviceSocket("dup"));
        var first = await Cli("forward", "add", "tcp:0:80", "--json");
        int port = JsonDocument.Parse(first.Out).RootElement.GetProperty("hostPort").GetInt32();
        var second = await Cli("forward", "add", $"tcp:{port}:81");
        Assert.Equal((int)ExitCode.Conflict, second.Code);
        Assert.Contains($"{port}", second.Err);
    }

    [Fact]
    public async Task Forward_remove_by_port_finds_a_forward_on_another_address()
    {
        await using var run = new RunningTool("anyaddr", "--socket", DeviceSocket("anyaddr"));
        var add = await Cli("forward", "add", "tcp:127.0.0.2:0:80", "--json");
        Assert.True(add.Code == 0, add.Err);
        int port = JsonDocument.Parse(add.Out).RootElement.GetProperty("hostPort").GetInt32();
        var remove = await Cli("forward", "remove", port.ToString());
        Assert.True(remove.Code == 0, remove.Err);
        Assert.Contains($"Removed tcp 127.0.0.2:{port}", remove.Out);
        Assert.Equal((int)ExitCode.NotFound, (await Cli("forward", "remove", port.ToString())).Code);
    }

    [Fact]
    public async Task Forward_remove_resets_connections_only_with_reset_connections()
    {
        await using var run = new RunningTool("reset", "--socket", DeviceSocket("reset"));
        using var guest = SilentGuest(DeviceSocket("reset"));
        int Add() => JsonDocument.Parse(Cli("forward", "add", "tcp:0:80", "--json").Result.Out).RootElement.GetProperty("hostPort").GetInt32();
        int kept = Add(), reset = Add();
        using var c1 = new TcpClient(); c1.Connect(IPAddress.Loopback, kept);
        using var c2 = new TcpClient(); c2.Connect(IPAddress.Loopback, reset);
        int Flows(int port) => JsonDocument.Parse(Cli("connections", "--port", port.ToString(), "--json").Result.Out).RootElement.GetArrayLength();
        Wait.Until(() => Flows(kept) == 1 && Flows(reset) == 1, "a flow on each forward");

        Assert.Equal(0, (await Cli("forward", "remove", kept.ToString())).Code);
        Assert.Equal(1, Flows(kept));
        Assert.Equal(0, (await Cli("forward", "remove", reset.ToString(), "--reset-connections")).Code);
        Assert.Equal(0, Flows(reset));
        Assert.Equal(1, Flows(kept));
    }

    /// <summary>
    /// A silent stand-in guest (<see cref="ForwardWaitTests.AttachGuest"/>), once the engine knows it: forwarded
    /// connections then wait in SYN-SENT (with no guest at all, forwarded clients are reset at once).
    /// </summary>
    private System.Net.Sockets.Socket SilentGuest(string deviceSocket)
    {
        var s = ForwardWaitTests.AttachGuest(deviceSocket);
        Wait.Until(() => JsonDocument.Parse(Cli("instances", "--json").Result.Out).RootElement.EnumerateArray()
            .Any(i => i.TryGetProperty("guestMac", out var mac) && mac.ValueKind == JsonValueKind.String), "the engine to learn the stand-in guest's MAC");
        return s;
    }

    [Fact]
    public async Task Stop_returns_once_the_instance_is_gone()
    {
        var run = new RunningTool("stopme", "--socket", DeviceSocket("stopme"));
        await using (run)
        {
            var (code, output, err) = await Cli("stop", "--instance", "stopme");
            Assert.True(code == 0, err);
            Assert.Contains("Stopped instance 'stopme'", output);
            Assert.False(File.Exists(RuntimeDirectory.SocketPathFor("stopme")));
            Assert.False(File.Exists(DeviceSocket("stopme")));
            Assert.Equal(0, await run.Exit.WaitAsync(TimeSpan.FromSeconds(15)));
        }
        Assert.Equal((int)ExitCode.NoInstance, (await Cli("stop", "--instance", "stopme")).Code);
    }

    /// <summary>The first of <paramref name="count"/> consecutive free loopback TCP ports.</summary>
    private static int FreeRange(int count)
    {
        for (int attempt = 0; attempt < 100; attempt++)
        {
            int first = FreePort();
            if (first + count - 1 <= 65535 && Enumerable.Range(first, count).All(PortFree)) return first;
        }
        throw new InvalidOperationException($"No {count} consecutive free ports found.");
    }

    private static int[] HostPorts(string json) =>
        JsonDocument.Parse(json).RootElement.EnumerateArray().Select(f => f.GetProperty("hostPort").GetInt32()).Order().ToArray();

    [Fact]
    public async Task Forward_add_takes_a_range_and_remove_all_removes_every_forward()
    {
        await using var run = new RunningTool("range", "--socket", DeviceSocket("range"));
        int p = FreeRange(3);
        var add = await Cli("forward", "add", $"tcp:{p}-{p + 2}:9000-9002");
        Assert.True(add.Code == 0, add.Err);
        Assert.Contains($"Forwarding tcp 127.0.0.1:{p + 2} -> guest port 9002", add.Out);
        var list = await Cli("forward", "list", "--json");
        Assert.Equal([p, p + 1, p + 2], HostPorts(list.Out));
        Assert.All(Enumerable.Range(p, 3), port => Assert.False(PortFree(port)));

        var all = await Cli("forward", "remove", "--all", "--json");
        Assert.True(all.Code == 0, all.Err);
        Assert.Equal([p, p + 1, p + 2], HostPorts(all.Out));
        Assert.Empty(HostPorts((await Cli("forward", "list", "--json")).Out));
        Assert.All(Enumerable.Range(p, 3), port => Assert.True(PortFree(port)));
    }

    [Fact]
    public async Task A_range_is_added_whole_or_not_at_all()
    {
        await using var run = new RunningTool("whole", "--socket", DeviceSocket("whole"));
        int p = FreeRange(3);
        var holder = new TcpListener(IPAddress.Loopback, p + 1);
        holder.Start();
        try
        {
            var add = await Cli("forward", "add", $"tcp:{p}-{p + 2}");
            Assert.Equal((int)ExitCode.PortInUse, add.Code);
            Assert.Contains($"tcp:127.0.0.1:{p + 1}:{p + 1}", add.Err);
            Assert.Empty(HostPorts((await Cli("forward", "list", "--json")).Out));
            Assert.True(PortFree(p));
        }
        finally { holder.Stop(); }
    }

    [Fact]
    public async Task Forward_add_takes_adbs_two_argument_form_and_run_takes_lists()
    {
        int p = FreeRange(2);
        await using var run = new RunningTool("adb", "--socket", DeviceSocket("adb"), "--forward", $"tcp:{p},{p + 1}");
        Assert.Equal([p, p + 1], HostPorts((await Cli("forward", "list", "--json")).Out));
        var add = await Cli("forward", "add", "tcp:0", "tcp:10990", "--json");
        Assert.True(add.Code == 0, add.Err);
        Assert.Equal(10990, JsonDocument.Parse(add.Out).RootElement.GetProperty("guestPort").GetInt32());
        Assert.Equal((int)ExitCode.UsageError, (await Cli("forward", "add", "tcp:0", "udp:53")).Code);
    }

    [Theory]
    [InlineData("forward", "remove")]
    [InlineData("forward", "remove", "8080", "--all")]
    [InlineData("forward", "add", "tcp:8000-8010:9000")]
    [InlineData("forward", "add", "tcp:8000", "tcp:1:2")]
    public async Task Forward_commands_refuse_what_they_cannot_mean(params string[] args)
    {
        var (code, _, err) = await Cli(args);
        Assert.Equal((int)ExitCode.UsageError, code);
        Assert.StartsWith("emunet: ", err);
    }

    [Fact]
    public async Task Run_serves_a_tcp_stream_socket()
    {
        int port = FreePort();
        await using (new RunningTool("tcpdev", "--socket", $"tcp:127.0.0.1:{port}"))
        {
            Assert.False(PortFree(port));
            var info = JsonDocument.Parse((await Cli("instances", "--json")).Out).RootElement.EnumerateArray().Single();
            Assert.Equal($"stream:tcp:127.0.0.1:{port}", info.GetProperty("device").GetString());
        }
        Assert.True(PortFree(port));
    }

    [Fact]
    public async Task Capture_starts_and_stops_at_run_time()
    {
        string pcap = _scope.Scratch("run.pcap");
        await using (new RunningTool("cap", "--socket", DeviceSocket("cap")))
        {
            var start = await Cli("capture", "start", pcap);
            Assert.True(start.Code == 0, start.Err);
            Assert.Contains(pcap, start.Out);
            var stats = JsonDocument.Parse((await Cli("stats", "--json")).Out).RootElement;
            Assert.Equal(pcap, stats.GetProperty("captureFile").GetString());
            var twice = await Cli("capture", "start", pcap);
            Assert.Equal((int)ExitCode.Conflict, twice.Code);
            Assert.Contains("already running", twice.Err);
            var stop = await Cli("capture", "stop", "--json");
            Assert.Equal(0, stop.Code);
            Assert.Equal(pcap, JsonDocument.Parse(stop.Out).RootElement.GetProperty("file").GetString());
            Assert.Contains("No capture was running", (await Cli("capture", "stop")).Out);
            var denied = await Cli("capture", "start", _scope.Scratch("no/such/dir/x.pcap"));
            Assert.Equal((int)ExitCode.CaptureFailed, denied.Code);
        }
        // No guest was attached: a valid file with the pcap header and no frames.
        var bytes = File.ReadAllBytes(pcap);
        Assert.Equal(24, bytes.Length);
        Assert.Equal(0xa1b2c3d4u, BitConverter.ToUInt32(bytes, 0));
    }

    [Fact]
    public async Task A_taken_port_exits_with_PortInUse()
    {
        var holder = new TcpListener(IPAddress.Loopback, 0);
        holder.Start();
        try
        {
            int port = ((IPEndPoint)holder.LocalEndpoint).Port;
            await using (new RunningTool("busy", "--socket", DeviceSocket("busy")))
            {
                var (code, _, err) = await Cli("forward", "add", $"tcp:{port}:80");
                Assert.Equal((int)ExitCode.PortInUse, code);
                Assert.Contains(port.ToString(), err);
            }
            var start = await Cli("run", "--name", "busy2", "--socket", DeviceSocket("busy2"), "--forward", $"tcp:{port}:80", "--log-level", "None");
            Assert.Equal((int)ExitCode.PortInUse, start.Code);
        }
        finally { holder.Stop(); }
    }

    [Fact]
    public async Task Several_instances_need_instance_and_the_error_names_them()
    {
        await using var a = new RunningTool("alpha", "--socket", DeviceSocket("alpha"));
        await using var b = new RunningTool("beta", "--socket", DeviceSocket("beta"));
        var (code, _, err) = await Cli("forward", "list");
        Assert.Equal((int)ExitCode.AmbiguousInstance, code);
        Assert.Contains("alpha, beta", err);
        Assert.Equal(0, (await Cli("forward", "list", "--instance", "beta")).Code);
        var instances = await Cli("instances");
        Assert.Contains("alpha", instances.Out);
        Assert.Contains("beta", instances.Out);
    }

    [Fact]
    public async Task A_second_run_with_the_same_name_exits_with_StartFailed()
    {
        await using var first = new RunningTool("twice", "--socket", DeviceSocket("twice"));
        var (code, _, err) = await Cli("run", "--name", "twice", "--socket", DeviceSocket("twice2"), "--log-level", "None");
        Assert.Equal((int)ExitCode.StartFailed, code);
        Assert.Contains("already running", err);
    }

    [Fact]
    public async Task A_device_socket_that_cannot_be_bound_exits_with_StartFailed()
    {
        var (code, _, err) = await Cli("run", "--name", "nodir", "--socket", _scope.Scratch("missing/dir/x.sock"), "--log-level", "None");
        Assert.Equal((int)ExitCode.StartFailed, code);
        Assert.StartsWith("emunet: ", err);
        Assert.False(File.Exists(RuntimeDirectory.SocketPathFor("nodir")));
    }

    [Fact]
    public async Task A_control_shutdown_ends_run()
    {
        var run = new RunningTool("bye", "--socket", DeviceSocket("bye"));
        await using (run)
        {
            using (var client = ControlClient.ConnectInstance("bye")) client.Shutdown();
            Assert.Equal(0, await run.Exit.WaitAsync(TimeSpan.FromSeconds(15)));
        }
        Assert.False(File.Exists(RuntimeDirectory.SocketPathFor("bye")));
    }

    [Fact]
    public async Task Launch_appends_the_netdev_runs_the_emulator_and_returns_its_exit_code()
    {
        // The "emulator" checks it was given the Emunet netdev, that the socket is there while it runs, and that the
        // control socket answers, then exits with 42.
        string script = """
            [ "$1" = -netdev ] || exit 11
            case "$2" in stream,id=emunet0,server=off,addr.type=unix,addr.path=*) ;; *) exit 12;; esac
            [ -S "${2##*addr.path=}" ] || exit 13
            [ "$3" = -device ] && [ "$4" = virtio-net-pci,netdev=emunet0 ] || exit 14
            [ -S "$EMUNET_RUNTIME_DIR/launched.sock" ] || exit 15
            exit 42
            """;
        var (code, _, err) = await Cli("launch", "--name", "launched", "--log-level", "Warning", "--", "/bin/sh", "-c", script, "emulator");
        Assert.True(code == 42, $"exit {code}: {err}");
        Assert.False(File.Exists(RuntimeDirectory.SocketPathFor("launched")));
        Assert.False(File.Exists(RuntimeDirectory.DeviceSocketPathFor("launched")));
    }

    [Fact]
    public async Task Launch_of_a_missing_emulator_exits_with_StartFailed()
    {
        var (code, _, err) = await Cli("launch", "--log-level", "None", "--", "/nonexistent/qemu-system-x86_64");
        Assert.Equal((int)ExitCode.StartFailed, code);
        Assert.Contains("cannot start the emulator", err);
    }

    [Fact]
    public void Every_expected_control_failure_has_its_own_exit_code()
    {
        var codes = typeof(ControlErrorCodes).GetFields().Select(f => (string)f.GetValue(null)!).ToList();
        Assert.Contains(ControlErrorCodes.Conflict, codes);
        foreach (string code in codes.Except([ControlErrorCodes.Internal, ControlErrorCodes.NotSupported]))
            Assert.True(EmunetCli.ToExitCode(code) != ExitCode.Failure, $"'{code}' exits with 1 (unexpected failure)");
    }

    [Theory]
    [InlineData("8080", "tcp", null, 8080)]
    [InlineData("udp:5353", "udp", null, 5353)]
    [InlineData("tcp:8080:80", "tcp", null, 8080)]
    [InlineData("hostfwd=tcp::8080-:80", "tcp", null, 8080)]
    [InlineData("tcp:127.0.0.2:8080", "tcp", "127.0.0.2", 8080)]
    [InlineData("hostfwd=udp:127.0.0.1:5353-:53", "udp", "127.0.0.1", 5353)]
    public void Forward_remove_reads_a_port_or_a_spec(string text, string protocol, string? address, int port)
    {
        Assert.True(EmunetCli.TryParseForwardKey(text, out string p, out string? a, out int n, out _));
        Assert.Equal((protocol, address, port), (p, a, n));
    }

    [Theory]
    [InlineData("0")]
    [InlineData("70000")]
    [InlineData("icmp:1")]
    [InlineData("tcp:0:22")]
    public void Forward_remove_refuses_what_is_not_a_forward(string text) =>
        Assert.False(EmunetCli.TryParseForwardKey(text, out _, out _, out _, out string? error) || error is null);
}
