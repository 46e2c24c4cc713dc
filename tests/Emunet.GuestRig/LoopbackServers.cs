using System.Diagnostics;
using System.Net;
using System.Net.Sockets;
using System.Security.Cryptography;
using System.Text;

namespace Emunet.GuestRig;

/// <summary>Ports on 127.0.0.1 for tests.</summary>
public static class LoopbackPorts
{
    /// <summary>A TCP port nothing listens on right now (the kernel's pick for an ephemeral bind).</summary>
    public static int Free()
    {
        using var l = new TcpListener(IPAddress.Loopback, 0);
        l.Start();
        return ((IPEndPoint)l.LocalEndpoint).Port;
    }

    /// <summary>
    /// Waits until something listens on 127.0.0.1:<paramref name="port"/> (an emulator's <c>listen=</c> socket), by
    /// reading /proc/net/tcp rather than connecting: a probe connection would be taken as the emulator's peer.
    /// </summary>
    public static async Task WaitListeningAsync(int port, TimeSpan timeout)
    {
        var entry = $"0100007F:{port:X4}";
        var until = DateTime.UtcNow + timeout;
        while (true)
        {
            // /proc/net/tcp: "sl local_address rem_address st ..."; st 0A is TCP_LISTEN.
            foreach (var line in File.ReadLines("/proc/net/tcp").Skip(1))
            {
                var f = line.Split(' ', StringSplitOptions.RemoveEmptyEntries);
                if (f.Length > 3 && f[1] == entry && f[3] == "0A") return;
            }
            if (DateTime.UtcNow > until) throw new TimeoutException($"Nothing listened on 127.0.0.1:{port} within {timeout.TotalSeconds:0} s.");
            await Task.Delay(50);
        }
    }

    /// <summary>Waits until the Unix socket file <paramref name="path"/> exists (an emulator listening there), without connecting.</summary>
    public static async Task WaitSocketFileAsync(string path, TimeSpan timeout)
    {
        var until = DateTime.UtcNow + timeout;
        while (!File.Exists(path))
        {
            if (DateTime.UtcNow > until) throw new TimeoutException($"No socket appeared at {path} within {timeout.TotalSeconds:0} s.");
            await Task.Delay(50);
        }
    }
}

/// <summary>A UDP server on 127.0.0.1 (or ::1) that answers each datagram with "echo:" + its upper-cased text.</summary>
public sealed class LoopbackUdpEcho : IDisposable
{
    private readonly UdpClient _udp;
    private readonly CancellationTokenSource _stop = new();

    /// <param name="address">The loopback address to listen on (127.0.0.1 unless given, e.g. ::1).</param>
    public LoopbackUdpEcho(IPAddress? address = null)
    {
        var at = address ?? IPAddress.Loopback;
        _udp = new UdpClient(new IPEndPoint(at, 0));
        _ = Task.Run(Loop);
    }

    /// <summary>Datagrams received so far.</summary>
    public int Received => Volatile.Read(ref _received);
    private int _received;

    public int Port => ((IPEndPoint)_udp.Client.LocalEndPoint!).Port;

    private async Task Loop()
    {
        while (!_stop.IsCancellationRequested)
        {
            UdpReceiveResult r;
            try { r = await _udp.ReceiveAsync(_stop.Token); }
            catch (Exception) { return; }
            Interlocked.Increment(ref _received);
            var reply = Encoding.ASCII.GetBytes("echo:" + Encoding.ASCII.GetString(r.Buffer).Trim().ToUpperInvariant() + "\n");
            await _udp.SendAsync(reply, r.RemoteEndPoint);
        }
    }

    public void Dispose()
    {
        _stop.Cancel();
        _udp.Dispose();
    }
}

/// <summary>
/// A TCP sink on 127.0.0.1: reads exactly <see cref="ExpectedLength"/> bytes from one client, answers with their
/// SHA-256 in hex and a newline, then closes.
/// </summary>
public sealed class LoopbackHashSink : IDisposable
{
    private readonly TcpListener _listener;

    /// <param name="expectedLength">Bytes the client sends.</param>
    /// <param name="address">The loopback address to listen on (127.0.0.1 unless given, e.g. ::1).</param>
    public LoopbackHashSink(long expectedLength, IPAddress? address = null)
    {
        _listener = new TcpListener(address ?? IPAddress.Loopback, 0);
        ExpectedLength = expectedLength;
        _listener.Start();
        Result = Task.Run(Serve);
    }

    public long ExpectedLength { get; }
    public int Port => ((IPEndPoint)_listener.LocalEndpoint).Port;
    /// <summary>The hex SHA-256 of what the client sent.</summary>
    public Task<string> Result { get; }

    private async Task<string> Serve()
    {
        using var client = await _listener.AcceptTcpClientAsync();
        var s = client.GetStream();
        using var sha = IncrementalHash.CreateHash(HashAlgorithmName.SHA256);
        var buf = new byte[256 * 1024];
        long left = ExpectedLength;
        while (left > 0)
        {
            int n = await s.ReadAsync(buf.AsMemory(0, (int)Math.Min(buf.Length, left)));
            if (n == 0) break;
            sha.AppendData(buf, 0, n);
            left -= n;
        }
        var hex = Convert.ToHexStringLower(sha.GetHashAndReset());
        await s.WriteAsync(Encoding.ASCII.GetBytes(hex + "\n"));
        client.Client.Shutdown(SocketShutdown.Send);
        return left == 0 ? hex : $"short by {left} bytes";
    }

    public void Dispose() => _listener.Stop();
}

/// <summary>An iperf3 server on 127.0.0.1 (one test, then it exits); killed on dispose.</summary>
public sealed class LoopbackIperf3Server : IDisposable
{
    private readonly Process _process;

    /// <param name="port">The port to listen on.</param>
    /// <param name="address">The loopback address (127.0.0.1 unless given, e.g. ::1).</param>
    public LoopbackIperf3Server(int port, IPAddress? address = null)
    {
        Port = port;
        var bind = address ?? IPAddress.Loopback;
        var psi = new ProcessStartInfo("iperf3", ["-s", "-B", bind.ToString(), "-p", port.ToString()])
        {
            RedirectStandardOutput = true, RedirectStandardError = true,
        };
        _process = Process.Start(psi) ?? throw new InvalidOperationException("iperf3 did not start; run scripts/setup.sh.");
        Output = _process.StandardOutput.ReadToEndAsync();
        // Ready once it listens: probe with connect (no fixed sleep).
        var until = DateTime.UtcNow.AddSeconds(10);
        while (true)
        {
            try
            {
                using var probe = new TcpClient(bind.AddressFamily);
                probe.Connect(bind, port);
                break;
            }
            catch (SocketException) when (DateTime.UtcNow < until && !_process.HasExited)
            {
                Thread.Sleep(20);
            }
        }
    }

    public int Port { get; }
    public Task<string> Output { get; }

    public void Dispose()
    {
        try { if (!_process.HasExited) _process.Kill(true); } catch (InvalidOperationException) { }
        _process.Dispose();
    }
}
