using System.Diagnostics;

namespace Emunet.GuestRig;

/// <summary>The test guest built by tests/guest/build-guest.sh (kernel + initramfs), built on first use when missing or stale.</summary>
public sealed class GuestImage
{
    private static readonly object Gate = new();
    private static GuestImage? _instance;

    public string Kernel { get; }
    public string Initramfs { get; }

    private GuestImage(string kernel, string initramfs)
    {
        Kernel = kernel;
        Initramfs = initramfs;
    }

    /// <summary>Runs the build script (quick when up to date) once per process and returns the image.</summary>
    public static GuestImage Ensure()
    {
        lock (Gate)
        {
            if (_instance is not null) return _instance;
            var script = Path.Combine(RepoPaths.Root, "tests", "guest", "build-guest.sh");
            var psi = new ProcessStartInfo("bash", [script]) { RedirectStandardOutput = true, RedirectStandardError = true };
            using var p = Process.Start(psi) ?? throw new InvalidOperationException("Cannot start bash to build the test guest.");
            var stdout = p.StandardOutput.ReadToEndAsync();
            var stderr = p.StandardError.ReadToEndAsync();
            if (!p.WaitForExit(TimeSpan.FromMinutes(5)))
            {
                p.Kill(true);
                throw new TimeoutException("Building the test guest took over 5 minutes.");
            }
            if (p.ExitCode != 0)
                throw new InvalidOperationException($"tests/guest/build-guest.sh failed ({p.ExitCode}): {stderr.Result}{stdout.Result}");
            var dir = Path.Combine(RepoPaths.Build, "guest");
            _instance = new GuestImage(Path.Combine(dir, "vmlinuz"), Path.Combine(dir, "initramfs.cpio"));
            return _instance;
        }
    }
}
