using System.Diagnostics;
using System.Net;
using System.Net.Sockets;
using System.Text;
using System.Text.Json;
using Emunet.Engine.Control;
using Emunet.GuestRig;

namespace Emunet.Integration.Tests;

/// <summary>
/// <c>emunet forward add --wait</c> against the real guest, tool and engine as their own processes: it keeps probing
/// while the app in the guest does not listen, returns once it does (and the forward then reaches the app), and gives
/// up with GuestNotReady (exit 12) at its timeout when the app never listens, the forward kept.
/// </summary>
public sealed class ForwardWaitGuestTests
{
    private static readonly TimeSpan Step = TimeSpan.FromSeconds(120);

    private static Process StartTool(string runtime, params string[] args)
    {
        var psi = new ProcessStartInfo("dotnet") { RedirectStandardOutput = true, RedirectStandardError = true, RedirectStandardInput = true };
        psi.ArgumentList.Add(ToolProcessTests.ToolDll);
        foreach (var a in args) psi.ArgumentList.Add(a);
        psi.Environment["EMUNET_RUNTIME_DIR"] = runtime;
        return Process.Start(psi)!;
    }

    private static async Task<(int Code, string Out, string Err)> FinishAsync(Process p, TimeSpan timeout)
    {
        var stdout = p.StandardOutput.ReadToEndAsync();
        var stderr = p.StandardError.ReadToEndAsync();
        using var cts = new CancellationTokenSource(timeout);
        try { await p.WaitForExitAsync(cts.Token); }
        catch (OperationCanceledException)
        {
            p.Kill(true);
            Assert.Fail($"the tool did not finish within {timeout}: {await stderr}");
        }
        return (p.ExitCode, await stdout, await stderr);
    }

    [Fact]
    public async Task Forward_add_wait_returns_once_the_guest_app_listens_and_times_out_cleanly_when_it_never_does()
    {
        var runtime = Directory.CreateTempSubdirectory("emunet-wait-").FullName;
        string device = Path.Combine(runtime, "guest.dev");
        using var run = StartTool(runtime, "run", "--name", "waitguest", "--socket", device, "--log-level", "Warning");
        try
        {
            await LoopbackPorts.WaitSocketFileAsync(Path.Combine(runtime, "waitguest.sock"), Step);
            using var control = new GuestControl();
            using var guest = QemuGuest.Start(new GuestOptions
            {
                NetworkArgs = GuestNetwork.StreamUnix(device),
                Script = $"""
                    echo ready
                    {control.WaitLine}
                    socat TCP-LISTEN:8090,reuseaddr,fork SYSTEM:'echo app-up' &
                    {control.WaitLine}
                    echo "got $cmd"
                    """,
            });
            await guest.WaitForLineAsync(l => l == "ready", Step);

            // Nothing ever listens on 8091: a clean give-up at the timeout, the forward kept.
            var never = await FinishAsync(StartTool(runtime, "forward", "add", "tcp:0:8091", "--wait", "--timeout", "3"), Step);
            Assert.Equal(12, never.Code);
            Assert.Contains("did not accept on port 8091 within 3 s", never.Err);

            using var wait = StartTool(runtime, "forward", "add", "tcp:0:8090", "--wait", "--timeout", "120", "--json");
            var waited = FinishAsync(wait, Step * 2);
            using (var client = ControlClient.Connect(Path.Combine(runtime, "waitguest.sock"), TimeSpan.FromSeconds(10)))
            {
                var deadline = DateTime.UtcNow + Step;
                while (!client.ListForwards().Any(f => f.GuestPort == 8090))
                {
                    Assert.True(DateTime.UtcNow < deadline, "the forward to 8090 never appeared");
                    await Task.Delay(50);
                }
                Assert.Contains(client.ListForwards(), f => f.GuestPort == 8091);
            }
            Assert.False(waited.IsCompleted, "--wait returned before the guest app listened");

            await control.SendAsync("start", Step);
            var (code, output, err) = await waited;
            Assert.True(code == 0, err);
            int port = JsonDocument.Parse(output).RootElement.GetProperty("hostPort").GetInt32();
            using (var app = new TcpClient(AddressFamily.InterNetwork))
            {
                await app.ConnectAsync(IPAddress.Loopback, port).WaitAsync(Step);
                using var reader = new StreamReader(app.GetStream(), Encoding.ASCII);
                Assert.Equal("app-up", await reader.ReadLineAsync().WaitAsync(Step));
            }

            await control.SendAsync("done", Step);
            var result = await guest.WaitForExitAsync();
            Assert.True(result.ExitCode == 0, result.ToString());
            Assert.Contains("got done", result.Output);
        }
        finally
        {
            if (!run.HasExited) kill(run.Id, 15);
            await FinishAsync(run, TimeSpan.FromSeconds(30));
            Directory.Delete(runtime, true);
        }
    }

    [System.Runtime.InteropServices.DllImport("libc", SetLastError = true)]
    private static extern int kill(int pid, int signal);
}
