using Emunet.Engine.Runtime;
using Emunet.Engine.Stack.Nat;
using Emunet.Engine.Wire;

namespace Emunet.Engine.Stack.Tcp;

/// <summary>
/// Connection states as seen from Emunet's end of the guest-facing connection (RFC 9293 §3.3.2), plus
/// <see cref="Connecting"/>: the guest's SYN is held while the host socket connects, and is answered only when it has.
/// TIME-WAIT is not kept: the guest holds the 2MSL (the side that closes last frees at once).
/// </summary>
internal enum TcpState
{
    Connecting,
    SynSent,
    SynReceived,
    Established,
    FinWait1,
    FinWait2,
    CloseWait,
    Closing,
    LastAck,
    TimeWait,
    Closed,
}

/// <summary>
/// One spliced connection: a flow of the table (key, host socket, counts) with the guest-facing TCP state (sequence
/// space, buffers, timers). All fields belong to the owner thread; <see cref="TcpStack"/> holds the logic.
/// </summary>
internal sealed class TcpConnection : Flow
{
    private readonly TcpStack _stack;

    public TcpConnection(TcpStack stack, int sendBuffer, int receiveBuffer, BufferBudget budget, RingArrayPool pool)
    {
        _stack = stack;
        SendRing = new ByteRing(sendBuffer, budget, pool);
        ReceiveRing = new ByteRing(receiveBuffer, budget, pool);
    }

    // Identity (the key holds the same; IPv4 addresses IPv4-mapped, so one connection type serves both families).
    public FlowAddress GuestAddress;
    public ushort GuestPort;
    /// <summary>The address the guest talks to (the original destination, or 10.0.2.2 for a forward).</summary>
    public FlowAddress PeerAddress;
    public ushort PeerPort;

    // Host socket (the flow's HostSocket, HostFd, HostToken).
    /// <summary>The epoll events registered for the host socket; 0 while not registered.</summary>
    public uint HostEvents;
    /// <summary>The host socket returned end of stream: a FIN goes to the guest after the data before it.</summary>
    public bool HostEof;
    /// <summary>Guest data waits in the receive ring for the end-of-turn write to the host socket.</summary>
    public bool HostWriteQueued;
    /// <summary>Shutdown(Send) done on the host socket after the guest's FIN.</summary>
    public bool HostShutdown;

    public TcpState State;
    /// <summary>An outbound connection whose host connect is still pending (counted against the half-open limit).</summary>
    public bool HalfOpen;

    // Send sequence space, toward the guest (RFC 9293 §3.3.1).
    public uint Iss;
    public uint SndUna;
    public uint SndNxt;
    /// <summary>Highest sequence number sent so far (SND.NXT before a go-back-N retransmission rewound it).</summary>
    public uint SndMax;
    /// <summary>The guest's window, already scaled.</summary>
    public int SndWnd;
    public uint SndWl1;
    public uint SndWl2;
    /// <summary>The largest window the guest ever offered (sender SWS avoidance, RFC 9293 §3.8.6.2.1).</summary>
    public int MaxSndWnd;
    /// <summary>Sequence number of the first byte of <see cref="SendRing"/>.</summary>
    public uint RingSeq;
    public bool FinSent;
    public uint FinSeq;
    public bool FinAcked;
    /// <summary>Segment size toward the guest: min(guest MSS, device payload - 20).</summary>
    public int Mss;
    /// <summary>Shift the guest applies to the windows it sends (RFC 7323 §2.3); 0 without the option.</summary>
    public int SndScale;
    /// <summary>Both SYNs carried the window scale option (RFC 7323 §2.2).</summary>
    public bool WindowScaling;

    // Receive sequence space, from the guest.
    public uint Irs;
    public uint RcvNxt;
    /// <summary>Shift Emunet applies to the windows it advertises; 0 when scaling was not agreed.</summary>
    public int RcvScale;
    /// <summary>The MSS Emunet advertised (what the guest sends at most).</summary>
    public int RcvMss;
    /// <summary>RCV.NXT + the window last advertised: the right edge promised to the guest.</summary>
    public uint RcvAdvEdge;
    /// <summary>An ACK with a window went out (the edge means something).</summary>
    public bool RcvAdvSet;
    public bool GuestFin;

    // Congestion control (RFC 5681) and loss recovery.
    public int Cwnd;
    public int Ssthresh;
    public int DupAcks;
    public bool InRecovery;
    public uint Recover;

    // Retransmission timer (RFC 6298), all in loop milliseconds.
    public int SrttMs = -1;
    public int RttVarMs;
    public int RtoMs;
    public long RtoDeadline = long.MaxValue;
    public int Retries;
    public bool RttTiming;
    public uint RttSeq;
    public long RttStart;
    public long PersistDeadline = long.MaxValue;
    public int PersistBackoff;

    // Output scheduling.
    /// <summary>An ACK is owed to the guest (the device was full when it was due).</summary>
    public bool AckPending;
    /// <summary>RCV.NXT as the last ACK sent carried it: what the guest knows has arrived.</summary>
    public uint RcvAcked;
    /// <summary>The largest segment the guest has sent: the full-sized segment of RFC 1122 §4.2.3.2 (Linux's rcv_mss).</summary>
    public int RcvSegMax;
    /// <summary>On the stack's list of connections whose ACK is decided at the end of the loop turn.</summary>
    public bool AckDeferred;
    /// <summary>The delayed-ACK timer (RFC 1122 §4.2.3.2), in loop milliseconds.</summary>
    public long AckDeadline = long.MaxValue;
    /// <summary>Queued on the stack's transmit-waiters list.</summary>
    public bool WaitingTransmit;

    public readonly ByteRing SendRing;
    public readonly ByteRing ReceiveRing;

    public bool IsSynchronized => State >= TcpState.Established && State < TcpState.Closed;

    public override string StateName => State switch
    {
        TcpState.Connecting => "CONNECTING",
        TcpState.SynSent => "SYN-SENT",
        TcpState.SynReceived => "SYN-RECEIVED",
        TcpState.Established => "ESTABLISHED",
        TcpState.FinWait1 => "FIN-WAIT-1",
        TcpState.FinWait2 => "FIN-WAIT-2",
        TcpState.CloseWait => "CLOSE-WAIT",
        TcpState.Closing => "CLOSING",
        TcpState.LastAck => "LAST-ACK",
        TcpState.TimeWait => "TIME-WAIT",
        _ => "CLOSED",
    };

    public override void OnPoll(uint events) => _stack.OnHostEvents(this, events);

    /// <summary>The host socket's local address is asked for here, when a snapshot is, not on the connection path.</summary>
    public override Stack.Nat.ConnectionInfo Snapshot()
    {
        if (HostLocal is null && HostSocket is { } socket)
        {
            // A guest-outbound socket was connected by a plain connect(2) (TcpStack.Open.cs): Socket does not know its address.
            try { HostLocal = socket.LocalEndPoint as System.Net.IPEndPoint ?? Interop.Libc.LocalEndPoint(HostFd); }
            catch (System.Net.Sockets.SocketException) { }
            catch (ObjectDisposedException) { }
        }
        return base.Snapshot();
    }

    public override long OnTimer(long nowMs) => _stack.OnConnectionTimer(this, nowMs);

    protected override void Abort() => _stack.Abort(this);

    public void Release()
    {
        SendRing.Release();
        ReceiveRing.Release();
    }
}
