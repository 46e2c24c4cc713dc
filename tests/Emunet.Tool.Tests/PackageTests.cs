using System.Diagnostics;

namespace Emunet.Tool.Tests;

/// <summary>The tool as users get it: packed, installed with `dotnet tool install` from a local folder, run from there.</summary>
public sealed class PackageTests
{
#if DEBUG
    private const string Configuration = "Debug";
#else
    private const string Configuration = "Release";
#endif

    internal static string RepoRoot()
    {
        for (var d = new DirectoryInfo(AppContext.BaseDirectory); d is not null; d = d.Parent)
            if (File.Exists(Path.Combine(d.FullName, "Emunet.sln"))) return d.FullName;
        throw new InvalidOperationException("Emunet.sln not found above " + AppContext.BaseDirectory);
    }

    private static (int Code, string Out) Run(string file, IEnumerable<string> args, string workingDirectory, IDictionary<string, string>? env = null)
    {
        var psi = new ProcessStartInfo(file) { RedirectStandardOutput = true, RedirectStandardError = true, WorkingDirectory = workingDirectory };
        foreach (string a in args) psi.ArgumentList.Add(a);
        psi.Environment["DOTNET_NOLOGO"] = "1";
        psi.Environment["DOTNET_CLI_TELEMETRY_OPTOUT"] = "1";
        if (env is not null) foreach (var (k, v) in env) psi.Environment[k] = v;
        using var p = Process.Start(psi)!;
        var stderr = p.StandardError.ReadToEndAsync();
        string stdout = p.StandardOutput.ReadToEnd();
        if (!p.WaitForExit(180_000))
        {
            p.Kill(entireProcessTree: true);
            Assert.Fail($"{file} {string.Join(' ', args)} did not finish within 180 s");
        }
        return (p.ExitCode, stdout + stderr.Result);
    }

    /// <summary>What nuget.org shows: a license, the repository, and a README whose links work off the repository.</summary>
    private static void CheckPackageMetadata(string nupkg)
    {
        using var zip = System.IO.Compression.ZipFile.OpenRead(nupkg);
        var nuspec = System.Xml.Linq.XDocument.Load(zip.GetEntry("Emunet.Tool.nuspec")!.Open());
        var ns = nuspec.Root!.Name.Namespace;
        var metadata = nuspec.Root.Element(ns + "metadata")!;
        var license = metadata.Element(ns + "license")!;
        Assert.Equal("expression", license.Attribute("type")!.Value);
        Assert.Equal("MIT", license.Value);
        Assert.StartsWith("https://", metadata.Element(ns + "repository")!.Attribute("url")!.Value);
        Assert.StartsWith("https://", metadata.Element(ns + "projectUrl")!.Value);
        Assert.False(string.IsNullOrWhiteSpace(metadata.Element(ns + "releaseNotes")?.Value));
        Assert.Contains("qemu", metadata.Element(ns + "tags")!.Value);
        Assert.Equal("README.md", metadata.Element(ns + "readme")!.Value);
        string readme = new StreamReader(zip.GetEntry("README.md")!.Open()).ReadToEnd();
        Assert.Contains("emunet", readme);
        // Markdown links and images must be absolute: a relative one points nowhere on nuget.org.
        var relative = System.Text.RegularExpressions.Regex.Matches(readme, @"\]\((?!https://)[^)]*\)");
        Assert.True(relative.Count == 0, "relative links: " + string.Join(", ", relative.Select(m => m.Value)));
    }

    [Fact]
    public void Packed_tool_installs_and_runs()
    {
        using var tmp = new TempFolder();
        string feed = tmp.File("feed"), tools = tmp.File("tools"), config = tmp.File("nuget.config");
        string root = RepoRoot();

        var pack = Run("dotnet", ["pack", Path.Combine(root, "src/Tool/Emunet.Tool.csproj"), "-c", Configuration, "--no-build", "-o", feed], root);
        Assert.True(pack.Code == 0, pack.Out);
        Assert.True(File.Exists(Path.Combine(feed, "Emunet.Tool.0.1.0.nupkg")), pack.Out);
        CheckPackageMetadata(Path.Combine(feed, "Emunet.Tool.0.1.0.nupkg"));

        // Only the local feed, and a fresh package cache so an earlier build of the same version is never used.
        File.WriteAllText(config, $"""
            <?xml version="1.0" encoding="utf-8"?>
            <configuration><packageSources><clear /><add key="local" value="{feed}" /></packageSources></configuration>
            """);
        var env = new Dictionary<string, string> { ["NUGET_PACKAGES"] = tmp.File("packages") };
        var install = Run("dotnet", ["tool", "install", "--tool-path", tools, "--configfile", config, "Emunet.Tool", "--version", "0.1.0"], tmp.Path, env);
        Assert.True(install.Code == 0, install.Out);

        string emunet = Path.Combine(tools, "emunet");
        var version = Run(emunet, ["--version"], tmp.Path);
        Assert.Equal(0, version.Code);
        Assert.Equal("0.1.0", version.Out.Trim());

        var help = Run(emunet, ["--help"], tmp.Path);
        Assert.Equal(0, help.Code);
        Assert.Contains("emunet [command] [options]", help.Out);
        Assert.Contains("Exit codes:", help.Out);
    }
}
