using System.Diagnostics;
using System.Globalization;
using System.Text;
using System.Text.Json;

namespace Emunet.Bench;

/// <summary>
/// Writes a run's results: results.md (one table per MTU mode with ratios Emunet/peer and Emunet/limit, and a table of
/// per-guest figures), results.json (machine, options, medians with their spread, every sample) and chart.png.
/// </summary>
internal static class Report
{
    private static readonly CultureInfo Inv = CultureInfo.InvariantCulture;

    public static string Short(string backend) => backend switch
    {
        "emunet" => "stream",
        Backend.LimitName => "limit",
        _ => backend,
    };

    public static string Markdown(BenchOptions o, ResultSet r, Machine machine)
    {
        var ours = o.Backends.Where(Backend.IsEmunet).ToArray();
        var peers = o.Backends.Where(b => !Backend.IsEmunet(b)).ToArray();
        var sb = new StringBuilder();
        sb.AppendLine(CultureInfo.InvariantCulture, $"{machine.Date:yyyy-MM-dd HH:mm} UTC, {machine.Describe()}.");
        sb.AppendLine(CultureInfo.InvariantCulture, $"Median of {o.Repetitions} guest boot(s) per backend, backend order rotated per repetition; {o.Seconds} s per figure; TCG guest, 1 vCPU, virtio-net-pci (vhost-user: vectors=0).");
        sb.AppendLine(CultureInfo.InvariantCulture, $"Emunet ran as {o.EngineTitle}.");
        sb.AppendLine("Ratios are Emunet's figure divided by the peer's (or the limit's): above 1 is better for rates, below 1 for times, CPU and memory.");
        sb.AppendLine("The limit is iperf3 with both ends on the guest's own loopback (no backend, no checksums).");
        foreach (var mode in o.Modes)
        {
            var throughput = Cases.Throughput.Where(c => o.CaseFilter is null || o.CaseFilter.Contains(c.Key));
            sb.AppendLine();
            sb.AppendLine(CultureInfo.InvariantCulture, $"### {mode.Title()}");
            sb.AppendLine();
            var cols = new List<string> { "figure", "unit" };
            if (o.Limit) cols.Add(Backend.Title(Backend.LimitName));
            cols.AddRange(o.Backends.Select(Backend.Title));
            foreach (var a in ours) foreach (var p in peers) cols.Add($"{Short(a)}/{Short(p)}");
            if (o.Limit) foreach (var a in ours) cols.Add($"{Short(a)}/limit");
            sb.AppendLine("| " + string.Join(" | ", cols) + " |");
            sb.AppendLine("|" + string.Concat(cols.Select((_, i) => i < 2 ? "---|" : "---:|")));
            foreach (var m in Cases.PerMtu(throughput))
            {
                var row = new List<string> { m.Title, m.Unit };
                Summary? limit = m.LimitKey is null ? null : r.Get(Backend.LimitName, mode.Name(), m.LimitKey);
                if (o.Limit) row.Add(m.Key == "mtu" ? Cell(r.Get(Backend.LimitName, mode.Name(), "mtu"), m) : Cell(limit, m));
                row.AddRange(o.Backends.Select(b => Cell(r.Get(b, mode.Name(), m.Key), m)));
                bool ratios = m.Better != Better.None;
                foreach (var a in ours)
                    foreach (var p in peers)
                        row.Add(ratios ? Ratio(r.Get(a, mode.Name(), m.Key), r.Get(p, mode.Name(), m.Key)) : "");
                if (o.Limit)
                    foreach (var a in ours)
                        row.Add(Ratio(r.Get(a, mode.Name(), m.Key), limit));
                sb.AppendLine("| " + string.Join(" | ", row) + " |");
            }
        }
        sb.AppendLine();
        sb.AppendLine("### Per guest (both MTUs)");
        sb.AppendLine();
        var gcols = new List<string> { "figure", "unit" };
        gcols.AddRange(o.Backends.Select(Backend.Title));
        foreach (var a in ours) foreach (var p in peers) gcols.Add($"{Short(a)}/{Short(p)}");
        sb.AppendLine("| " + string.Join(" | ", gcols) + " |");
        sb.AppendLine("|" + string.Concat(gcols.Select((_, i) => i < 2 ? "---|" : "---:|")));
        foreach (var m in Cases.PerGuest)
        {
            var row = new List<string> { m.Title, m.Unit };
            row.AddRange(o.Backends.Select(b => b == "slirp" ? "in QEMU" : Cell(r.Get(b, null, m.Key), m)));
            foreach (var a in ours) foreach (var p in peers) row.Add(Ratio(r.Get(a, null, m.Key), r.Get(p, null, m.Key)));
            sb.AppendLine("| " + string.Join(" | ", row) + " |");
        }
        sb.AppendLine();
        sb.AppendLine("libslirp runs inside QEMU: its CPU and memory cannot be told apart from the emulated guest's. gvisor-tap-vsock is not measured: it is not packaged for Debian here.");
        foreach (var e in r.Errors) sb.AppendLine(CultureInfo.InvariantCulture, $"\n**Failed:** {e}");
        return sb.ToString();
    }

    private static string Cell(Summary? s, Metric m) => s is null ? "–" : s.Median.ToString(m.Format, Inv);

    private static string Ratio(Summary? a, Summary? b) =>
        a is null || b is null || b.Median == 0 ? "" : (a.Median / b.Median).ToString("0.00", Inv) + "×";

    public static string Json(BenchOptions o, ResultSet r, Machine machine)
    {
        var medians = new Dictionary<string, Dictionary<string, Dictionary<string, Summary>>>();
        foreach (var g in r.Samples.GroupBy(s => s.Mode ?? "guest"))
        {
            var byBackend = medians[g.Key] = new();
            foreach (var b in g.GroupBy(s => s.Backend))
                byBackend[b.Key] = b.Select(s => s.Metric).Distinct().ToDictionary(k => k, k => r.Get(b.Key, g.Key == "guest" ? null : g.Key, k)!);
        }
        var doc = new
        {
            machine,
            options = new { o.Seconds, o.Repetitions, o.Backends, limit = o.Limit, modes = o.Modes.Select(m => m.Name()), cases = o.CaseFilter, o.Smoke,
                engine = o.NativeEngine is null ? "managed" : "native" },
            metrics = Cases.PerMtu(Cases.Throughput).Concat(Cases.PerGuest).Concat(Cases.Limit.Select(c => new Metric(c.Key, c.Title, "Mbit/s", Better.Higher, "0")))
                .Select(m => new { m.Key, m.Title, m.Unit, better = m.Better.ToString().ToLowerInvariant(), limit = m.LimitKey }),
            medians,
            samples = r.Samples,
            errors = r.Errors,
        };
        return JsonSerializer.Serialize(doc, new JsonSerializerOptions
        {
            WriteIndented = true, PropertyNamingPolicy = JsonNamingPolicy.CamelCase,
            Encoder = System.Text.Encodings.Web.JavaScriptEncoder.UnsafeRelaxedJsonEscaping, // a file, not HTML: keep → and + readable
        });
    }
}

/// <summary>The machine a run was made on, as the README states it beside the table.</summary>
internal sealed record Machine(DateTime Date, string Cpu, int Cores, string Kernel, string Qemu, string Passt, string LoadAtStart)
{
    public static Machine Describe(DateTime date) => new(
        date,
        File.ReadLines("/proc/cpuinfo").FirstOrDefault(l => l.StartsWith("model name", StringComparison.Ordinal))?.Split(':', 2)[1].Trim() ?? "unknown CPU",
        Environment.ProcessorCount,
        File.ReadAllText("/proc/sys/kernel/osrelease").Trim(),
        FirstLine("qemu-system-x86_64", "--version"),
        FirstLine("dpkg-query", "-W", "-f=${Version}", "passt"),
        File.ReadAllText("/proc/loadavg").Split(' ')[0]);

    public string Describe() => $"{Cores} cores ({Cpu}), Linux {Kernel}, {Qemu}, passt {Passt}, load {LoadAtStart} at start";

    private static string FirstLine(string program, params string[] args)
    {
        try
        {
            var psi = new ProcessStartInfo(program) { RedirectStandardOutput = true, RedirectStandardError = true };
            foreach (var a in args) psi.ArgumentList.Add(a);
            using var p = Process.Start(psi)!;
            string s = p.StandardOutput.ReadToEnd();
            p.WaitForExit();
            return s.Split('\n')[0].Trim();
        }
        catch (System.ComponentModel.Win32Exception) { return "not installed"; }
    }
}
