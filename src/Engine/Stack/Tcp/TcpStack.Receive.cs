using Emunet.Engine.Diagnostics;
using System.Net;
using System.Net.Sockets;
using Emunet.Engine.Interop;
using Emunet.Engine.Stack.Nat;
using Emunet.Engine.Wire;
using Microsoft.Extensions.Logging;

namespace Emunet.Engine.Stack.Tcp;

/// <summary>Segments from the guest: the event processing of RFC 9293 §3.10.7.</summary>
internal sealed partial class TcpStack
{
    private void OnConnectionSegment(TcpConnection c, in TcpSegment seg)
    {
        if (_logger.IsEnabled(LogLevel.Trace))
            _logger.LogTrace("tcp {Id} {State}: guest [{Flags}] seq={Seq} ack={Ack} win={Win} len={Len}", c.Id, c.State, seg.Flags,
                seg.SequenceNumber, seg.AcknowledgmentNumber, seg.Window, seg.Payload.Length);
        switch (c.State)
        {
            case TcpState.Connecting:
                OnSegmentWhileConnecting(c, seg);
                return;
            case TcpState.SynSent:
                OnSegmentInSynSent(c, seg);
                return;
            default:
                OnSegmentSynchronized(c, seg);
                MaybeFinish(c);
                return;
        }
    }

    /// <summary>The guest's SYN is held while the host connects: retransmitted SYNs are absorbed.</summary>
    private void OnSegmentWhileConnecting(TcpConnection c, in TcpSegment seg)
    {
        if (seg.Rst)
        {
            // The guest gave up; the host connect is abandoned.
            if (seg.SequenceNumber == c.RcvNxt || seg.SequenceNumber == c.Irs) Reset(c, resetGuest: false, resetHost: true);
            return;
        }
        if (seg.Syn && !seg.Ack && seg.SequenceNumber == c.Irs) return; // duplicate SYN
        _counters.Drop(DropReason.TcpOutOfWindow);
    }

    /// <summary>RFC 9293 §3.10.7.3: a forwarded connection waits for the guest's SYN-ACK.</summary>
    private void OnSegmentInSynSent(TcpConnection c, in TcpSegment seg)
    {
        uint expected = Seq.Add(c.Iss, 1);
        if (seg.Ack && seg.AcknowledgmentNumber != expected)
        {
            _counters.Drop(DropReason.TcpOutOfWindow);
            if (!seg.Rst) SendResetFor(c.GuestAddress, c.PeerAddress, seg);
            return;
        }
        if (seg.Rst)
        {
            if (!seg.Ack) return; // RFC 9293 §3.10.7.3: a RST without an acceptable ACK is dropped
            // The guest port is closed: the host client is reset at once.
            if (_logger.IsEnabled(LogLevel.Debug)) _logger.LogDebug("tcp {Id}: guest port {Port} refused the forward", c.Id, c.GuestPort);
            _counters.Drop(DropReason.ForwardRefused);
            Reset(c, resetGuest: false, resetHost: true);
            return;
        }
        if (!seg.Syn || !seg.Ack)
        {
            // A simultaneous open from the guest is not a case forwards meet; drop and let the SYN be retransmitted.
            _counters.Drop(DropReason.TcpOutOfWindow);
            return;
        }
        c.Irs = seg.SequenceNumber;
        c.RcvNxt = Seq.Add(c.Irs, 1);
        ApplySynOptions(c, seg.ParseOptions(), offeredScale: true);
        c.SndUna = expected;
        c.SndWnd = seg.Window; // not scaled in a SYN-ACK (RFC 7323 §2.2)
        c.MaxSndWnd = c.SndWnd;
        c.SndWl1 = c.Irs;
        c.SndWl2 = expected;
        c.State = TcpState.Established;
        c.Retries = 0;
        c.RtoMs = InitialRtoMs;
        c.RtoDeadline = long.MaxValue;
        Output(c, ackNow: true);
    }

    /// <summary>RFC 9293 §3.10.7.4: SYN-RECEIVED and every synchronized state.</summary>
    private void OnSegmentSynchronized(TcpConnection c, in TcpSegment seg)
    {
        uint seq = seg.SequenceNumber;
        var payload = seg.Payload;
        int segLen = seg.SequenceLength;
        int window = c.ReceiveRing.Free;

        if (c.State == TcpState.SynReceived && seg.Syn && !seg.Ack && seq == c.Irs)
        {
            // The guest lost our SYN-ACK and sent its SYN again.
            SendSynAck(c);
            return;
        }

        // First: is the sequence number acceptable?
        uint rcvEnd = Seq.Add(c.RcvNxt, window);
        bool acceptable = segLen == 0
            ? (window == 0 ? seq == c.RcvNxt : Seq.InRange(seq, c.RcvNxt, rcvEnd))
            : window > 0 && (Seq.InRange(seq, c.RcvNxt, rcvEnd) || Seq.InRange(Seq.Add(seq, segLen - 1), c.RcvNxt, rcvEnd));
        if (!acceptable)
        {
            if (seg.Rst) return;
            _counters.Drop(DropReason.TcpOutOfWindow);
            // A zero window still takes ACKs at RCV.NXT (RFC 9293 §3.10.7.4: "valid ACKs ... MUST be processed").
            if (seq == c.RcvNxt && seg.Ack && !seg.Syn && c.State != TcpState.SynReceived)
            {
                if (!ProcessAck(c, seg)) return;
            }
            if (c.State != TcpState.Closed) Output(c, ackNow: true);
            return;
        }

        // Second: RST (RFC 9293 §3.10.7.4 with RFC 5961 §3.2: exact match resets, in-window gets a challenge ACK).
        if (seg.Rst)
        {
            if (seq == c.RcvNxt)
            {
                if (_logger.IsEnabled(LogLevel.Debug)) _logger.LogDebug("tcp {Id}: guest reset the connection", c.Id);
                Reset(c, resetGuest: false, resetHost: true);
            }
            else SendAck(c);
            return;
        }

        // Fourth: a SYN in a synchronized state gets a challenge ACK (RFC 5961 §4).
        if (seg.Syn)
        {
            SendAck(c);
            return;
        }

        // Fifth: the ACK field.
        if (!seg.Ack) return;
        if (c.State == TcpState.SynReceived)
        {
            uint ack = seg.AcknowledgmentNumber;
            if (!(Seq.Lt(c.SndUna, ack) && Seq.Le(ack, c.SndMax)))
            {
                SendResetFor(c.GuestAddress, c.PeerAddress, seg);
                return;
            }
            c.State = TcpState.Established;
            c.SndWnd = seg.Window << c.SndScale;
            c.MaxSndWnd = Math.Max(c.MaxSndWnd, c.SndWnd);
            c.SndWl1 = seq;
            c.SndWl2 = ack;
        }
        if (!ProcessAck(c, seg)) return;

        // Seventh: the data.
        bool ackNow = false;
        bool deferAck = false;
        if (payload.Length > 0 && !c.GuestFin)
        {
            if (payload.Length > c.RcvSegMax) c.RcvSegMax = Math.Min(payload.Length, c.RcvMss);
            if (Seq.Gt(seq, c.RcvNxt))
            {
                // Out of order: the virtual link does not reorder, so hold nothing; the duplicate ACK asks for the gap
                // (RFC 9293 §3.10.7.4 allows dropping segments beyond RCV.NXT).
                _counters.Drop(DropReason.TcpOutOfOrder);
                Output(c, ackNow: true);
                return;
            }
            int skip = Seq.Diff(c.RcvNxt, seq); // 0 <= skip <= payload.Length: the segment overlaps RCV.NXT (checked above)
            var fresh = payload[Math.Min(skip, payload.Length)..];
            int take = Math.Min(fresh.Length, c.ReceiveRing.Free);
            if (take > 0)
            {
                int taken = DeliverToHost(c, fresh[..take]);
                if (taken < 0) return;
                if (taken < take) _counters.Drop(DropReason.TcpBufferBudget); // not stored, so not acknowledged: resent later
                take = taken;
                c.RcvNxt = Seq.Add(c.RcvNxt, take);
                c.BytesFromGuest += take;
            }
            // New in-order data waits for the end of the turn (TcpStack.Ack.cs); a retransmission that overlaps what
            // was taken already is acknowledged at once (RFC 5681 §4.2), as is data the window could not take.
            if (skip == 0 && take > 0) deferAck = true;
            else ackNow = true;
            if (take < fresh.Length)
            {
                // Beyond the window: trimmed; the FIN (if any) waits for the retransmission.
                Output(c, ackNow: true);
                return;
            }
        }

        // Eighth: FIN, once everything before it has been taken.
        if (seg.Fin && !c.GuestFin && Seq.Add(seq, payload.Length) == c.RcvNxt)
        {
            c.RcvNxt = Seq.Add(c.RcvNxt, 1);
            c.GuestFin = true;
            c.State = c.State switch
            {
                TcpState.Established => TcpState.CloseWait,
                TcpState.FinWait1 => TcpState.Closing,
                TcpState.FinWait2 => TcpState.TimeWait,
                _ => c.State,
            };
            if (c.ReceiveRing.IsEmpty) ShutdownHostSend(c);
            ackNow = true;
        }
        if (c.State == TcpState.Closed) return;
        if (deferAck && !ackNow) DeferAck(c);
        Output(c, ackNow);
    }

    /// <summary>
    /// The ACK field of an acceptable segment (RFC 9293 §3.10.7.4 fifth check, RFC 5681, RFC 6298).
    /// Returns false when the segment must not be processed further.
    /// </summary>
    private bool ProcessAck(TcpConnection c, in TcpSegment seg)
    {
        uint ack = seg.AcknowledgmentNumber;
        uint seq = seg.SequenceNumber;
        if (Seq.Gt(ack, c.SndMax))
        {
            // Acknowledges something not yet sent.
            SendAck(c);
            return false;
        }
        if (Seq.Lt(ack, c.SndUna)) return true; // an old duplicate: ignore the ACK field

        // Window update, only from a segment not older than the last one used (SND.WL1/WL2).
        bool windowChanged = false;
        if (Seq.Lt(c.SndWl1, seq) || (c.SndWl1 == seq && Seq.Le(c.SndWl2, ack)))
        {
            int wnd = seg.Window << c.SndScale; // at most 65535 << 14 < 2^31
            windowChanged = wnd != c.SndWnd;
            c.SndWnd = wnd;
            c.SndWl1 = seq;
            c.SndWl2 = ack;
            if (wnd > c.MaxSndWnd) c.MaxSndWnd = wnd;
            if (wnd > 0) { c.PersistDeadline = long.MaxValue; c.PersistBackoff = 0; }
        }

        int acked = Seq.Diff(ack, c.SndUna);
        if (acked == 0)
        {
            // RFC 5681 §2: a duplicate ACK carries no data, no SYN/FIN, the same window, with data outstanding.
            if (seg.Payload.Length == 0 && !seg.Fin && !windowChanged && c.SndUna != c.SndMax)
            {
                c.DupAcks++;
                if (c.DupAcks == 3) FastRetransmit(c);
                else if (c.DupAcks > 3 && c.InRecovery) c.Cwnd = Math.Min(c.Cwnd + c.Mss, MaxCwnd(c));
            }
            return true;
        }

        long now = _loop.NowMs;
        c.DupAcks = 0;
        if (c.RttTiming && Seq.Ge(ack, c.RttSeq))
        {
            c.RttTiming = false;
            UpdateRto(c, (int)Math.Min(now - c.RttStart, int.MaxValue));
        }

        // Release acknowledged data; SYN and FIN occupy sequence space but not the ring.
        uint dataAcked = c.FinSent && Seq.Gt(ack, c.FinSeq) ? c.FinSeq : ack;
        if (Seq.Gt(dataAcked, c.RingSeq))
        {
            int n = Math.Min(Seq.Diff(dataAcked, c.RingSeq), c.SendRing.Count);
            c.SendRing.Consume(n);
            c.RingSeq = Seq.Add(c.RingSeq, n);
        }
        c.SndUna = ack;
        if (Seq.Lt(c.SndNxt, c.SndUna)) c.SndNxt = c.SndUna;

        // RFC 5681 §3.1 slow start / congestion avoidance; RFC 6582 NewReno recovery.
        if (c.InRecovery)
        {
            if (Seq.Ge(ack, c.Recover)) { c.InRecovery = false; c.Cwnd = c.Ssthresh; }
            else
            {
                RetransmitFirst(c);
                c.Cwnd = Math.Max(c.Cwnd - acked + c.Mss, c.Mss);
            }
        }
        else if (c.Cwnd < c.Ssthresh) c.Cwnd = Math.Min(c.Cwnd + Math.Min(acked, c.Mss), MaxCwnd(c));
        // Congestion avoidance counts bytes acknowledged (RFC 3465 §2.1), not ACKs: the same as SMSS*SMSS/cwnd per ACK of
        // one segment, and not slower when one ACK covers a 64 KiB segment the device cut for the guest.
        else c.Cwnd = Math.Min(c.Cwnd + Math.Max(1, (int)((long)c.Mss * Math.Max(acked, 0) / c.Cwnd)), MaxCwnd(c));

        // RFC 6298 (5.2)/(5.3).
        c.Retries = 0;
        if (c.SndUna == c.SndMax) c.RtoDeadline = long.MaxValue;
        else Arm(ref c.RtoDeadline, now + c.RtoMs);

        if (c.FinSent && !c.FinAcked && Seq.Gt(ack, c.FinSeq))
        {
            c.FinAcked = true;
            c.State = c.State switch
            {
                TcpState.FinWait1 => TcpState.FinWait2,
                TcpState.Closing => TcpState.TimeWait,
                TcpState.LastAck => TcpState.TimeWait,
                _ => c.State,
            };
        }
        UpdateHostInterest(c);
        return true;
    }

    private static int MaxCwnd(TcpConnection c) => 2 * c.SendRing.Capacity + 10 * c.Mss;

    /// <summary>RFC 6298 (2.2)/(2.3): SRTT and RTTVAR from one measurement, then RTO with the minimum and maximum.</summary>
    private void UpdateRto(TcpConnection c, int r)
    {
        if (c.SrttMs < 0)
        {
            c.SrttMs = r;
            c.RttVarMs = r / 2;
        }
        else
        {
            c.RttVarMs = (3 * c.RttVarMs + Math.Abs(c.SrttMs - r)) / 4;
            c.SrttMs = (7 * c.SrttMs + r) / 8;
        }
        c.RtoMs = Math.Clamp(c.SrttMs + Math.Max(1, 4 * c.RttVarMs), MinRtoMs, MaxRtoMs);
    }

    /// <summary>RFC 5681 §3.2: the third duplicate ACK resends the first unacknowledged segment and enters recovery.</summary>
    private void FastRetransmit(TcpConnection c)
    {
        if (c.InRecovery) return;
        int flight = Seq.Diff(c.SndMax, c.SndUna);
        c.Ssthresh = Math.Max(flight / 2, 2 * c.Mss);
        c.InRecovery = true;
        c.Recover = c.SndMax;
        c.RttTiming = false;
        RetransmitFirst(c);
        c.Cwnd = c.Ssthresh + 3 * c.Mss;
    }

    /// <summary>
    /// Queues guest data for the host socket: it joins the receive ring, and the ring is written once at the end of the
    /// loop turn (<see cref="OnEndOfBatch"/>: one send per connection per turn, not one per segment). When the ring
    /// (capacity or buffer budget) cannot take it all, the ring is written now and what is left goes straight to the
    /// socket. Returns the bytes taken (what may be acknowledged), or -1 when the host socket failed and the connection
    /// was reset.
    /// </summary>
    private int DeliverToHost(TcpConnection c, ReadOnlySpan<byte> data)
    {
        int offered = data.Length;
        data = data[c.ReceiveRing.Write(data)..];
        if (!data.IsEmpty && c.HostSocket is not null)
        {
            if (!WriteRingToHost(c)) return -1;
            if (c.ReceiveRing.IsEmpty)
            {
                int n = c.HostSocket.Send(data, SocketFlags.None, out var error);
                if (error == SocketError.Success) data = data[n..];
                else if (error != SocketError.WouldBlock)
                {
                    OnHostError(c, error);
                    return -1;
                }
            }
            data = data[c.ReceiveRing.Write(data)..];
        }
        if (!c.ReceiveRing.IsEmpty && (c.HostEvents & Libc.EPOLLOUT) == 0)
        {
            // The end of the turn writes the ring (and decides the ACK); while EPOLLOUT is watched, the socket is
            // full and its readiness writes the ring instead.
            c.HostWriteQueued = true;
            DeferAck(c);
        }
        UpdateHostInterest(c);
        return offered - data.Length;
    }
}
