using System.Net;
using System.Net.Sockets;
using Emunet.Engine.Interop;
using Microsoft.Extensions.Logging;

namespace Emunet.Engine.Stack.Tcp;

/// <summary>The host side of each connection: connect completion, reads into the send ring, writes from the receive ring.</summary>
internal sealed partial class TcpStack
{
    private const int SolSocket = 1; // SOL_SOCKET (Linux)
    private const int SoError = 4;   // SO_ERROR (Linux)

    /// <summary>Called by the loop when the connection's host socket is ready.</summary>
    internal void OnHostEvents(TcpConnection c, uint events)
    {
        if (c.State == TcpState.Closed || c.HostSocket is null) return;
        if (c.State == TcpState.Connecting)
        {
            OnConnectCompleted(c);
            return;
        }
        bool error = (events & (Libc.EPOLLERR | Libc.EPOLLHUP)) != 0;
        if ((events & Libc.EPOLLIN) != 0 || (error && (c.HostEvents & Libc.EPOLLIN) != 0))
        {
            ReadHost(c);
            if (c.State == TcpState.Closed) return;
        }
        if ((events & Libc.EPOLLOUT) != 0 || (error && (c.HostEvents & Libc.EPOLLOUT) != 0))
        {
            FlushToHost(c);
            if (c.State == TcpState.Closed) return;
        }
        UpdateHostInterest(c);
        MaybeFinish(c);
    }

    /// <summary>The non-blocking connect finished: SO_ERROR says how (connect(2)).</summary>
    private void OnConnectCompleted(TcpConnection c)
    {
        int soError = 0;
        try
        {
            // getsockopt(SO_ERROR) into a stack buffer: the boxed value GetSocketOption returns is an allocation per connect.
            Span<byte> value = stackalloc byte[sizeof(int)];
            c.HostSocket!.GetRawSocketOption(SolSocket, SoError, value);
            soError = System.Runtime.InteropServices.MemoryMarshal.Read<int>(value);
        }
        catch (SocketException e)
        {
            soError = (int)e.SocketErrorCode;
        }
        if (soError != 0)
        {
            // Refused, unreachable or timed out: the guest's connect fails the same way, at once.
            if (_logger.IsEnabled(LogLevel.Debug)) _logger.LogDebug("tcp {Id}: connect to {Remote} failed: errno {Error}", c.Id, c.HostRemote, soError);
            Reset(c, resetGuest: true, resetHost: false);
            return;
        }
        OnHostConnected(c);
    }

    /// <summary>The host accepted: answer the guest's SYN with a SYN-ACK (RFC 9293 §3.10.7.2).</summary>
    private void OnHostConnected(TcpConnection c)
    {
        c.RtoDeadline = long.MaxValue;
        EndHalfOpen(c);
        c.State = TcpState.SynReceived;
        c.SndNxt = Seq.Add(c.Iss, 1);
        c.SndMax = c.SndNxt;
        SendSynAck(c);
        Arm(ref c.RtoDeadline, _loop.NowMs + c.RtoMs);
        UpdateHostInterest(c);
    }

    /// <summary>Reads the host socket into the send ring while it has room, then sends what the windows allow.</summary>
    private void ReadHost(TcpConnection c)
    {
        var host = c.HostSocket!;
        while (!c.HostEof)
        {
            var span = c.SendRing.WritableSpan();
            if (span.IsEmpty) break;
            int n = host.Receive(span, SocketFlags.None, out var error);
            if (error == SocketError.WouldBlock) break;
            if (error != SocketError.Success)
            {
                OnHostError(c, error);
                return;
            }
            if (n == 0)
            {
                c.HostEof = true;
                break;
            }
            c.SendRing.Commit(n);
            if (n < span.Length) break;
        }
        Output(c, ackNow: false);
    }

    /// <summary>
    /// Writes what the receive ring holds to the host socket (at most two sends: the ring may wrap). False when the
    /// socket failed and the connection was reset.
    /// </summary>
    private bool WriteRingToHost(TcpConnection c)
    {
        var host = c.HostSocket!;
        while (!c.ReceiveRing.IsEmpty)
        {
            var span = c.ReceiveRing.ReadableSpan(0);
            int n = host.Send(span, SocketFlags.None, out var error);
            if (error == SocketError.WouldBlock) break;
            if (error != SocketError.Success)
            {
                OnHostError(c, error);
                return false;
            }
            c.ReceiveRing.Consume(n);
            if (n < span.Length) break;
        }
        return true;
    }

    /// <summary>
    /// Writes the receive ring to the host socket; after the guest's FIN, shuts the host's send side. With
    /// <paramref name="announceWindow"/> (the socket drained a ring that had filled) a window update follows.
    /// </summary>
    private void FlushToHost(TcpConnection c, bool announceWindow = true)
    {
        if (!WriteRingToHost(c)) return;
        if (c.ReceiveRing.IsEmpty && c.GuestFin)
        {
            if (!c.HostShutdown) ShutdownHostSend(c);
            return;
        }
        // RFC 9293 §3.8.6.2.2: announce the window once its right edge may move on.
        if (announceWindow && c.IsSynchronized && WindowToAdvertise(c) > PromisedWindow(c)) SendAck(c);
    }

    /// <summary>The host peer reset or the socket failed: the guest gets a RST.</summary>
    private void OnHostError(TcpConnection c, SocketError error)
    {
        if (_logger.IsEnabled(LogLevel.Debug)) _logger.LogDebug("tcp {Id}: host socket error {Error}; resetting the guest side", c.Id, error);
        Reset(c, resetGuest: true, resetHost: true);
    }

    private void ShutdownHostSend(TcpConnection c)
    {
        c.HostShutdown = true;
        try { c.HostSocket?.Shutdown(SocketShutdown.Send); }
        catch (SocketException) { }
        catch (ObjectDisposedException) { }
    }

    /// <summary>
    /// Registers for what the connection can use now: EPOLLIN while the send ring has room and the host has not ended,
    /// EPOLLOUT while the receive ring holds data (or the connect is pending). With neither, the socket leaves epoll, so
    /// an EPOLLHUP/EPOLLERR that cannot be handled yet does not spin the loop.
    /// </summary>
    private void UpdateHostInterest(TcpConnection c)
    {
        if (c.HostSocket is null || c.State == TcpState.Closed) return;
        uint want;
        if (c.State == TcpState.Connecting) want = Libc.EPOLLOUT;
        else
        {
            want = 0;
            // Hysteresis: read again once a useful amount is free, not for every acknowledged byte.
            // Room means room the budget allows now: a spent budget stops the read (back-pressure), it never spins.
            if (!c.HostEof && c.SendRing.StorableFree >= Math.Min(c.Mss, c.SendRing.StorableCapacity / 4)) want |= Libc.EPOLLIN;
            // Data queued this turn is written at its end (TcpStack.Ack.cs); EPOLLOUT only for what the socket refused.
            if (!c.ReceiveRing.IsEmpty && !c.HostWriteQueued) want |= Libc.EPOLLOUT;
        }
        if (want == c.HostEvents) return;
        if (c.HostEvents == 0) c.HostToken = _loop.Register(c.HostFd, want, c);
        else if (want == 0)
        {
            _loop.Unregister(c.HostToken, c.HostFd);
            c.HostToken = -1;
        }
        else _loop.Modify(c.HostToken, c.HostFd, want);
        c.HostEvents = want;
    }

    /// <summary>Closes the host socket; with <paramref name="abort"/> the peer gets a RST (SO_LINGER 0).</summary>
    private void CloseHost(TcpConnection c, bool abort)
    {
        var host = c.HostSocket;
        if (host is null) return;
        if (c.HostEvents != 0)
        {
            _loop.Unregister(c.HostToken, c.HostFd);
            c.HostEvents = 0;
            c.HostToken = -1;
        }
        if (abort)
        {
            try { host.LingerState = new LingerOption(true, 0); }
            catch (SocketException) { }
        }
        host.Dispose();
        c.HostSocket = null;
        c.HostFd = -1;
    }

    /// <summary>Both directions are finished: the guest's FIN went to the host and the host's FIN was acknowledged.</summary>
    private void MaybeFinish(TcpConnection c)
    {
        if (c.State == TcpState.Closed || !c.GuestFin || !c.HostShutdown || !c.FinAcked) return;
        if (_logger.IsEnabled(LogLevel.Debug)) _logger.LogDebug("tcp {Id}: closed ({In} bytes in, {Out} out)", c.Id, c.BytesFromGuest, c.BytesToGuest);
        CloseHost(c, abort: false);
        Free(c);
    }
}
