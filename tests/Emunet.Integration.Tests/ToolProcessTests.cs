using System.Diagnostics;
using System.Text;
using Emunet.GuestRig;

namespace Emunet.Integration.Tests;

/// <summary>
/// The `emunet` tool as users run it — its own process — with QEMU command lines as a user writes them by hand.
/// </summary>
public sealed class ToolProcessTests
{
    /// <summary>The built tool (same configuration as this test assembly), for tests that run it as its own process.</summary>
    internal static string ToolDll
    {
        get
        {
            // Same configuration as this test assembly (bin/Debug or bin/Release).
            var config = new DirectoryInfo(AppContext.BaseDirectory.TrimEnd('/')).Parent!.Name;
            var dll = Path.Combine(RepoPaths.Root, "src", "Tool", "bin", config, "net10.0", "Emunet.Tool.dll");
            Assert.True(File.Exists(dll), $"build the tool first: {dll}");
            return dll;
        }
    }

    private static Process StartTool(string runtimeDir, params string[] args)
    {
        var psi = new ProcessStartInfo("dotnet") { RedirectStandardOutput = true, RedirectStandardError = true, RedirectStandardInput = true };
        psi.ArgumentList.Add(ToolDll);
        foreach (var a in args) psi.ArgumentList.Add(a);
        psi.Environment["EMUNET_RUNTIME_DIR"] = runtimeDir;
        return Process.Start(psi)!;
    }

    [Fact]
    public Task Emunet_run_serves_a_hand_written_qemu_netdev_stream_line_and_stops_cleanly_on_SIGTERM() =>
        RunServesHandWrittenLine("--socket", "handwritten", "Emulator attached",
            // Exactly what the README tells a user to add to their QEMU command line.
            sock => ["-netdev", $"stream,id=n0,server=off,addr.type=unix,addr.path={sock}", "-device", "virtio-net-pci,netdev=n0"]);

    [Fact]
    public Task Emunet_run_vhost_user_serves_a_hand_written_qemu_vhost_user_line_and_stops_cleanly_on_SIGTERM() =>
        RunServesHandWrittenLine("--vhost-user", "vhost", "vhost-user front-end attached",
            // The tool's QEMU hint with the guest's RAM size filled in (vectors=0 under TCG: see GuestNetwork.VhostUser).
            sock =>
            [
                "-object", "memory-backend-memfd,id=mem,size=512M,share=on", "-numa", "node,memdev=mem",
                "-chardev", $"socket,id=c0,path={sock}", "-netdev", "vhost-user,id=n0,chardev=c0", "-device", "virtio-net-pci,netdev=n0,vectors=0",
            ],
            hint: sock => $"-chardev socket,id=c0,path={sock} -netdev vhost-user,id=n0,chardev=c0");

    private static async Task RunServesHandWrittenLine(string deviceOption, string name, string attachedLog, Func<string, string[]> userLine, Func<string, string>? hint = null)
    {
        using var http = new LoopbackHttpServer();
        http.Serve("/", "hello through emunet run\n"u8.ToArray());
        var dir = Directory.CreateTempSubdirectory("emunet-tool-").FullName;
        var sock = Path.Combine(dir, "emu.sock");
        using var tool = StartTool(Path.Combine(dir, "run"), "run", deviceOption, sock, "--name", name, "--log-level", "Information");
        var stderr = new StringBuilder();
        var started = new TaskCompletionSource();
        tool.ErrorDataReceived += (_, e) =>
        {
            if (e.Data is null) return;
            lock (stderr) stderr.AppendLine(e.Data);
            if (e.Data.Contains("started on")) started.TrySetResult();
        };
        tool.BeginErrorReadLine();
        try
        {
            await started.Task.WaitAsync(TimeSpan.FromSeconds(30));
            Assert.True(File.Exists(sock));

            var result = await QemuGuest.RunAsync(new GuestOptions
            {
                NetworkArgs = userLine(sock),
                MemoryMb = 512,
                Script = $"wget -q -O - http://10.0.2.2:{http.Port}/",
            });
            Assert.True(result.ExitCode == 0, result.ToString());
            Assert.Contains("hello through emunet run", result.Output);

            Assert.Equal(0, kill(tool.Id, 15));
            Assert.True(tool.WaitForExit(15000), "emunet run did not stop on SIGTERM");
            Assert.Equal(0, tool.ExitCode);
            Assert.False(File.Exists(sock), "the device socket was left behind");
            Assert.False(File.Exists(Path.Combine(dir, "run", name + ".sock")), "the control socket was left behind");
            lock (stderr)
            {
                Assert.Contains(attachedLog, stderr.ToString());
                if (hint is not null) Assert.Contains(hint(sock), stderr.ToString());
            }
        }
        finally
        {
            if (!tool.HasExited) tool.Kill(true);
            Directory.Delete(dir, true);
        }
    }

    [Fact]
    public async Task Emunet_launch_runs_qemu_on_a_fresh_engine_with_a_forward_and_returns_its_exit_code()
    {
        using var http = new LoopbackHttpServer();
        http.Serve("/", "launched\n"u8.ToArray());
        var (guestDir, qemuArgs) = QemuGuest.PrepareCommandLine(new GuestOptions
        {
            NetworkArgs = [],
            // isa-debug-exit: a byte v written to port 0xf4 makes QEMU exit with (v << 1) | 1; 2 gives 5.
            Script = $"wget -q -O - http://10.0.2.2:{http.Port}/; printf '\\002' | dd of=/dev/port bs=1 seek=244 count=1 2>/dev/null",
        });
        qemuArgs.AddRange(["-device", "isa-debug-exit,iobase=0xf4,iosize=0x04"]);
        var runtime = Directory.CreateTempSubdirectory("emunet-launch-").FullName;
        try
        {
            using var tool = StartTool(runtime, ["launch", "--name", "launched", "--forward", "tcp:0:22", "--", "qemu-system-x86_64", .. qemuArgs]);
            var stdout = tool.StandardOutput.ReadToEndAsync();
            var stderr = tool.StandardError.ReadToEndAsync();
            if (!tool.WaitForExit(120_000))
            {
                tool.Kill(true);
                Assert.Fail("emunet launch did not finish");
            }
            var output = await stdout;
            Assert.True(tool.ExitCode == 5, $"exit {tool.ExitCode}\n{output}\n{await stderr}");
            Assert.Contains("launched", output);
            Assert.Empty(Directory.GetFiles(runtime, "*.sock", SearchOption.AllDirectories));
        }
        finally
        {
            Directory.Delete(guestDir, true);
            Directory.Delete(runtime, true);
        }
    }

    [System.Runtime.InteropServices.DllImport("libc", SetLastError = true)]
    private static extern int kill(int pid, int signal);
}
