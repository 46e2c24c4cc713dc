using System.Net.Sockets;
using Emunet.Engine.Diagnostics;
using Emunet.Engine.Runtime;
using Emunet.Engine.Stack.Tcp;
using Emunet.Engine.Wire;
using Microsoft.Extensions.Logging;

namespace Emunet.Engine.Forwarding;

/// <summary>
/// A TCP forward: each client accepted on the listener becomes a connection from the gateway (10.0.2.2) into the
/// guest's port, through <see cref="TcpStack.OpenToGuest"/>. A client is accepted only onto a descriptor below the
/// headroom (<see cref="DescriptorHeadroom"/>): the listener looks first and pauses while the next one would be in it,
/// and resets a client that landed in it anyway; each is counted <see cref="DropReason.AcceptOutOfDescriptors"/>.
/// Owner thread only.
/// </summary>
internal sealed class TcpForwarder(EventLoop loop, TcpStack tcp, Func<IPv4Address> target, ForwardSpec spec, Counters counters, ILogger logger,
    Func<IPv6Address?>? target6 = null)
    : Forwarder(loop, target, spec, logger)
{
    /// <summary>A forward bound on IPv6 goes to the guest's IPv6 address; one bound on IPv4 to its IPv4 address.</summary>
    private readonly bool _toIPv6 = spec.HostAddress.AddressFamily == AddressFamily.InterNetworkV6;

    /// <summary>Closes an accepted client with SO_LINGER 0, so it sees a reset at once.</summary>
    private static void Reset(Socket client)
    {
        try { client.LingerState = new LingerOption(true, 0); }
        catch (SocketException) { }
        client.Dispose();
    }

    /// <summary>A client left waiting (or reset) for want of descriptors: counted, and the listener pauses.</summary>
    private void RefuseForDescriptors()
    {
        counters.Drop(DropReason.AcceptOutOfDescriptors);
        PauseForDescriptors();
    }

    /// <summary>Connections accepted per readiness event, so one busy listener cannot starve the loop.</summary>
    private const int AcceptBudget = 64;

    /// <summary>TCP_NODELAY once on the listener: Linux copies it to every socket accept(2) returns.</summary>
    protected override void OnBound(Socket socket) => socket.NoDelay = true;

    protected override void OnStopping(bool resetConnections)
    {
        if (resetConnections) tcp.ResetForward(Binding);
    }

    public override void OnPoll(uint events)
    {
        var listener = Socket;
        if (listener is null) return;
        for (int i = 0; i < AcceptBudget; i++)
        {
            Socket client;
            try
            {
                // The readiness event promises the first client; before each further one, poll, so an empty backlog
                // ends the loop without an exception (one syscall less per wake-up, where most bring one client).
                if (i > 0 && !listener.Poll(0, SelectMode.SelectRead)) return;
                if (NextIsAtHeadroom())
                {
                    // Look before accepting: the client waits in the backlog until a descriptor below the headroom is free.
                    RefuseForDescriptors();
                    return;
                }
                client = listener.Accept();
            }
            catch (SocketException e) when (e.SocketErrorCode == SocketError.TooManyOpenSockets)
            {
                RefuseForDescriptors(); // EMFILE/ENFILE: retrying at once would spin
                return;
            }
            catch (SocketException e)
            {
                // The client went away between readiness and accept (ECONNABORTED), or the backlog is empty.
                if (Logger.IsEnabled(LogLevel.Debug)) Logger.LogDebug("forward {Forward}: accept: {Error}", Spec, e.SocketErrorCode);
                return;
            }
            if (AcceptedIntoHeadroom(client))
            {
                // Another thread took the descriptor the probe saw (the control server, the runtime): this client
                // would hold one of the last. It hears a reset; the listener pauses.
                Reset(client);
                RefuseForDescriptors();
                return;
            }
            Accepted();
            if (!tcp.GuestReachable)
            {
                // No guest to send a SYN to: the client hears so at once (a reset), not after the SYN retries.
                counters.Drop(DropReason.ForwardNoGuest);
                if (Logger.IsEnabled(LogLevel.Information)) Logger.LogInformation("forward {Forward}: no guest is attached; client reset", Spec);
                Reset(client);
                continue;
            }
            if (_toIPv6)
            {
                if (target6?.Invoke() is not { } guest6)
                {
                    // The guest has not configured (or announced) an IPv6 address yet.
                    counters.Drop(DropReason.ForwardNoGuest);
                    Reset(client);
                    continue;
                }
                if (!tcp.OpenFlowToGuest(client, Stack.Nat.FlowAddress.FromIPv6(guest6), Spec.GuestPort, Binding))
                {
                    if (Logger.IsEnabled(LogLevel.Warning)) Logger.LogWarning("forward {Forward}: connection table full; client reset", Spec);
                    Reset(client);
                }
                continue;
            }
            if (!tcp.OpenToGuest(client, Target, Spec.GuestPort, Binding))
            {
                if (Logger.IsEnabled(LogLevel.Warning)) Logger.LogWarning("forward {Forward}: connection table full; client reset", Spec);
                Reset(client);
            }
        }
    }
}
