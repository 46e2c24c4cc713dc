using ScottPlot;

namespace Emunet.Bench;

/// <summary>
/// chart.png: every throughput figure (median Mbit/s), grouped by case and MTU mode, one bar per backend and one for
/// the guest-loopback limit of the same stream count.
/// </summary>
internal static class Chart
{
    public static void Write(BenchOptions o, ResultSet r, Machine machine, string path)
    {
        var series = new List<string>();
        if (o.Limit) series.Add(Backend.LimitName);
        series.AddRange(o.Backends);
        var palette = new ScottPlot.Palettes.Category10();
        var plot = new Plot();
        var bars = new List<Bar>();
        var ticks = new List<Tick>();
        double x = 0;
        double width = 0.8 / series.Count;
        var cases = Cases.Throughput.Where(c => o.CaseFilter is null || o.CaseFilter.Contains(c.Key)).ToArray();
        foreach (var mode in o.Modes)
        {
            foreach (var c in cases)
            {
                for (int i = 0; i < series.Count; i++)
                {
                    var s = series[i] == Backend.LimitName ? r.Get(Backend.LimitName, mode.Name(), c.LimitKey) : r.Get(series[i], mode.Name(), c.Key);
                    if (s is null) continue;
                    bars.Add(new Bar
                    {
                        Position = x + (i - (series.Count - 1) / 2.0) * width,
                        Value = s.Median,
                        ValueBase = 0,
                        Size = width * 0.95,
                        FillColor = palette.GetColor(i),
                        Error = 0,
                    });
                }
                ticks.Add(new Tick(x, $"{c.Key}\n{(mode == MtuMode.Offered ? "offered" : "MTU 1500")}", true));
                x += 1;
            }
            x += 0.5; // a gap between the MTU modes
        }
        plot.Add.Bars(bars);
        plot.Axes.Bottom.TickGenerator = new ScottPlot.TickGenerators.NumericManual(ticks.ToArray());
        plot.Axes.Margins(bottom: 0);
        for (int i = 0; i < series.Count; i++)
            plot.Legend.ManualItems.Add(new LegendItem { LabelText = Backend.Title(series[i]), FillColor = palette.GetColor(i) });
        plot.ShowLegend(Alignment.UpperRight);
        plot.Title($"Emunet benchmark, median Mbit/s ({machine.Date:yyyy-MM-dd}, {machine.Cores} cores, TCG guest)");
        plot.YLabel("Mbit/s");
        plot.SavePng(path, Math.Max(900, 90 * ticks.Count + 200), 600);
    }
}
