using Emunet.Fuzz;
using Emunet.Fuzz.Targets;

namespace Emunet.Engine.Tests.Fuzz;

/// <summary>
/// The fuzz targets (tests/Emunet.Fuzz) without AFL: every seed of the corpus and every saved crashing input
/// (tests/Emunet.Fuzz/crashes/TARGET/, found by AFL or written against a target's input format) runs through the same
/// entry point the fuzzer drives, and must return without an exception. An input that shows an engine bug not yet
/// fixed has its own skipped test naming the bug.
/// </summary>
public sealed class FuzzRegressionTests
{
    private static readonly string Inputs = Path.Combine(AppContext.BaseDirectory, "fuzz");

    /// <summary>(kind, target, file name) for every saved input: kind is "corpus" or "crashes".</summary>
    public static TheoryData<string, string, string> SavedInputs()
    {
        var data = new TheoryData<string, string, string>();
        foreach (string kind in new[] { "corpus", "crashes" })
        {
            string folder = Path.Combine(Inputs, kind);
            if (!Directory.Exists(folder)) continue;
            foreach (string file in Directory.EnumerateFiles(folder, "*", SearchOption.AllDirectories).Order(StringComparer.Ordinal))
            {
                string target = Path.GetFileName(Path.GetDirectoryName(file)!);
                string name = Path.GetFileName(file);
                if (!KnownEngineBugs.ContainsKey($"{kind}/{target}/{name}")) data.Add(kind, target, name);
            }
        }
        return data;
    }

    /// <summary>Saved crashes that show an engine bug still open, by path under fuzz/, with the bug each shows.</summary>
    private static readonly Dictionary<string, string> KnownEngineBugs = new()
    {
    };

    private const string RxFrameRewritesAvailIndex = "crashes/vhost-user/rx-frame-rewrites-avail-index";

    [Theory]
    [MemberData(nameof(SavedInputs))]
    public void Saved_input_runs_through_its_target_without_an_exception(string kind, string target, string name)
    {
        FuzzTargets.Run(target, File.ReadAllBytes(Path.Combine(Inputs, kind, target, name)));
    }

    /// <summary>
    /// A guest whose receive queue (32768 entries, base 40000) has one 2-byte writable buffer lying over avail->idx, and
    /// a 65534-byte frame for it whose bytes set that index one past each chain taken: the guest chose where its buffers
    /// lie, so the ring can change while the device writes them. (Written by hand from the vhost-user target's input
    /// format, after reading DeliverFrame; AFL had not reached it in 4 minutes with 64 KiB of guest memory.)
    /// </summary>
    [Fact]
    public void Receive_buffer_over_the_available_index_does_not_end_the_engine()
    {
        FuzzTargets.Run("vhost-user", File.ReadAllBytes(Path.Combine(Inputs, RxFrameRewritesAvailIndex)));
    }

    [Fact]
    public void Every_target_has_seeds()
    {
        foreach (string target in FuzzTargets.Names)
        {
            string folder = Path.Combine(Inputs, "corpus", target);
            Assert.True(Directory.Exists(folder) && Directory.EnumerateFiles(folder).Any(), $"No seed corpus for the {target} target.");
        }
    }

    [Fact]
    public void Committed_corpus_is_what_the_seed_writer_makes()
    {
        // The seeds follow the input formats; after a format change, `Emunet.Fuzz --write-seeds corpus` remakes them.
        foreach (var (target, name, input) in Seeds.All())
            Assert.True(input.AsSpan().SequenceEqual(File.ReadAllBytes(Path.Combine(Inputs, "corpus", target, name))),
                $"corpus/{target}/{name} differs from what Seeds writes.");
    }
}
