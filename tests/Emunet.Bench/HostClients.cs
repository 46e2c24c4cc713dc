using System.Diagnostics;
using System.Net;
using System.Net.Sockets;

namespace Emunet.Bench;

/// <summary>
/// The host-side clients, all to 127.0.0.1 through a backend's port forward into the guest's connserver or iperf3.
/// Each waits on the socket with a timeout; a timeout is an error of the run, never a figure.
/// </summary>
internal static class HostClients
{
    private static readonly TimeSpan OneOperation = TimeSpan.FromSeconds(15);
    private static readonly TimeSpan GreetingWait = TimeSpan.FromSeconds(3);

    public sealed record ConnectionFigures(double PerSecond, double P50Ms, double P99Ms, int Count, double MaxMs);

    public sealed record LatencyFigures(double P50Ms, double P99Ms, int Count);

    /// <summary>iperf3 on the host against the guest's server through the forward on <paramref name="port"/>.</summary>
    public static async Task<string> Iperf3Async(int port, string flags, TimeSpan timeout)
    {
        var psi = new ProcessStartInfo("iperf3") { RedirectStandardOutput = true, RedirectStandardError = true };
        foreach (var a in $"-c 127.0.0.1 -p {port} {flags}".Split(' ')) psi.ArgumentList.Add(a);
        using var p = Process.Start(psi) ?? throw new InvalidOperationException("iperf3 did not start");
        var stdout = p.StandardOutput.ReadToEndAsync();
        var stderr = p.StandardError.ReadToEndAsync();
        using var cts = new CancellationTokenSource(timeout);
        try
        {
            await p.WaitForExitAsync(cts.Token);
        }
        catch (OperationCanceledException)
        {
            p.Kill(true);
            throw new TimeoutException($"iperf3 {flags} through the forward did not finish within {timeout.TotalSeconds:0} s");
        }
        return await stdout + await stderr;
    }

    /// <summary>
    /// Sequential short connections to connserver's close mode: connect, 1-byte request, 1-byte answer, the server's
    /// close seen. The connection time runs from connect to that close.
    /// </summary>
    public static async Task<ConnectionFigures> ConnectionRateAsync(int port, TimeSpan window)
    {
        var times = new List<double>();
        var request = "q"u8.ToArray();
        var buf = new byte[16];
        var sw = Stopwatch.StartNew();
        while (sw.Elapsed < window)
        {
            long t0 = Stopwatch.GetTimestamp();
            using var cts = new CancellationTokenSource(OneOperation);
            using var s = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp) { NoDelay = true };
            await s.ConnectAsync(IPAddress.Loopback, port, cts.Token);
            await s.SendAsync(request, cts.Token);
            int n = await s.ReceiveAsync(buf, cts.Token);
            if (n != 1 || buf[0] != (byte)'k') throw new IOException($"connserver answered {n} bytes, not its 'k'");
            while (await s.ReceiveAsync(buf, cts.Token) > 0) { }
            times.Add(Stopwatch.GetElapsedTime(t0).TotalMilliseconds);
        }
        double elapsed = sw.Elapsed.TotalSeconds;
        return new ConnectionFigures(times.Count / elapsed, Percentile(times, 50), Percentile(times, 99), times.Count, times.Count == 0 ? 0 : times.Max());
    }

    /// <summary>1-byte request/response on one connection to connserver's echo mode, back to back.</summary>
    public static async Task<LatencyFigures> RequestResponseAsync(int port, TimeSpan window)
    {
        var times = new List<double>();
        var request = "p"u8.ToArray();
        var buf = new byte[16];
        using var s = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp) { NoDelay = true };
        using (var cts = new CancellationTokenSource(OneOperation)) await s.ConnectAsync(IPAddress.Loopback, port, cts.Token);
        var sw = Stopwatch.StartNew();
        while (sw.Elapsed < window)
        {
            using var cts = new CancellationTokenSource(OneOperation);
            long t0 = Stopwatch.GetTimestamp();
            await s.SendAsync(request, cts.Token);
            int n = await s.ReceiveAsync(buf, cts.Token);
            if (n != 1) throw new IOException(n == 0 ? "the echo connection closed" : $"the echo answered {n} bytes to one");
            times.Add(Stopwatch.GetElapsedTime(t0).TotalMilliseconds);
        }
        return new LatencyFigures(Percentile(times, 50), Percentile(times, 99), times.Count);
    }

    /// <summary>
    /// After a hello answered by the live server, the time from the byte that makes connserver (die mode) SIGKILL itself to the host client seeing the connection
    /// end (EOF or reset): the guest kernel closes the dead process's socket, the backend must pass that on at once.
    /// The median of <paramref name="samples"/>; the guest's shell restarts the server between samples.
    /// </summary>
    public static async Task<double> AppDeathAsync(int port, int samples)
    {
        var times = new List<double>();
        var buf = new byte[16];
        int unanswered = 0;
        var until = DateTime.UtcNow.AddSeconds(30 + 10 * samples);
        while (times.Count < samples)
        {
            if (DateTime.UtcNow > until)
                throw new TimeoutException($"connserver die: {times.Count} of {samples} samples in time ({unanswered} forwarded connections left unanswered)");
            using var cts = new CancellationTokenSource(OneOperation);
            using var s = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp) { NoDelay = true };
            bool greeted = false;
            try
            {
                // The answer to 'h' says a live server holds this connection. Between a death and the shell's restart
                // the backend closes the forward's connection or holds it open unanswered: give up on such a
                // connection after GreetingWait and dial again.
                using var greeting = CancellationTokenSource.CreateLinkedTokenSource(cts.Token);
                greeting.CancelAfter(GreetingWait);
                await s.ConnectAsync(IPAddress.Loopback, port, greeting.Token);
                await s.SendAsync("h"u8.ToArray(), greeting.Token);
                if (await s.ReceiveAsync(buf, greeting.Token) == 1 && buf[0] == (byte)'r') greeted = true;
            }
            catch (SocketException) { }
            catch (OperationCanceledException) { unanswered++; }
            if (!greeted)
            {
                await Task.Delay(20); // the shell's restart is milliseconds away; try again
                continue;
            }
            long t0 = Stopwatch.GetTimestamp();
            await s.SendAsync("x"u8.ToArray(), cts.Token);
            try
            {
                while (await s.ReceiveAsync(buf, cts.Token) > 0) { }
            }
            catch (SocketException e) when (e.SocketErrorCode is SocketError.ConnectionReset) { }
            times.Add(Stopwatch.GetElapsedTime(t0).TotalMilliseconds);
        }
        return Percentile(times, 50);
    }

    /// <summary>Nearest-rank percentile.</summary>
    public static double Percentile(IReadOnlyList<double> values, double p)
    {
        if (values.Count == 0) return double.NaN;
        var sorted = values.Order().ToArray();
        int rank = (int)Math.Ceiling(p / 100 * sorted.Length);
        return sorted[Math.Clamp(rank - 1, 0, sorted.Length - 1)];
    }
}
