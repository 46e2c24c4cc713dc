namespace Emunet.GuestRig;

/// <summary>Finds the repository root (the folder holding Emunet.sln) from wherever a test or tool runs.</summary>
public static class RepoPaths
{
    private static readonly Lazy<string> RootLazy = new(() =>
    {
        foreach (var start in new[] { AppContext.BaseDirectory, Directory.GetCurrentDirectory() })
        {
            for (var d = new DirectoryInfo(start); d is not null; d = d.Parent)
                if (File.Exists(Path.Combine(d.FullName, "Emunet.sln"))) return d.FullName;
        }
        throw new InvalidOperationException($"Cannot find the Emunet repository root (Emunet.sln) above {AppContext.BaseDirectory}.");
    });

    public static string Root => RootLazy.Value;
    public static string Build => Path.Combine(Root, "build");
}
