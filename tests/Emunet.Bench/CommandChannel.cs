using System.Net;
using System.Net.Sockets;
using System.Text;

namespace Emunet.Bench;

/// <summary>
/// Commands to the guest script over one long-lived connection: the guest runs
/// <c>nc 10.0.2.2 PORT | while read -r cmd; do eval "$cmd"; done</c> and the bench writes one line per command.
/// Unlike a connection per command, nothing waits for an end of stream to reach the guest, so a backend that is slow
/// to pass a close on cannot stall the run.
/// </summary>
internal sealed class CommandChannel : IDisposable
{
    private readonly TcpListener _listener = new(IPAddress.Loopback, 0);
    private TcpClient? _client;

    public CommandChannel() => _listener.Start();

    public int Port => ((IPEndPoint)_listener.LocalEndpoint).Port;

    /// <summary>The guest's loop: reads commands until the bench closes the connection.</summary>
    public string GuestLoop => $"nc 10.0.2.2 {Port} </dev/null | while read -r cmd; do eval \"$cmd\" </dev/null; done";

    public async Task SendAsync(string command, TimeSpan timeout)
    {
        using var cts = new CancellationTokenSource(timeout);
        _client ??= await _listener.AcceptTcpClientAsync(cts.Token);
        await _client.GetStream().WriteAsync(Encoding.UTF8.GetBytes(command + "\n"), cts.Token);
    }

    public void Dispose()
    {
        _client?.Dispose();
        _listener.Stop();
    }
}
