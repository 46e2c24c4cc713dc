namespace Emunet.Fuzz.Targets;

/// <summary>One fuzz entry point: takes one input (borrowed for the call) and returns normally for any bytes.</summary>
internal delegate void FuzzTarget(ReadOnlySpan<byte> input);

/// <summary>
/// The fuzz targets by name. AFL++ drives them through <c>Program</c>; the engine tests replay the seed corpus and
/// every saved crash through the same entry points, so a target is exercised even where AFL is not installed.
/// </summary>
internal static class FuzzTargets
{
    private static readonly (string Name, FuzzTarget Run)[] All =
    [
        ("frame", FrameTarget.Run),
        ("dhcp", WireTargets.Dhcp),
        ("dns", WireTargets.Dns),
        ("virtqueue", VirtqueueTarget.Run),
        ("control", ControlTarget.Run),
        ("vhost-user", VhostUserTarget.Run),
    ];

    public static IEnumerable<string> Names => All.Select(t => t.Name);

    public static bool TryGet(string name, out FuzzTarget target)
    {
        foreach (var t in All)
        {
            if (t.Name != name) continue;
            target = t.Run;
            return true;
        }
        target = null!;
        return false;
    }

    /// <summary>Runs <paramref name="input"/> through the target called <paramref name="name"/>.</summary>
    public static void Run(string name, ReadOnlySpan<byte> input)
    {
        if (!TryGet(name, out var target)) throw new ArgumentException($"No fuzz target '{name}'; known: {string.Join(", ", Names)}.", nameof(name));
        target(input);
    }
}

/// <summary>Thrown by a target's own checks when the engine did something it must not (an oracle, not a crash of the harness).</summary>
internal sealed class FuzzInvariantException(string message) : Exception(message);
