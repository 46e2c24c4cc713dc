using Emunet.Bench;
using Emunet.GuestRig;

// Emunet's benchmark: the same guest, in one run, on Emunet's stream and vhost-user links, libslirp and Debian's passt,
// and on its own loopback (the limit). For each repetition the backend order rotates; each backend boots a guest and
// is measured at the MTU it offers and with the guest held at 1500 (the order of the two alternates per repetition):
// iperf3 1 and 4 streams both ways to a host server and both ways through a port forward, short connections and
// 1-byte request/response through a forward into the guest's connserver, the time until a host client sees a killed
// guest app, backend CPU per GiB, idle CPU and peak RSS. Writes results.md, results.json and chart.png to build/bench.
// Full run: dotnet run --project tests/Emunet.Bench -c Release    (--help for options; --smoke for CI)
BenchOptions o;
try
{
    o = BenchOptions.Parse(args, RepoPaths.Build);
}
catch (ArgumentException e)
{
    Console.Error.WriteLine(e.Message);
    return 2;
}

var machine = Machine.Describe(DateTime.UtcNow);
var results = new ResultSet();
var lineup = new List<string>(o.Backends);
if (o.Limit) lineup.Add(Backend.LimitName);
Console.Error.WriteLine($"bench: {machine.Describe()}; Emunet runs as {o.EngineTitle}");
for (int rep = 0; rep < o.Repetitions; rep++)
{
    // Interleaved: each repetition starts one backend later, so no backend always runs first or last.
    var order = lineup.Skip(rep % lineup.Count).Concat(lineup.Take(rep % lineup.Count)).ToArray();
    var modes = rep % 2 == 0 ? o.Modes : o.Modes.Reverse().ToArray();
    foreach (var backend in order)
    {
        Console.Error.WriteLine($"bench: repetition {rep + 1}/{o.Repetitions}, {backend} ({string.Join(", ", modes.Select(m => m.Name()))})...");
        try
        {
            using var session = await GuestSession.StartAsync(o, backend);
            await session.MeasureIdleAsync(results, rep);
            foreach (var mode in modes) await session.MeasureAsync(mode, results, rep);
            session.RecordPeakRss(results, rep);
        }
        catch (Exception e) when (e is InvalidOperationException or TimeoutException or IOException or System.Net.Sockets.SocketException or OperationCanceledException)
        {
            string first = e.Message.Split('\n')[0];
            Console.Error.WriteLine($"bench: {backend} failed in repetition {rep + 1}: {e}");
            results.AddError($"{Backend.Title(backend)}, repetition {rep + 1}: {first}");
        }
    }
}

Directory.CreateDirectory(o.OutputDir);
string md = Report.Markdown(o, results, machine);
string mdPath = Path.Combine(o.OutputDir, "results.md"), jsonPath = Path.Combine(o.OutputDir, "results.json"), pngPath = Path.Combine(o.OutputDir, "chart.png");
File.WriteAllText(mdPath, md);
File.WriteAllText(jsonPath, Report.Json(o, results, machine));
Chart.Write(o, results, machine, pngPath);
Console.WriteLine(md);
Console.Error.WriteLine($"bench: wrote {mdPath}, {jsonPath}, {pngPath}");
if (!o.Smoke) return results.Errors.Count == 0 ? 0 : 1;

// The smoke run proves the benchmark still runs end to end, not how fast: every figure of the run is there.
var missing = new List<string>();
foreach (var b in o.Backends)
    foreach (var mode in o.Modes)
        foreach (var m in Cases.PerMtu(Cases.Throughput.Where(c => o.CaseFilter!.Contains(c.Key))))
            if (results.Get(b, mode.Name(), m.Key) is null) missing.Add($"{b}/{mode.Name()}/{m.Key}");
foreach (var b in o.Backends)
    foreach (var m in Cases.PerGuest)
        if (results.Get(b, null, m.Key) is null) missing.Add($"{b}/{m.Key}");
if (o.Limit && results.Get(Backend.LimitName, o.Modes[0].Name(), "loop-1") is null) missing.Add("limit/loop-1");
bool ok = missing.Count == 0 && results.Errors.Count == 0 && File.Exists(mdPath) && new FileInfo(jsonPath).Length > 0 && new FileInfo(pngPath).Length > 0;
if (!ok) Console.Error.WriteLine($"bench smoke: missing {string.Join(", ", missing)}; errors: {string.Join("; ", results.Errors)}");
Console.WriteLine($"Bench: {(ok ? 1 : 0)} passed, {(ok ? 0 : 1)} failed");
return ok ? 0 : 1;
