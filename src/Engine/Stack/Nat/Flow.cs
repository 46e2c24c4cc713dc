using System.Net;
using System.Net.Sockets;
using Emunet.Engine.Runtime;

namespace Emunet.Engine.Stack.Nat;

/// <summary>
/// What every flow of the <see cref="FlowTable"/> has, whatever its protocol: its key, its host socket and that
/// socket's event-loop token, an idle deadline, bytes each way, the forward it came through, and the snapshot the
/// control API reads. Protocol state (TCP's sequence space, UDP's DNS flag, ICMP's identifier) hangs off a subclass.
/// Owner thread only.
/// </summary>
internal abstract class Flow : IPollable, IFaultIsolated
{
    /// <summary>Unique per table, given when the flow enters it.</summary>
    public long Id;
    public FlowKey Key;
    public FlowDirection Direction;
    public DateTimeOffset Started = DateTimeOffset.UtcNow;

    /// <summary>The host socket the flow is spliced onto (null for a forwarded UDP flow, which sends through its forward's).</summary>
    public Socket? HostSocket;
    public int HostFd = -1;
    /// <summary>The event-loop token of <see cref="HostSocket"/>; -1 while not registered.</summary>
    public int HostToken = -1;
    public IPEndPoint? HostLocal;
    public IPEndPoint? HostRemote;

    public long BytesFromGuest;
    public long BytesToGuest;

    /// <summary>The forward a forwarded flow came through; it counts the flow while the flow is in the table.</summary>
    public ForwardBinding? Forward;

    /// <summary>Loop time of the last datagram either way; with <see cref="IdleTimeoutMs"/> it sets the idle deadline.</summary>
    public long LastActive;
    /// <summary>How long the flow may idle before <see cref="OnIdle"/>; 0 for flows with their own timers (TCP).</summary>
    public int IdleTimeoutMs;

    /// <summary>The guest link the flow runs on (0 for the first); the stack of that link owns it.</summary>
    public int Link;

    /// <summary>Position in the table's list (swap-remove); -1 when not in the table.</summary>
    internal int TableIndex = -1;

    public bool InTable => TableIndex >= 0;

    public FlowProtocol Protocol => Key.Protocol;

    /// <summary>The state the connection table shows (ESTABLISHED, open, dns, echo, ...).</summary>
    public abstract string StateName { get; }

    /// <summary>Host socket readiness (EPOLLIN, EPOLLOUT, ...).</summary>
    public abstract void OnPoll(uint events);

    /// <summary>
    /// Runs the flow's due timers and returns its next deadline (loop ms; <see cref="long.MaxValue"/> for none). By
    /// default the idle deadline: past it, <see cref="OnIdle"/> closes the flow.
    /// </summary>
    public virtual long OnTimer(long nowMs)
    {
        if (IdleTimeoutMs <= 0) return long.MaxValue;
        long due = LastActive + IdleTimeoutMs;
        if (due > nowMs) return due;
        OnIdle();
        return long.MaxValue;
    }

    /// <summary>The idle deadline passed: the owner closes the flow and removes it from the table.</summary>
    protected virtual void OnIdle() { }

    /// <summary>
    /// Code handling this flow threw (or its protocol's flows all end): the owner drops just this flow (both sides
    /// reset where that means something), so one flow's fault never ends the engine. Must not throw.
    /// </summary>
    protected abstract void Abort();

    /// <summary>Drops this flow: its owner closes it and takes it out of the table.</summary>
    public void End() => Abort();

    public void OnFault(Exception error) => Abort();

    /// <summary>The flow as the control API shows it.</summary>
    public virtual ConnectionInfo Snapshot() => new()
    {
        Id = Id,
        Protocol = Protocol,
        Direction = Direction,
        GuestEndPoint = new IPEndPoint(Key.Guest.ToIPAddress(), Key.GuestPort),
        GuestPeerEndPoint = new IPEndPoint(Key.Peer.ToIPAddress(), Key.PeerPort),
        HostLocalEndPoint = HostLocal,
        HostRemoteEndPoint = HostRemote,
        State = StateName,
        BytesFromGuest = BytesFromGuest,
        BytesToGuest = BytesToGuest,
        Started = Started,
        Forward = Forward?.Name,
        Link = Link,
    };
}

/// <summary>
/// A forward as the flow table knows it: the name flows show, and counts kept as flows enter and leave. The forward
/// itself (its listener, spec and errors) lives in Forwarding/; the stack only sees this.
/// </summary>
internal sealed class ForwardBinding(string name)
{
    /// <summary>The forward's spec string, e.g. <c>tcp:127.0.0.1:8080:80</c>.</summary>
    public string Name { get; set; } = name;
    /// <summary>Flows of this forward in the table now.</summary>
    public int ActiveFlows { get; internal set; }
    /// <summary>Flows of this forward ever admitted.</summary>
    public long TotalFlows { get; internal set; }
}
