using System.Net;
using System.Text.RegularExpressions;
using Emunet.Engine.Forwarding;
using Emunet.Engine.Stack.Nat;

namespace Emunet.Tool.Tests;

/// <summary>`--watch` against a fake engine whose byte counters the test moves: frames redrawn in place, with rates.</summary>
[Collection(RuntimeDirCollection.Name)]
public sealed class WatchTests : IDisposable
{
    private readonly RuntimeDirScope _scope = new();

    public void Dispose() => _scope.Dispose();

    private static ConnectionInfo Flow(long toGuest) => new()
    {
        Id = 7, Protocol = FlowProtocol.Tcp, Direction = FlowDirection.Forwarded, State = "ESTABLISHED", Started = DateTimeOffset.UtcNow,
        GuestEndPoint = new IPEndPoint(IPAddress.Parse("10.0.2.15"), 8080), GuestPeerEndPoint = new IPEndPoint(IPAddress.Parse("10.0.2.2"), 40000),
        HostLocalEndPoint = new IPEndPoint(IPAddress.Loopback, 8080), HostRemoteEndPoint = new IPEndPoint(IPAddress.Loopback, 50000),
        BytesToGuest = toGuest, Forward = "tcp:127.0.0.1:8080:8080",
    };

    /// <summary>Runs the command until its output shows a non-zero rate after the counter moved; returns the output.</summary>
    private static async Task<string> WatchUntilRate(FakeInstance fake, params string[] args)
    {
        var output = new StringWriter();
        var synced = TextWriter.Synchronized(output);
        using var stop = new CancellationTokenSource();
        var run = Task.Run(() => EmunetCli.InvokeAsync(args, synced, TextWriter.Null, stop.Token));
        string Text() { lock (synced) return output.ToString(); }
        Wait.Until(() => run.IsCompleted || Text().Contains(EmunetCli.ClearScreen), "a first frame");
        lock (fake.Engine.Connections) fake.Engine.Connections[0] = Flow(50_000_000);
        Wait.Until(() => run.IsCompleted || Regex.IsMatch(Text(), @"[1-9]\d* [KMG]/s"), "a frame with a rate");
        stop.Cancel();
        Assert.Equal(0, await run.WaitAsync(TimeSpan.FromSeconds(10)));
        return Text();
    }

    [Fact]
    public async Task Connections_watch_redraws_with_each_flows_rate()
    {
        await using var fake = new FakeInstance("watch1");
        fake.Engine.Connections.Add(Flow(0));
        string text = await WatchUntilRate(fake, "connections", "--watch", "--interval", "0.1");
        Assert.True(Regex.Matches(text, Regex.Escape(EmunetCli.ClearScreen)).Count >= 2);
        Assert.Contains("TO GUEST/s", text);
        Assert.Contains("127.0.0.1:8080", text);
    }

    [Fact]
    public async Task Stats_watch_shows_the_rate_of_each_forward()
    {
        await using var fake = new FakeInstance("watch2");
        fake.Engine.Added.Add(ForwardSpec.Create(ForwardProtocol.Tcp, 8080));
        fake.Engine.Connections.Add(Flow(0));
        string text = await WatchUntilRate(fake, "stats", "--watch", "--interval", "0.1");
        Assert.Matches(@"tcp:127\.0\.0\.1:8080:8080\s+0\s+[1-9]\d* [KMG]/s", text);
        Assert.Contains("instance", text);
    }

    [Theory]
    [InlineData("stats", "--watch", "--json")]
    [InlineData("connections", "--watch", "--interval", "0")]
    public async Task Watch_refuses_what_it_cannot_draw(params string[] args) =>
        Assert.Equal((int)ExitCode.UsageError, (await ToolCommandTests.Cli(args)).Code);
}
