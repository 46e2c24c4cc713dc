using System.CommandLine;
using System.Globalization;
using System.Runtime.InteropServices;
using System.Text;
using Emunet.Engine.Control;

namespace Emunet.Tool;

/// <summary>
/// <c>--watch</c> on <c>stats</c> and <c>connections</c>: the view redrawn in place every <c>--interval</c> seconds,
/// with bytes per second each way (per instance and per forward for stats, per flow for connections), until Ctrl+C.
/// </summary>
internal static partial class EmunetCli
{
    internal const string ClearScreen = "\u001b[H\u001b[J";

    private static readonly Option<bool> WatchOption = new("--watch", "-w")
    {
        Description = "Redraw the view in place every --interval seconds, with bytes per second each way, until Ctrl+C.",
    };

    private static readonly Option<double> IntervalOption = new("--interval")
    {
        Description = "Seconds between redraws with --watch (0.1 to 3600).",
        HelpName = "SECONDS",
        DefaultValueFactory = _ => 1,
    };

    private static string? ValidateWatch(ParseResult r)
    {
        if (r.GetValue(IntervalOption) is < 0.1 or > 3600) return $"--interval {r.GetValue(IntervalOption)} is not between 0.1 and 3600 seconds.";
        if (r.GetValue(WatchOption) && r.GetValue(JsonOption)) return "--watch redraws a table; leave out --json (or poll with --json).";
        return null;
    }

    /// <summary>Draws a frame every interval until the token or SIGINT ends the watch; exit 0 then.</summary>
    private static async Task<int> WatchAsync(ParseResult r, CancellationToken token, Func<DateTimeOffset, string> frame)
    {
        using var stop = CancellationTokenSource.CreateLinkedTokenSource(token);
        using var sigint = PosixSignalRegistration.Create(PosixSignal.SIGINT, c => { c.Cancel = true; stop.Cancel(); });
        var interval = TimeSpan.FromSeconds(r.GetValue(IntervalOption));
        var output = r.InvocationConfiguration.Output;
        while (!stop.IsCancellationRequested)
        {
            var now = DateTimeOffset.UtcNow;
            string text = frame(now);
            await output.WriteAsync(ClearScreen + text).ConfigureAwait(false);
            await output.FlushAsync(CancellationToken.None).ConfigureAwait(false);
            try { await Task.Delay(interval, stop.Token).ConfigureAwait(false); }
            catch (OperationCanceledException) { break; }
        }
        return 0;
    }

    private static string Rate(double bytesPerSecond) => DisplayText.Bytes((long)bytesPerSecond) + "/s";

    private static string Header(string name, DateTimeOffset now, ParseResult r) =>
        string.Create(CultureInfo.InvariantCulture,
            $"Emunet instance '{name}' at {now.ToLocalTime():HH:mm:ss}, every {r.GetValue(IntervalOption)} s (Ctrl+C to stop)\n\n");

    /// <summary>stats --watch: the instance's rates, then each forward's (from its flows' byte counters).</summary>
    private static Task<int> WatchStatsAsync(ParseResult r, ControlClient client, CancellationToken token)
    {
        string name = Path.GetFileNameWithoutExtension(client.SocketPath);
        var instanceRates = new TrafficRates<string>();
        var forwardRates = new TrafficRates<string>();
        return WatchAsync(r, token, now =>
        {
            var s = client.Stats();
            var forwards = client.ListForwards();
            var flows = client.ListConnections();
            var total = instanceRates.Sample(now, [("", s.BytesToGuest, s.BytesFromGuest)]);
            var perForward = forwardRates.Sample(now, flows.Where(c => c.Forward is not null).Select(c => (c.Forward!, c.BytesToGuest, c.BytesFromGuest)));
            var table = new TableWriter("", "FLOWS", "TO GUEST/s", "FROM GUEST/s", "TO GUEST", "FROM GUEST");
            total.TryGetValue("", out var t);
            table.Add("instance", (s.TcpFlows + s.UdpFlows).ToString(CultureInfo.InvariantCulture), Rate(t.ToGuest), Rate(t.FromGuest),
                DisplayText.Bytes(s.BytesToGuest), DisplayText.Bytes(s.BytesFromGuest));
            foreach (var f in forwards)
            {
                perForward.TryGetValue(f.Spec, out var fr);
                var mine = flows.Where(c => c.Forward == f.Spec).ToList();
                table.Add(f.Spec, f.ActiveConnections.ToString(CultureInfo.InvariantCulture), Rate(fr.ToGuest), Rate(fr.FromGuest),
                    DisplayText.Bytes(mine.Sum(c => c.BytesToGuest)), DisplayText.Bytes(mine.Sum(c => c.BytesFromGuest)));
            }
            var text = new StringWriter();
            text.Write(Header(name, now, r));
            table.WriteTo(text);
            text.WriteLine();
            text.WriteLine(string.Create(CultureInfo.InvariantCulture, $"Drops {s.TotalDrops:N0}; capture {s.CaptureFile ?? "off"}"));
            return text.ToString();
        });
    }

    /// <summary>connections --watch: the connection table with each flow's rates.</summary>
    private static Task<int> WatchConnectionsAsync(ParseResult r, ControlClient client, CancellationToken token)
    {
        string name = Path.GetFileNameWithoutExtension(client.SocketPath);
        var rates = new TrafficRates<long>();
        return WatchAsync(r, token, now =>
        {
            var flows = client.ListConnections(r.GetValue(ProtocolFilterOption), r.GetValue(PortFilterOption), r.GetValue(StateFilterOption));
            var perFlow = rates.Sample(now, flows.Select(c => (c.Id, c.BytesToGuest, c.BytesFromGuest)));
            var table = new TableWriter("PROTO", "DIR", "GUEST", "HOST", "STATE", "TO GUEST/s", "FROM GUEST/s", "TO GUEST", "FROM GUEST", "AGE");
            foreach (var c in flows)
            {
                perFlow.TryGetValue(c.Id, out var fr);
                table.Add(c.Protocol, c.Direction == "forwarded" ? "fwd" : "out", c.Guest, c.Direction == "forwarded" ? c.HostLocal : c.HostRemote,
                    c.State, Rate(fr.ToGuest), Rate(fr.FromGuest), DisplayText.Bytes(c.BytesToGuest), DisplayText.Bytes(c.BytesFromGuest),
                    DisplayText.Age(now - c.Started));
            }
            var text = new StringWriter();
            text.Write(Header(name, now, r));
            table.WriteTo(text);
            return text.ToString();
        });
    }
}
