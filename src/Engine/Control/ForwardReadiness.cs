using System.Diagnostics;
using System.Globalization;
using System.Net;
using System.Net.Sockets;

namespace Emunet.Engine.Control;

/// <summary>
/// Waits until the guest accepts connections behind a TCP forward, so scripts need no dummy-byte handshake: a probe
/// client connects to the forward's host port; the flow it makes reaching ESTABLISHED means the guest app accepted
/// (the probe then closes), a reset means "not yet" and the probe tries again. Used by <c>emunet forward add --wait</c>
/// and <c>New-EmuForward -Wait</c>.
/// </summary>
public static class ForwardReadiness
{
    /// <summary>How long one probe waits for its flow to be accepted or refused before trying again.</summary>
    public static readonly TimeSpan ProbeTimeout = TimeSpan.FromSeconds(2);
    private static readonly TimeSpan Pause = TimeSpan.FromMilliseconds(200);

    /// <summary>
    /// Probes <paramref name="forward"/> (a TCP forward of the instance <paramref name="client"/> talks to) until the
    /// guest accepts or <paramref name="timeout"/> passes. <paramref name="progress"/> hears the time waited after each
    /// probe. True when the guest accepted.
    /// </summary>
    public static bool WaitUntilAccepting(ControlClient client, ForwardDto forward, TimeSpan timeout, Action<TimeSpan>? progress = null,
        CancellationToken token = default)
    {
        if (!string.Equals(forward.Protocol, "tcp", StringComparison.OrdinalIgnoreCase))
            throw new ArgumentException($"Waiting for the guest applies to TCP forwards; {forward.Spec} is {forward.Protocol}.");
        var address = IPAddress.Parse(forward.Address);
        if (address.Equals(IPAddress.Any)) address = IPAddress.Loopback;
        var target = new IPEndPoint(address, forward.HostPort);
        var waited = Stopwatch.StartNew();
        while (waited.Elapsed < timeout && !token.IsCancellationRequested)
        {
            if (Probe(client, target, forward.HostPort, token)) return true;
            progress?.Invoke(waited.Elapsed);
            token.WaitHandle.WaitOne(Pause);
        }
        return false;
    }

    /// <summary>One probe: true when the flow it made was accepted by the guest.</summary>
    private static bool Probe(ControlClient client, IPEndPoint target, int hostPort, CancellationToken token)
    {
        using var probe = new Socket(target.AddressFamily, SocketType.Stream, ProtocolType.Tcp);
        try { probe.Connect(target); }
        catch (SocketException) { return false; }
        string local = ((IPEndPoint)probe.LocalEndPoint!).Port.ToString(CultureInfo.InvariantCulture);
        var started = Stopwatch.StartNew();
        while (started.Elapsed < ProbeTimeout && !token.IsCancellationRequested)
        {
            foreach (var flow in client.ListConnections("tcp", hostPort))
            {
                if (flow.HostRemote is null || !flow.HostRemote.EndsWith(":" + local, StringComparison.Ordinal)) continue;
                if (flow.State == "ESTABLISHED") return true;
            }
            // A reset (the guest port is closed) shows as the probe's socket becoming readable with an error or EOF.
            if (probe.Poll(50_000, SelectMode.SelectRead)) return false;
        }
        return false;
    }
}
