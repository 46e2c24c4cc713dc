using System.Net;
using System.Net.Sockets;
using System.Text;

namespace Emunet.GuestRig;

/// <summary>
/// A small HTTP/1.0 server on 127.0.0.1 for guest tests: serves fixed byte bodies by path (GET) and takes uploads
/// (PUT/POST) whose SHA-256 it records. Only loopback; one thread per connection is plenty for tests.
/// </summary>
public sealed class LoopbackHttpServer : IDisposable
{
    private readonly TcpListener _listener;
    private readonly Dictionary<string, byte[]> _content = new();
    private readonly CancellationTokenSource _stop = new();
    private readonly Task _accept;

    /// <param name="port">The port, or 0 for any free one.</param>
    /// <param name="address">The loopback address to listen on (127.0.0.1 unless given, e.g. ::1).</param>
    public LoopbackHttpServer(int port = 0, IPAddress? address = null)
    {
        _listener = new TcpListener(address ?? IPAddress.Loopback, port);
        _listener.Start();
        _accept = Task.Run(AcceptLoop);
    }

    public int Port => ((IPEndPoint)_listener.LocalEndpoint).Port;

    /// <summary>Serves <paramref name="body"/> at <paramref name="path"/>.</summary>
    public void Serve(string path, byte[] body)
    {
        lock (_content) _content[path] = body;
    }

    private async Task AcceptLoop()
    {
        while (!_stop.IsCancellationRequested)
        {
            TcpClient client;
            try { client = await _listener.AcceptTcpClientAsync(_stop.Token); }
            catch (Exception) { return; }
            _ = Task.Run(() => Handle(client));
        }
    }

    private async Task Handle(TcpClient client)
    {
        using var c = client;
        try
        {
            var stream = c.GetStream();
            var header = new StringBuilder();
            while (!header.ToString().EndsWith("\r\n\r\n", StringComparison.Ordinal))
            {
                int b = stream.ReadByte();
                if (b < 0 || header.Length > 8192) return;
                header.Append((char)b);
            }
            var first = header.ToString().Split("\r\n")[0].Split(' ');
            string path = first.Length > 1 ? first[1] : "/";
            byte[]? body;
            lock (_content) _content.TryGetValue(path, out body);
            if (body is null)
            {
                await stream.WriteAsync(Encoding.ASCII.GetBytes("HTTP/1.0 404 Not Found\r\nContent-Length: 0\r\n\r\n"));
                return;
            }
            await stream.WriteAsync(Encoding.ASCII.GetBytes($"HTTP/1.0 200 OK\r\nContent-Length: {body.Length}\r\nContent-Type: application/octet-stream\r\n\r\n"));
            await stream.WriteAsync(body);
        }
        catch (IOException) { }
        catch (SocketException) { }
    }

    public void Dispose()
    {
        _stop.Cancel();
        _listener.Stop();
        try { _accept.Wait(2000); } catch (AggregateException) { }
    }
}
