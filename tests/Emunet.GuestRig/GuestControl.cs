using System.Net;
using System.Net.Sockets;
using System.Text;

namespace Emunet.GuestRig;

/// <summary>
/// A command channel from the test to a script inside the guest: the guest runs
/// <c>cmd=$(nc 10.0.2.2 PORT)</c>, which blocks until the test calls <see cref="SendAsync"/> with the next command.
/// Nothing polls: the guest's nc waits on the connection.
/// </summary>
public sealed class GuestControl : IDisposable
{
    private readonly TcpListener _listener = new(IPAddress.Loopback, 0);

    public GuestControl() => _listener.Start();

    public int Port => ((IPEndPoint)_listener.LocalEndpoint).Port;

    /// <summary>The shell line that waits for the next command and stores it in $cmd.</summary>
    public string WaitLine => $"cmd=$(nc 10.0.2.2 {Port} </dev/null)";

    /// <summary>Answers the guest's next wait with <paramref name="command"/>.</summary>
    public async Task SendAsync(string command, TimeSpan timeout)
    {
        using var cts = new CancellationTokenSource(timeout);
        using var client = await _listener.AcceptTcpClientAsync(cts.Token);
        await client.GetStream().WriteAsync(Encoding.ASCII.GetBytes(command + "\n"), cts.Token);
    }

    public void Dispose() => _listener.Stop();
}
