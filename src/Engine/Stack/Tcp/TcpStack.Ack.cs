using Emunet.Engine.Runtime;

namespace Emunet.Engine.Stack.Tcp;

/// <summary>
/// When the guest's data is acknowledged, the way a host kernel does it rather than segment by segment: every ACK is a
/// frame the emulated guest must take in, so each one saved is guest CPU saved.
/// <list type="bullet">
/// <item>In-order data is not acknowledged as it arrives: the connection joins a list, and at the end of the loop turn
/// (<see cref="OnEndOfBatch"/>, before the device flushes) one ACK covers everything the turn took, when at least two
/// full-sized segments are unacknowledged (RFC 1122 §4.2.3.2: "at least every second full-sized segment") or the window
/// promised to the guest would run out before another ACK. Otherwise the delayed-ACK timer (<see cref="DelayedAckMs"/>,
/// within RFC 1122's 500 ms) starts, and data Emunet sends to the guest in the meantime carries the ACK instead.</item>
/// <item>At once, as before: out-of-order and duplicate segments (RFC 9293 §3.10.7.4, RFC 5681 §4.2: the guest's
/// recovery needs the duplicate ACK), a FIN, a segment beyond the window, a challenge ACK, and the window update when
/// the host drains the receive ring (RFC 9293 §3.8.6.2.2).</item>
/// </list>
/// </summary>
internal sealed partial class TcpStack
{
    /// <summary>In-order data was taken: the ACK is decided at the end of the loop turn.</summary>
    private void DeferAck(TcpConnection c)
    {
        if (c.AckDeferred) return;
        c.AckDeferred = true;
        _ackDeferred.Add(c);
    }

    /// <summary>Whether the ACK of <paramref name="c"/>'s data must go out this turn rather than after the delay.</summary>
    private bool AckIsDue(TcpConnection c)
    {
        if (DelayedAckMs <= 0) return true;
        int full = Math.Max(c.RcvSegMax, MinMss);
        // RFC 1122 §4.2.3.2: at least every second full-sized segment.
        if (Seq.Diff(c.RcvNxt, c.RcvAcked) >= 2 * full) return true;
        // The guest must never wait on the window for an ACK that is being delayed.
        return PromisedWindow(c) < 2 * full;
    }

    /// <summary>End of the loop turn: one ACK per connection that took data and is due one; the rest start the delayed-ACK timer.</summary>
    public void OnEndOfBatch()
    {
        if (_ackDeferred.Count == 0) return;
        long now = _loop.NowMs;
        for (int i = 0; i < _ackDeferred.Count; i++)
        {
            var c = _ackDeferred[i];
            c.AckDeferred = false;
            if (c.State == TcpState.Closed) continue;
            if (c.HostWriteQueued && c.HostSocket is not null)
            {
                c.HostWriteQueued = false;
                // The turn's data for the host, in one write; what the socket does not take waits for EPOLLOUT.
                FlushToHost(c, announceWindow: false);
                if (c.State == TcpState.Closed) continue;
                UpdateHostInterest(c);
                MaybeFinish(c);
                if (c.State == TcpState.Closed) continue;
            }
            if (!c.IsSynchronized) continue;
            if (c.RcvAcked == c.RcvNxt)
            {
                // The ACK went out earlier this turn with the window the full ring left (a closing window is ACKed at
                // once); the turn's write has drained the ring since, so announce the window reopening, or the guest,
                // held below two segments, waits (RFC 9293 §3.8.6.2.2).
                if (PromisedWindow(c) < 2 * Math.Max(c.RcvSegMax, MinMss) && WindowToAdvertise(c) > PromisedWindow(c)) SendAck(c);
                continue;
            }
            if (AckIsDue(c)) SendAck(c);
            else if (c.AckDeadline == long.MaxValue) Arm(ref c.AckDeadline, now + DelayedAckMs);
        }
        _ackDeferred.Clear();
    }
}
