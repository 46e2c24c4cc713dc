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

    /// <summary>
    /// The guest's loop: reads numbered commands until the bench closes the connection, and runs each number once.
    /// Debian's passt was seen delivering a command line again on this idle connection: a repeat is skipped.
    /// </summary>
    public string GuestLoop =>
        $"nc 10.0.2.2 {Port} </dev/null | {{ last=0; while read -r n cmd; do [ \"$n\" -gt \"$last\" ] 2>/dev/null || continue; last=$n; eval \"$cmd\" </dev/null; done; }}";

    /// <summary>Sends command number <paramref name="id"/> (increasing from 1).</summary>
    public async Task SendAsync(int id, string command, TimeSpan timeout)
    {
        using var cts = new CancellationTokenSource(timeout);
        _client ??= await _listener.AcceptTcpClientAsync(cts.Token);
        await _client.GetStream().WriteAsync(Encoding.UTF8.GetBytes($"{id} {command}\n"), cts.Token);
    }

    public void Dispose()
    {
        _client?.Dispose();
        _listener.Stop();
    }
}
