using System.Globalization;

namespace Emunet.Bench;

/// <summary>The command line. Full run: <c>--seconds 4</c> (default), 3 repetitions, every backend, both MTUs.</summary>
internal sealed record BenchOptions
{
    /// <summary>Seconds per iperf3 figure and per connection / request-response window.</summary>
    public int Seconds { get; init; } = 4;
    /// <summary>Each backend boots this many guests; the tables show the median (at least 3 for a real comparison).</summary>
    public int Repetitions { get; init; } = 3;
    public IReadOnlyList<string> Backends { get; init; } = ["emunet", "vhost", "slirp", "passt"];
    /// <summary>The guest's loopback, measured in the same run: what no backend can beat.</summary>
    public bool Limit { get; init; } = true;
    public IReadOnlyList<MtuMode> Modes { get; init; } = [MtuMode.Offered, MtuMode.Android];
    /// <summary>Throughput cases to run (null: all of <see cref="Cases.Throughput"/>).</summary>
    public IReadOnlySet<string>? CaseFilter { get; init; }
    /// <summary>Connections that see the guest app die, per MTU.</summary>
    public int DeathSamples { get; init; } = 5;
    /// <summary>Seconds over which the backend's idle CPU is read.</summary>
    public int IdleSeconds { get; init; } = 3;
    public bool Smoke { get; init; }
    public string OutputDir { get; init; } = "";
    public string? Capture { get; init; }
    /// <summary>A folder for QEMU's filter-dump of each guest's frames (stream, libslirp and passt backends), or null.</summary>
    public string? QemuDump { get; init; }
    /// <summary>
    /// The native engine (build/native/emunet, NativeAOT) Emunet's backends run as, or null for the dotnet tool
    /// (<c>dotnet Emunet.Tool.dll</c>). Default: the native one when scripts/setup.sh has built it.
    /// </summary>
    public string? NativeEngine { get; init; }

    /// <summary>How Emunet ran, for the table's header.</summary>
    public string EngineTitle => NativeEngine is null ? "the dotnet tool (dotnet Emunet.Tool.dll, JIT)"
        : NativeEngine == DefaultNativeEngine ? "the native engine (build/native/emunet, NativeAOT)" : $"the native engine {NativeEngine}";

    /// <summary>build/native/emunet of this checkout.</summary>
    public string? DefaultNativeEngine { get; init; }

    public const string Usage = """
        Emunet.Bench: the same guest on each backend, in one run.
          --seconds N          seconds per figure (default 4)
          --repetitions N      guests booted per backend, medians reported (default 3)
          --backends LIST      emunet,vhost,slirp,passt (default all four)
          --mtu LIST           offered,1500 (default both: the MTU each backend offers, and the guest held at 1500)
          --cases LIST         throughput cases to run (default all: g2h-1,g2h-4,h2g-1,h2g-4,fin-1,fin-4,fout-1,fout-4;
                       none: only the connection, request/response and app-death figures)
          --no-limit           skip the guest-loopback limit
          --out DIR            results folder (default build/bench)
          --capture FILE       pcap of Emunet's frames (emunet/vhost backends)
          --qemu-dump DIR      QEMU's own pcap of each guest's frames (filter-dump, first 256 bytes of each) for the
                               emunet, slirp and passt backends: the same observer for every backend, e.g. to compare
                               where a connection's time goes (its timestamps are QEMU's; the dump slows QEMU a little)
          --engine native|managed|PATH  run Emunet as build/native/emunet (NativeAOT; the default when
                               scripts/setup.sh built it), as the dotnet tool (dotnet Emunet.Tool.dll), or as the native
                               engine at PATH (another build's build/native/emunet, to compare two builds on one machine)
          --smoke              CI smoke: emunet backend, 1 repetition, 2 s, 1-stream cases, MTU offered, the limit;
                               writes build/bench/smoke and fails unless the table and JSON hold every figure
        """;

    public static BenchOptions Parse(string[] args, string buildDir)
    {
        var o = new BenchOptions();
        if (args.Contains("--smoke"))
            o = o with
            {
                Smoke = true, Seconds = 2, Repetitions = 1, Backends = ["emunet"], Modes = [MtuMode.Offered],
                CaseFilter = new HashSet<string> { "g2h-1", "h2g-1", "fin-1", "fout-1" }, DeathSamples = 2, IdleSeconds = 1,
            };
        string native = Path.Combine(buildDir, "native", "emunet");
        o = o with { OutputDir = Path.Combine(buildDir, "bench", o.Smoke ? "smoke" : ""), NativeEngine = File.Exists(native) ? native : null, DefaultNativeEngine = native };
        for (int i = 0; i < args.Length; i++)
        {
            string Next() => i + 1 < args.Length ? args[++i] : throw new ArgumentException($"{args[i]} needs a value.");
            switch (args[i])
            {
                case "--smoke": break;
                case "--seconds": o = o with { Seconds = PositiveInt(Next(), "--seconds") }; break;
                case "--repetitions": o = o with { Repetitions = PositiveInt(Next(), "--repetitions") }; break;
                case "--backends":
                    var list = Next().Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries);
                    foreach (var b in list)
                        if (!Backend.Known.Contains(b)) throw new ArgumentException($"unknown backend '{b}' ({string.Join(", ", Backend.Known)})");
                    o = o with { Backends = list };
                    break;
                case "--mtu":
                    o = o with { Modes = Next().Split(',', StringSplitOptions.TrimEntries).Select(MtuModes.Parse).ToArray() };
                    break;
                case "--cases":
                    string caseList = Next();
                    // "none": only the connection, request/response and app-death figures.
                    var cases = caseList == "none" ? [] : caseList.Split(',', StringSplitOptions.TrimEntries).ToHashSet();
                    foreach (var c in cases)
                        if (Cases.Throughput.All(t => t.Key != c)) throw new ArgumentException($"unknown case '{c}'");
                    o = o with { CaseFilter = cases };
                    break;
                case "--no-limit": o = o with { Limit = false }; break;
                case "--out": o = o with { OutputDir = Path.GetFullPath(Next()) }; break;
                case "--capture": o = o with { Capture = Path.GetFullPath(Next()) }; break;
                case "--qemu-dump": o = o with { QemuDump = Directory.CreateDirectory(Path.GetFullPath(Next())).FullName }; break;
                case "--engine":
                    o = Next() switch
                    {
                        "managed" => o with { NativeEngine = null },
                        "native" => File.Exists(native) ? o with { NativeEngine = native }
                            : throw new ArgumentException($"--engine native: {native} is not built (bash scripts/publish-native.sh, or scripts/setup.sh)."),
                        var e when e.Contains('/') && File.Exists(e) => o with { NativeEngine = Path.GetFullPath(e) },
                        var e => throw new ArgumentException($"unknown engine '{e}' (native, managed, or the path of a built build/native/emunet)"),
                    };
                    break;
                case "--help" or "-h": throw new ArgumentException(Usage);
                default: throw new ArgumentException($"unknown argument '{args[i]}'\n{Usage}");
            }
        }
        return o;
    }

    private static int PositiveInt(string s, string name) =>
        int.TryParse(s, NumberStyles.None, CultureInfo.InvariantCulture, out int v) && v > 0 ? v : throw new ArgumentException($"{name} takes a positive integer.");
}

/// <summary>The guest's MTU during a set of figures.</summary>
internal enum MtuMode
{
    /// <summary>The MTU the backend offers by DHCP (Emunet and passt 65520, libslirp 1500).</summary>
    Offered,
    /// <summary>The guest held at 1500 whatever is offered, as Android's DHCP client does.</summary>
    Android,
}

internal static class MtuModes
{
    public static MtuMode Parse(string s) => s switch
    {
        "offered" or "65520" => MtuMode.Offered,
        "1500" or "android" => MtuMode.Android,
        _ => throw new ArgumentException($"unknown MTU mode '{s}' (offered, 1500)"),
    };

    public static string Name(this MtuMode m) => m == MtuMode.Offered ? "offered" : "1500";
    public static string Title(this MtuMode m) => m == MtuMode.Offered ? "MTU offered by the backend" : "guest held at MTU 1500 (as Android)";
}
