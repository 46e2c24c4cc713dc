using System.Text.Json;

namespace Emunet.Tool.Tests;

/// <summary><c>emunet reverse</c> (guest-to-host remaps) against a real engine: add in every form, list, remove, errors and exit codes.</summary>
[Collection(RuntimeDirCollection.Name)]
public sealed class ReverseCommandTests : IDisposable
{
    private readonly RuntimeDirScope _scope = new();

    public void Dispose() => _scope.Dispose();

    private static Task<(int Code, string Out, string Err)> Cli(params string[] args) => ToolCommandTests.Cli(args);

    [Fact]
    public async Task Remaps_are_added_listed_and_removed_at_run_time()
    {
        await using var run = new ToolCommandTests.RunningTool("rev", "--socket", _scope.Scratch("rev.dev"), "--reverse", "tcp:7000:7001");

        var add = await Cli("reverse", "add", "tcp:8000:9000");
        Assert.True(add.Code == 0, add.Err);
        Assert.Contains("tcp 10.0.2.2:8000 -> host 127.0.0.1:9000", add.Out);
        var adb = await Cli("reverse", "add", "tcp:8001", "tcp:9001", "--json");
        Assert.True(adb.Code == 0, adb.Err);
        var json = JsonDocument.Parse(adb.Out).RootElement;
        Assert.Equal(8001, json.GetProperty("guestPort").GetInt32());
        Assert.Equal(9001, json.GetProperty("hostPort").GetInt32());
        Assert.Equal("127.0.0.1", json.GetProperty("hostAddress").GetString());
        Assert.Equal(0, (await Cli("reverse", "add", "guestfwd=tcp:10.0.2.100:80-127.0.0.1:9002")).Code);
        Assert.Equal(0, (await Cli("reverse", "add", "udp:53530:localhost:9003")).Code);

        var list = JsonDocument.Parse((await Cli("reverse", "list", "--json")).Out).RootElement.EnumerateArray()
            .Select(e => $"{e.GetProperty("protocol").GetString()} {e.GetProperty("guestAddress").GetString()}:{e.GetProperty("guestPort").GetInt32()}->{e.GetProperty("hostAddress").GetString()}:{e.GetProperty("hostPort").GetInt32()}")
            .ToList();
        Assert.Equal(["tcp 10.0.2.2:7000->127.0.0.1:7001", "tcp 10.0.2.2:8000->127.0.0.1:9000", "tcp 10.0.2.2:8001->127.0.0.1:9001",
            "udp 10.0.2.2:53530->127.0.0.1:9003", "tcp 10.0.2.100:80->127.0.0.1:9002"], list);
        var table = await Cli("reverse", "list");
        Assert.Contains("GUEST SIDE", table.Out);
        Assert.Contains("10.0.2.100:80", table.Out);

        // The same guest side twice: Conflict, naming where it goes now.
        var twice = await Cli("reverse", "add", "tcp:8000:9999");
        Assert.Equal((int)ExitCode.Conflict, twice.Code);
        Assert.Contains("127.0.0.1:9000", twice.Err);
        // The guest's own address and the DNS relay's cannot be remapped: usage errors that name them.
        var own = await Cli("reverse", "add", "guestfwd=tcp:10.0.2.15:80-127.0.0.1:1");
        Assert.Equal((int)ExitCode.UsageError, own.Code);
        Assert.Contains("guest's own address", own.Err);

        Assert.Equal(0, (await Cli("reverse", "remove", "8000")).Code);
        Assert.Equal(0, (await Cli("reverse", "remove", "tcp:10.0.2.100:80")).Code);
        Assert.Equal(0, (await Cli("reverse", "remove", "udp:53530")).Code);
        var missing = await Cli("reverse", "remove", "8000");
        Assert.Equal((int)ExitCode.NotFound, missing.Code);
        Assert.Contains("reverse list", missing.Err);
        var all = await Cli("reverse", "remove", "--all", "--json");
        Assert.Equal(0, all.Code);
        Assert.Equal(2, JsonDocument.Parse(all.Out).RootElement.GetArrayLength());
        Assert.Empty(JsonDocument.Parse((await Cli("reverse", "list", "--json")).Out).RootElement.EnumerateArray());
    }

    [Theory]
    [InlineData("tcp:0:9000", "guest port '0'")]
    [InlineData("tcp:8000:70000", "host port '70000'")]
    [InlineData("sctp:8000", "tcp: or udp:")]
    [InlineData("tcp:8000:example.com:80", "not an IPv4 address")]
    [InlineData("guestfwd=udp:10.0.2.100:80-127.0.0.1:1", "TCP only")]
    [InlineData("guestfwd=tcp:10.0.2.100:80", "both sides")]
    public async Task A_bad_spec_is_a_usage_error_before_any_instance_is_looked_for(string spec, string message)
    {
        var (code, _, err) = await Cli("reverse", "add", spec);   // no instance runs
        Assert.Equal((int)ExitCode.UsageError, code);
        Assert.Contains(message, err);
    }

    [Fact]
    public async Task Adb_form_needs_matching_protocols_and_run_rejects_a_bad_reverse()
    {
        var mismatch = await Cli("reverse", "add", "tcp:8000", "udp:9000");
        Assert.Equal((int)ExitCode.UsageError, mismatch.Code);
        Assert.Contains("guest side's protocol", mismatch.Err);
        var run = await Cli("run", "--socket", _scope.Scratch("bad.dev"), "--reverse", "tcp:8000:0");
        Assert.Equal((int)ExitCode.UsageError, run.Code);
        Assert.Contains("--reverse", run.Err);
    }
}
