using System.Net;
using System.Net.Sockets;
using System.Text;
using System.Text.Json;
using Emunet.Engine.Control;
using Emunet.Engine.Forwarding;
using Emunet.Engine.Stack.Nat;
using Microsoft.Extensions.Logging.Abstractions;

namespace Emunet.Tool.Tests;

public sealed class ControlServerTests : IAsyncLifetime
{
    private readonly TempFolder _folder = new();
    private readonly FakeEngine _engine = new();
    private ControlServer _server = null!;
    private string SocketPath => _folder.File("c.sock");

    public Task InitializeAsync()
    {
        _server = new ControlServer(_engine, SocketPath, NullLogger.Instance);
        _server.Start();
        return Task.CompletedTask;
    }

    public async Task DisposeAsync()
    {
        await _server.DisposeAsync();
        _folder.Dispose();
    }

    private static JsonElement Parse(string? line)
    {
        Assert.NotNull(line);
        return JsonDocument.Parse(line).RootElement;
    }

    private static string ErrorCode(JsonElement reply)
    {
        Assert.False(reply.GetProperty("ok").GetBoolean());
        return reply.GetProperty("error").GetProperty("code").GetString()!;
    }

    [Fact]
    public void Info_round_trips_through_the_client()
    {
        using var client = ControlClient.Connect(SocketPath);
        var info = client.Info();
        Assert.Equal("fake", info.Name);
        Assert.Equal("stream:unix:/tmp/fake.sock", info.Device);
        Assert.Equal(Environment.ProcessId, info.ProcessId);
    }

    [Fact]
    public void Socket_file_is_private_to_the_user()
    {
        Assert.Equal(UnixFileMode.UserRead | UnixFileMode.UserWrite, File.GetUnixFileMode(SocketPath));
    }

    [Fact]
    public void Reply_echoes_the_version_and_any_id()
    {
        using var raw = new RawClient(SocketPath);
        raw.Send("{\"v\":1,\"id\":\"abc\",\"op\":\"info\"}\n{\"v\":1,\"id\":{\"n\":[1,2]},\"op\":\"info\"}\n{\"v\":1,\"op\":\"info\"}\n");
        var a = Parse(raw.ReadLine());
        Assert.Equal(1, a.GetProperty("v").GetInt32());
        Assert.Equal("abc", a.GetProperty("id").GetString());
        Assert.True(a.GetProperty("ok").GetBoolean());
        Assert.Equal("fake", a.GetProperty("instance").GetProperty("name").GetString());
        var b = Parse(raw.ReadLine());
        Assert.Equal(2, b.GetProperty("id").GetProperty("n")[1].GetInt32());
        var c = Parse(raw.ReadLine());
        Assert.False(c.TryGetProperty("id", out _));
    }

    [Theory]
    [InlineData("this is not json")]
    [InlineData("{\"v\":1,\"op\":")]
    [InlineData("[1,2,3]")]
    [InlineData("null")]
    [InlineData("{\"v\":\"one\",\"op\":\"info\"}")]
    [InlineData("\u00ff\u00fe garbage \u0001")]
    public void Malformed_json_gets_bad_json_and_the_connection_stays_usable(string garbage)
    {
        using var raw = new RawClient(SocketPath);
        raw.Send(garbage + "\n");
        Assert.Equal(ControlErrorCodes.BadJson, ErrorCode(Parse(raw.ReadLine())));
        raw.Send("{\"v\":1,\"id\":2,\"op\":\"info\"}\n");
        Assert.True(Parse(raw.ReadLine()).GetProperty("ok").GetBoolean());
        Assert.Equal(0, _engine.Calls);
    }

    [Fact]
    public void Invalid_utf8_gets_bad_json()
    {
        using var raw = new RawClient(SocketPath);
        raw.Send([(byte)'{', 0xff, 0xfe, (byte)'}', (byte)'\n']);
        Assert.Equal(ControlErrorCodes.BadJson, ErrorCode(Parse(raw.ReadLine())));
    }

    [Theory]
    [InlineData("{\"v\":2,\"op\":\"info\"}", ControlErrorCodes.UnsupportedVersion)]
    [InlineData("{\"op\":\"info\"}", ControlErrorCodes.UnsupportedVersion)]
    [InlineData("{\"v\":1,\"op\":\"reboot\"}", ControlErrorCodes.UnknownOp)]
    [InlineData("{\"v\":1}", ControlErrorCodes.BadRequest)]
    [InlineData("{\"v\":1,\"op\":\"forward.add\"}", ControlErrorCodes.BadRequest)]
    [InlineData("{\"v\":1,\"op\":\"forward.add\",\"spec\":\"sctp:80\"}", ControlErrorCodes.BadRequest)]
    [InlineData("{\"v\":1,\"op\":\"forward.add\",\"spec\":\"tcp:70000\"}", ControlErrorCodes.BadRequest)]
    [InlineData("{\"v\":1,\"op\":\"forward.remove\"}", ControlErrorCodes.BadRequest)]
    [InlineData("{\"v\":1,\"op\":\"forward.remove\",\"port\":0}", ControlErrorCodes.BadRequest)]
    [InlineData("{\"v\":1,\"op\":\"forward.remove\",\"port\":80,\"protocol\":\"icmp\"}", ControlErrorCodes.BadRequest)]
    [InlineData("{\"v\":1,\"op\":\"forward.remove\",\"port\":80,\"address\":\"fe80::1%2\"}", ControlErrorCodes.BadRequest)]
    [InlineData("{\"v\":1,\"op\":\"forward.remove\",\"port\":80,\"address\":\"::1\"}", ControlErrorCodes.NotFound)]
    [InlineData("{\"v\":1,\"op\":\"forward.remove\",\"port\":80,\"address\":\"127.1\"}", ControlErrorCodes.BadRequest)]
    [InlineData("{\"v\":1,\"op\":\"forward.remove\",\"port\":80}", ControlErrorCodes.NotFound)]
    [InlineData("{\"v\":1,\"op\":\"connections.list\",\"protocol\":\"sctp\"}", ControlErrorCodes.BadRequest)]
    [InlineData("{\"v\":1,\"op\":\"connections.list\",\"port\":70000}", ControlErrorCodes.BadRequest)]
    [InlineData("{\"v\":1,\"op\":\"capture.start\"}", ControlErrorCodes.BadRequest)]
    [InlineData("{\"v\":1,\"op\":\"forward.remove\",\"port\":\"eighty\"}", ControlErrorCodes.BadJson)]
    public void Bad_requests_get_stable_error_codes(string request, string code)
    {
        using var raw = new RawClient(SocketPath);
        raw.Send(request + "\n");
        var reply = Parse(raw.ReadLine());
        Assert.Equal(code, ErrorCode(reply));
        Assert.False(string.IsNullOrWhiteSpace(reply.GetProperty("error").GetProperty("message").GetString()));
    }

    [Fact]
    public void A_line_at_the_limit_is_served()
    {
        string request = "{\"v\":1,\"id\":9,\"op\":\"info\"}";
        string padded = request + new string(' ', ControlProtocol.MaxRequestBytes - request.Length);
        Assert.Equal(ControlProtocol.MaxRequestBytes, padded.Length);
        using var raw = new RawClient(SocketPath);
        raw.Send(padded + "\n");
        Assert.True(Parse(raw.ReadLine()).GetProperty("ok").GetBoolean());
    }

    [Fact]
    public void An_oversized_line_gets_line_too_long_and_the_connection_is_closed()
    {
        using (var raw = new RawClient(SocketPath))
        {
            raw.Send(new string('x', ControlProtocol.MaxRequestBytes + 1));
            Assert.Equal(ControlErrorCodes.LineTooLong, ErrorCode(Parse(raw.ReadLine())));
            Assert.Null(raw.ReadLine());
        }
        using var client = ControlClient.Connect(SocketPath);
        Assert.Equal("fake", client.Info().Name);
        Assert.Equal(0, _engine.Calls);
    }

    [Fact]
    public void A_client_leaving_mid_request_is_harmless()
    {
        for (int i = 0; i < 20; i++)
        {
            using var raw = new RawClient(SocketPath);
            raw.Send("{\"v\":1,\"op\":\"forward.add\",\"spec\":\"tcp:80");
        }
        using (var raw = new RawClient(SocketPath))
        {
            // A reply the client never reads: the server writes it into a closed connection.
            raw.Send("{\"v\":1,\"op\":\"forward.list\"}\n");
        }
        using var client = ControlClient.Connect(SocketPath);
        Assert.Empty(client.ListForwards());
        Assert.Empty(_engine.Added);
    }

    [Fact]
    public void Several_requests_in_one_write_are_answered_in_order()
    {
        using var raw = new RawClient(SocketPath);
        var sb = new StringBuilder();
        for (int i = 0; i < 50; i++) sb.Append("{\"v\":1,\"id\":").Append(i).Append(",\"op\":\"info\"}\r\n");
        raw.Send(sb.ToString());
        for (int i = 0; i < 50; i++) Assert.Equal(i, Parse(raw.ReadLine()).GetProperty("id").GetInt32());
    }

    [Fact]
    public async Task Many_clients_at_once_each_get_their_own_answers()
    {
        const int clients = 16, requests = 40;
        // Blocking clients get threads of their own, so they do not starve the server's thread-pool continuations.
        var tasks = Enumerable.Range(0, clients).Select(c => Task.Factory.StartNew(() =>
        {
            using var client = ControlClient.Connect(SocketPath);
            for (int i = 0; i < requests; i++)
            {
                var f = client.AddForward($"tcp:{1000 + c * requests + i}:80");
                Assert.Equal(1000 + c * requests + i, f.HostPort);
            }
        }, TaskCreationOptions.LongRunning)).ToArray();
        await Task.WhenAll(tasks).WaitAsync(TimeSpan.FromSeconds(30));
        Assert.Equal(clients * requests, _engine.Added.Count);
    }

    [Fact]
    public async Task Idle_squatters_cannot_lock_the_control_plane_out()
    {
        string path = _folder.File("squat.sock");
        await using var server = new ControlServer(_engine, path, NullLogger.Instance) { EvictAfterIdle = TimeSpan.FromMilliseconds(200) };
        server.Start();
        var squatters = new List<RawClient>();
        try
        {
            // Many more idle connections than slots (the ones over the limit are refused while all are fresh).
            for (int i = 0; i < 3 * ControlServer.MaxClients; i++)
            {
                try { squatters.Add(new RawClient(path)); }
                catch (System.Net.Sockets.SocketException) { } // the backlog was full for a moment
            }
            // A real client gets in: it takes the slot of the one idle longest.
            await Task.Run(() => Wait.Until(() =>
            {
                try { using var c = ControlClient.Connect(path); return c.Info().Name == "fake"; }
                catch (ControlException) { return false; }
            }, "a client to get past the idle squatters"));
        }
        finally
        {
            foreach (var c in squatters) c.Dispose();
        }
    }

    [Fact]
    public async Task Idle_and_trickling_clients_are_closed()
    {
        string path = _folder.File("slow.sock");
        await using var server = new ControlServer(_engine, path, NullLogger.Instance)
        {
            IdleTimeout = TimeSpan.FromSeconds(1), LineTimeout = TimeSpan.FromMilliseconds(500),
        };
        server.Start();
        using var idle = new RawClient(path);
        using var trickle = new RawClient(path);
        var sw = System.Diagnostics.Stopwatch.StartNew();
        var trickling = Task.Run(async () =>
        {
            foreach (char ch in "{\"v\":1,\"op\":\"info\"}")
            {
                try { trickle.Send(ch.ToString()); } catch (System.Net.Sockets.SocketException) { return; }
                await Task.Delay(100);
            }
        });
        Assert.True(ClosedWithoutReply(trickle), "the trickling client got a reply"); // closed before its line was whole
        Assert.True(sw.Elapsed < TimeSpan.FromSeconds(5), $"the trickling client lasted {sw.Elapsed}");
        Assert.True(ClosedWithoutReply(idle), "the idle client got a line");          // closed after IdleTimeout
        await trickling;
    }

    /// <summary>The server closed the connection: end of stream, or a reset when bytes it had not read were pending.</summary>
    private static bool ClosedWithoutReply(RawClient client)
    {
        try { return client.ReadLine() is null; }
        catch (IOException e) when (e.InnerException is System.Net.Sockets.SocketException { SocketErrorCode: System.Net.Sockets.SocketError.ConnectionReset }) { return true; }
    }

    [Fact]
    public async Task Clients_over_the_limit_are_told_so_and_the_rest_keep_working()
    {
        _engine.BlockStats = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        var held = new List<RawClient>();
        try
        {
            for (int i = 0; i < ControlServer.MaxClients; i++)
            {
                var raw = new RawClient(SocketPath);
                held.Add(raw);
                raw.Send("{\"v\":1,\"op\":\"stats\"}\n");
            }
            Wait.Until(() => _engine.Calls == ControlServer.MaxClients, "every held client to reach the engine");
            using (var extra = new RawClient(SocketPath))
            {
                Assert.Equal(ControlErrorCodes.TooManyClients, ErrorCode(Parse(extra.ReadLine())));
            }
            _engine.BlockStats.SetResult();
            foreach (var raw in held) Assert.True(Parse(raw.ReadLine()).GetProperty("ok").GetBoolean());
        }
        finally
        {
            _engine.BlockStats.TrySetResult();
            foreach (var raw in held) raw.Dispose();
        }
        // The slots free up once the held clients close.
        await Task.Run(() => Wait.Until(() =>
        {
            try { using var c = ControlClient.Connect(SocketPath); c.Info(); return true; }
            catch (ControlException) { return false; }
        }, "a slot to free up"));
    }

    [Fact]
    public void Forward_add_list_remove()
    {
        using var client = ControlClient.Connect(SocketPath);
        var added = client.AddForward("hostfwd=tcp:127.0.0.1:8080-:80");
        Assert.Equal("tcp", added.Protocol);
        Assert.Equal("127.0.0.1", added.Address);
        Assert.Equal(8080, added.HostPort);
        Assert.Equal(80, added.GuestPort);
        Assert.Equal("tcp:127.0.0.1:8080:80", added.Spec);
        client.AddForward("udp:5353:53");
        Assert.Equal(2, client.ListForwards().Count);
        var removed = client.RemoveForward("udp", null, 5353, force: true);
        Assert.Equal(53, removed.GuestPort);
        var e = Assert.Throws<ControlException>(() => client.RemoveForward("udp", null, 5353, force: false));
        Assert.Equal(ControlErrorCodes.NotFound, e.Code);
        Assert.Single(client.ListForwards());
    }

    public static TheoryData<Exception, string> EngineFailures => new()
    {
        { new SocketException((int)SocketError.AddressAlreadyInUse), ControlErrorCodes.PortInUse },
        { new InvalidOperationException("Port 80 on 127.0.0.1 is already in use.", new SocketException((int)SocketError.AddressAlreadyInUse)), ControlErrorCodes.PortInUse },
        { new SocketException((int)SocketError.AccessDenied), ControlErrorCodes.PermissionDenied },
        { new InvalidOperationException("A forward on tcp 127.0.0.1:80 already exists."), ControlErrorCodes.Conflict },
        { new NotSupportedException("no"), ControlErrorCodes.NotSupported },
        { new NullReferenceException(), ControlErrorCodes.Internal },
    };

    [Theory]
    [MemberData(nameof(EngineFailures))]
    public void Engine_failures_become_error_codes_and_the_server_goes_on(Exception failure, string code)
    {
        _engine.AddForwardFailure = failure;
        using var client = ControlClient.Connect(SocketPath);
        var e = Assert.Throws<ControlException>(() => client.AddForward("tcp:80"));
        Assert.Equal(code, e.Code);
        Assert.Equal("fake", client.Info().Name);
    }

    [Fact]
    public void Capture_start_and_stop()
    {
        using var client = ControlClient.Connect(SocketPath);
        var started = client.StartCapture("relative.pcap");
        Assert.True(started.Running);
        Assert.Equal(Path.GetFullPath("relative.pcap"), started.File);
        var stopped = client.StopCapture();
        Assert.False(stopped.Running);
        Assert.Equal(started.File, stopped.File);
        Assert.Null(client.StopCapture().File);
        _engine.CaptureFailure = new UnauthorizedAccessException("denied");
        Assert.Equal(ControlErrorCodes.CaptureFailed, Assert.Throws<ControlException>(() => client.StartCapture("/x.pcap")).Code);
    }

    [Fact]
    public void Connections_are_filtered_by_protocol_port_and_state()
    {
        ConnectionInfo Flow(long id, FlowProtocol p, int guestPort, int peerPort, string state) => new()
        {
            Id = id, Protocol = p, Direction = FlowDirection.Outbound, State = state, Started = DateTimeOffset.UtcNow,
            GuestEndPoint = new IPEndPoint(IPAddress.Parse("10.0.2.15"), guestPort),
            GuestPeerEndPoint = new IPEndPoint(IPAddress.Parse("10.0.2.2"), peerPort),
            HostRemoteEndPoint = new IPEndPoint(IPAddress.Loopback, peerPort),
        };
        _engine.Connections.Add(Flow(1, FlowProtocol.Tcp, 40000, 8080, "Established"));
        _engine.Connections.Add(Flow(2, FlowProtocol.Tcp, 40001, 9090, "SynSent"));
        _engine.Connections.Add(Flow(3, FlowProtocol.Udp, 40002, 53, "Open"));
        using var client = ControlClient.Connect(SocketPath);
        Assert.Equal(3, client.ListConnections().Count);
        Assert.Equal([1L, 2L], client.ListConnections(protocol: "tcp").Select(c => c.Id));
        Assert.Equal([2L], client.ListConnections(port: 9090).Select(c => c.Id));
        Assert.Equal([2L], client.ListConnections(port: 40001).Select(c => c.Id));
        Assert.Equal([1L], client.ListConnections(state: "established").Select(c => c.Id));
        Assert.Empty(client.ListConnections(protocol: "udp", state: "Established"));
        var c = client.ListConnections(protocol: "udp").Single();
        Assert.Equal("10.0.2.15:40002", c.Guest);
        Assert.Equal("10.0.2.2:53", c.GuestPeer);
        Assert.Equal("127.0.0.1:53", c.HostRemote);
        Assert.Null(c.HostLocal);
        Assert.Equal("outbound", c.Direction);
    }

    internal static ConnectionInfo ManyFlow(long id) => new()
    {
        Id = id, Protocol = FlowProtocol.Tcp, Direction = FlowDirection.Forwarded, State = "Established", Started = DateTimeOffset.UtcNow,
        GuestEndPoint = new IPEndPoint(IPAddress.Parse("10.0.2.15"), 8080),
        GuestPeerEndPoint = new IPEndPoint(IPAddress.Parse("10.0.2.2"), 1024 + (int)(id % 60000)),
        HostLocalEndPoint = new IPEndPoint(IPAddress.Loopback, 8080),
        HostRemoteEndPoint = new IPEndPoint(IPAddress.Loopback, 1024 + (int)(id % 60000)),
        BytesFromGuest = id * 1000, BytesToGuest = id * 7, Forward = "tcp:127.0.0.1:8080:8080",
    };

    [Fact]
    public void Ten_thousand_flows_and_a_thousand_forwards_fit_in_a_reply()
    {
        for (int i = 1; i <= 10_000; i++) _engine.Connections.Add(ManyFlow(i));
        for (int i = 1; i <= 1000; i++) _engine.Added.Add(ForwardSpec.Create(ForwardProtocol.Udp, 10000 + i, 53));
        using var client = ControlClient.Connect(SocketPath);
        var flows = client.ListConnections();
        Assert.Equal(10_000, flows.Count);
        Assert.Equal(10_000L * 1000, flows[^1].BytesFromGuest);
        Assert.Equal(1000, client.ListForwards().Count);
        // The connection stays usable after a long reply.
        Assert.Equal("fake", client.Info().Name);
    }

    [Fact]
    public void Shutdown_is_acknowledged_before_the_engine_is_asked_to_stop()
    {
        using var client = ControlClient.Connect(SocketPath);
        client.Shutdown();
        Wait.Until(() => _engine.ShutdownRequests == 1, "the shutdown request");
    }

    [Fact]
    public async Task Dispose_removes_the_socket_and_a_second_server_on_a_live_path_is_refused()
    {
        var second = new ControlServer(_engine, SocketPath, NullLogger.Instance);
        Assert.Throws<IOException>(second.Start);
        await _server.DisposeAsync();
        Assert.False(File.Exists(SocketPath));
        Assert.Throws<ControlException>(() => ControlClient.Connect(SocketPath));
    }

    [Fact]
    public async Task A_stale_socket_file_is_replaced()
    {
        await _server.DisposeAsync();
        File.WriteAllText(SocketPath, "");
        _server = new ControlServer(_engine, SocketPath, NullLogger.Instance);
        _server.Start();
        using var client = ControlClient.Connect(SocketPath);
        Assert.Equal("fake", client.Info().Name);
    }
}
