using Emunet.Engine.Link;
using Emunet.Engine.Stack.Nat;
using Emunet.Engine.Wire;

namespace Emunet.Engine.Stack.Tcp;

/// <summary>Segments to the guest: data from the send ring, control segments, resets.</summary>
internal sealed partial class TcpStack
{
    /// <summary>Bytes in the send ring not sent yet (negative once a FIN was sent past them).</summary>
    private static int UnsentBytes(TcpConnection c) => Seq.Diff(Seq.Add(c.RingSeq, c.SendRing.Count), c.SndNxt);

    /// <summary>
    /// Sends what the windows allow (RFC 9293 §3.8.6, RFC 5681), then the FIN after the last byte once the host closed;
    /// with <paramref name="ackNow"/> an ACK goes out even when no data does. Arms the retransmission and persist timers.
    /// </summary>
    private void Output(TcpConnection c, bool ackNow)
    {
        if (!c.IsSynchronized)
        {
            if (ackNow && c.State == TcpState.SynReceived) SendAck(c);
            return;
        }
        bool sent = false;
        long now = _loop.NowMs;
        while (true)
        {
            uint dataEnd = Seq.Add(c.RingSeq, c.SendRing.Count);
            int unsent = Seq.Diff(dataEnd, c.SndNxt);
            if (unsent > 0)
            {
                int inFlight = Seq.Diff(c.SndNxt, c.SndUna);
                int usable = Math.Min(c.SndWnd, c.Cwnd) - inFlight;
                if (usable <= 0) break;
                int len = Math.Min(Math.Min(MaxSegmentPayload(c), unsent), usable);
                // RFC 9293 §3.8.6.2.1 sender SWS avoidance: no small segment while data is in flight, unless it is the
                // last of the data or at least half the largest window the guest offered.
                if (len < c.Mss && len < unsent && inFlight > 0 && len < c.MaxSndWnd / 2) break;
                bool fin = c.HostEof && len == unsent;
                var flags = TcpFlags.Ack | (len == unsent ? TcpFlags.Psh : 0) | (fin ? TcpFlags.Fin : 0);
                if (!EmitSegment(c, c.SndNxt, len, flags, synOptions: false)) return;
                Advance(c, len, fin, now);
                sent = true;
                continue;
            }
            if (unsent == 0 && c.HostEof)
            {
                // RFC 9293 §3.10.4: the FIN follows the data; it is sent whatever the window (it carries no data).
                if (!EmitSegment(c, c.SndNxt, 0, TcpFlags.Ack | TcpFlags.Fin, synOptions: false)) return;
                Advance(c, 0, fin: true, now);
                sent = true;
            }
            break;
        }
        if (!sent && (ackNow || c.AckPending)) SendAck(c);

        // RFC 9293 §3.8.6.1: a zero window with data waiting and nothing in flight starts the persist timer.
        if (c.SndWnd == 0 && c.SndUna == c.SndNxt && UnsentBytes(c) > 0 && c.PersistDeadline == long.MaxValue)
            Arm(ref c.PersistDeadline, now + c.RtoMs);
    }

    private void Advance(TcpConnection c, int len, bool fin, long now)
    {
        uint start = c.SndNxt;
        bool newData = Seq.Ge(start, c.SndMax);
        if (fin && !c.FinSent)
        {
            c.FinSent = true;
            c.FinSeq = Seq.Add(start, len);
            c.State = c.State switch
            {
                TcpState.Established => TcpState.FinWait1,
                TcpState.CloseWait => TcpState.LastAck,
                _ => c.State,
            };
        }
        c.SndNxt = Seq.Add(start, len + (fin ? 1 : 0));
        if (Seq.Gt(c.SndNxt, c.SndMax))
        {
            c.BytesToGuest += Seq.Diff(c.SndNxt, c.SndMax) - (fin ? 1 : 0);
            c.SndMax = c.SndNxt;
            // RFC 6298 (Karn): time one segment at a time, never a retransmitted one.
            if (!c.RttTiming && newData)
            {
                c.RttTiming = true;
                c.RttSeq = c.SndNxt;
                c.RttStart = now;
            }
        }
        // RFC 6298 (5.1): start the timer when it is not running.
        if (c.RtoDeadline == long.MaxValue) Arm(ref c.RtoDeadline, now + c.RtoMs);
    }

    /// <summary>Resends the first unacknowledged segment (fast retransmit, NewReno partial ACK) without moving SND.NXT.</summary>
    private void RetransmitFirst(TcpConnection c)
    {
        uint dataEnd = Seq.Add(c.RingSeq, c.SendRing.Count);
        int len = Math.Min(c.Mss, Math.Max(0, Seq.Diff(dataEnd, c.SndUna)));
        len = Math.Min(len, Math.Max(0, Seq.Diff(c.SndMax, c.SndUna)));
        bool fin = c.FinSent && Seq.Add(c.SndUna, len) == c.FinSeq;
        if (len == 0 && !fin) return;
        EmitSegment(c, c.SndUna, len, TcpFlags.Ack | (fin ? TcpFlags.Fin : 0), synOptions: false);
    }

    private void SendAck(TcpConnection c)
    {
        EmitSegment(c, c.SndNxt, 0, TcpFlags.Ack, synOptions: false);
    }

    private void SendSyn(TcpConnection c) => EmitSegment(c, c.Iss, 0, TcpFlags.Syn, synOptions: true);

    private void SendSynAck(TcpConnection c) => EmitSegment(c, c.Iss, 0, TcpFlags.Syn | TcpFlags.Ack, synOptions: true);

    /// <summary>A RST for a connection being aborted (RFC 9293 §3.10.7.4: SEQ = SND.NXT).</summary>
    private void SendReset(TcpConnection c)
    {
        if (c.State == TcpState.SynSent) return; // the guest has no connection to reset yet
        if (c.State == TcpState.Connecting)
        {
            // No SYN-ACK went out: answer the held SYN like a closed port (RFC 9293 §3.10.7.1).
            EmitRaw(c.PeerAddress, c.GuestAddress, c.PeerPort, c.GuestPort, 0, c.RcvNxt, TcpFlags.Rst | TcpFlags.Ack);
            return;
        }
        EmitRaw(c.PeerAddress, c.GuestAddress, c.PeerPort, c.GuestPort, c.SndNxt, c.RcvNxt, TcpFlags.Rst | TcpFlags.Ack);
    }

    /// <summary>RFC 9293 §3.10.7.1: the reset that answers <paramref name="seg"/> (never a RST).</summary>
    private void SendResetFor(FlowAddress guest, FlowAddress peer, in TcpSegment seg)
    {
        if (seg.Rst) return;
        if (seg.Ack)
            EmitRaw(peer, guest, seg.DestinationPort, seg.SourcePort, seg.AcknowledgmentNumber, 0, TcpFlags.Rst);
        else
            EmitRaw(peer, guest, seg.DestinationPort, seg.SourcePort, 0,
                Seq.Add(seg.SequenceNumber, seg.SequenceLength), TcpFlags.Rst | TcpFlags.Ack);
    }

    /// <summary>A header-only segment outside any connection. Dropped (counted by the device) when the device is full.</summary>
    private void EmitRaw(FlowAddress source, FlowAddress destination, ushort sourcePort, ushort destinationPort, uint seq, uint ack, TcpFlags flags)
    {
        var packet = _sender.BeginFlowPacket(source, destination, IPv4Packet.ProtocolTcp, TcpSegment.MinHeaderLength);
        var span = packet.Payload;
        if (span.Length < TcpSegment.MinHeaderLength) { _transmitBlocked = true; return; }
        var f = new TcpFields
        {
            SourcePort = sourcePort,
            DestinationPort = destinationPort,
            SequenceNumber = seq,
            AcknowledgmentNumber = ack,
            Flags = flags,
            Window = 0,
            WindowScale = -1,
        };
        packet.Commit(f.Emit(span, FlowAddress.PseudoHeaderBase(source, destination, IPv4Packet.ProtocolTcp), 0));
    }

    /// <summary>
    /// One segment of the connection: <paramref name="len"/> bytes of the send ring from <paramref name="seq"/>, the
    /// current ACK and window. False when the device is full: the connection waits for <see cref="OnTransmitReady"/>.
    /// </summary>
    private bool EmitSegment(TcpConnection c, uint seq, int len, TcpFlags flags, bool synOptions)
    {
        var f = new TcpFields
        {
            SourcePort = c.PeerPort,
            DestinationPort = c.GuestPort,
            SequenceNumber = seq,
            AcknowledgmentNumber = (flags & TcpFlags.Ack) != 0 ? c.RcvNxt : 0,
            Flags = flags,
            WindowScale = -1,
        };
        int free = c.ReceiveRing.Free;
        if (synOptions)
        {
            // RFC 7323 §2.2: a SYN's window is not scaled; the option is offered in a SYN, answered in a SYN-ACK.
            f.Window = (ushort)Math.Min(free, ushort.MaxValue);
            f.MaxSegmentSize = (ushort)c.RcvMss;
            if ((flags & TcpFlags.Ack) == 0 || c.WindowScaling) f.WindowScale = c.RcvScale;
        }
        else
        {
            f.Window = (ushort)Math.Min(WindowToAdvertise(c) >> c.RcvScale, ushort.MaxValue);
        }
        int headerLength = f.HeaderLength;
        var offload = OffloadFor(c, headerLength, len);
        uint pseudo = FlowAddress.PseudoHeaderBase(c.PeerAddress, c.GuestAddress, IPv4Packet.ProtocolTcp);
        if (!(offload.PartialChecksum && TrySendDirect(c, seq, len, in f, pseudo, in offload)))
        {
            var packet = _sender.BeginFlowPacket(c.PeerAddress, c.GuestAddress, IPv4Packet.ProtocolTcp, headerLength + len);
            var span = packet.Payload;
            if (span.Length < headerLength + len)
            {
                _transmitBlocked = true;
                if ((flags & (TcpFlags.Syn | TcpFlags.Rst)) == 0) c.AckPending = true;
                QueueTransmit(c);
                return false;
            }
            if (len > 0) c.SendRing.CopyTo(Seq.Diff(seq, c.RingSeq), span.Slice(headerLength, len));
            packet.Commit(f.Emit(span, pseudo, len, offload.PartialChecksum), in offload);
        }
        if ((flags & TcpFlags.Ack) != 0)
        {
            c.RcvAdvEdge = Seq.Add(c.RcvNxt, synOptions ? f.Window : f.Window << c.RcvScale);
            c.RcvAdvSet = true;
            c.AckPending = false;
            c.RcvAcked = c.RcvNxt; // whatever carried it, the ACK owed is sent: the delayed ACK has nothing left to do
            c.AckDeadline = long.MaxValue;
        }
        return true;
    }

    /// <summary>
    /// Direct receive: the header built on the stack and the payload handed over where it lies in the send ring (up
    /// to two pieces, the ring may wrap), for the device to write straight into the guest's buffers. Only when the
    /// device finishes the checksum (<paramref name="offload"/> is partial), so the payload is read once, by that copy.
    /// </summary>
    private bool TrySendDirect(TcpConnection c, uint seq, int len, in TcpFields f, uint pseudo, in TransmitOffload offload)
    {
        Span<byte> header = stackalloc byte[TcpSegment.MaxHeaderLength];
        header = header[..f.HeaderLength];
        f.Emit(header, pseudo, len, partialChecksum: true);
        ReadOnlySpan<byte> body = default, tail = default;
        if (len > 0)
        {
            int offset = Seq.Diff(seq, c.RingSeq);
            body = c.SendRing.ReadableSpan(offset);
            if (body.Length >= len) body = body[..len];
            else tail = c.SendRing.ReadableSpan(offset + body.Length)[..(len - body.Length)];
        }
        return _sender.TrySendDirect(c.PeerAddress, c.GuestAddress, IPv4Packet.ProtocolTcp, header, body, tail, in offload);
    }

    /// <summary>The part of the promised window (right edge minus RCV.NXT) still open.</summary>
    private static int PromisedWindow(TcpConnection c) =>
        c.RcvAdvSet ? Math.Clamp(Seq.Diff(c.RcvAdvEdge, c.RcvNxt), 0, c.ReceiveRing.Free) : 0;

    /// <summary>
    /// The window to advertise: the receive ring's free space, but the right edge only moves on by at least
    /// min(buffer / 2, MSS) at a time (receiver SWS avoidance, RFC 9293 §3.8.6.2.2), so a slowly draining host peer
    /// does not invite a stream of tiny segments.
    /// </summary>
    private static int WindowToAdvertise(TcpConnection c)
    {
        int free = c.ReceiveRing.Free;
        if (!c.RcvAdvSet) return free;
        int promised = PromisedWindow(c);
        return free - promised >= Math.Min(c.ReceiveRing.Capacity / 2, c.RcvMss) ? free : promised;
    }

    // ---- What the device finishes (Link offloads): the one place the TCP sender asks ------------------------------

    /// <summary>The largest TCP payload one frame toward the guest may carry: 64 KiB less the IPv4 and largest TCP header.</summary>
    private const int MaxSuperSegmentPayload = ushort.MaxValue - IPv4Packet.MinHeaderLength - TcpSegment.MaxHeaderLength;

    /// <summary>
    /// The payload one segment toward the guest may carry: the guest's MSS, or when the device segments for the guest
    /// (<see cref="LinkOffloads.TcpSegmentation"/>) the most whole MSS-sized segments that fit one 64 KiB frame. The
    /// guest's stack sees segments of its MSS either way (RFC 9293 §3.7.1 holds on the wire it sees).
    /// </summary>
    private int MaxSegmentPayload(TcpConnection c)
    {
        // The device cuts TCPv4 only (GUEST_TSO4); IPv6 segments stay at the MSS.
        if ((_sender.Offloads & LinkOffloads.TcpSegmentation) == 0 || c.Mss <= 0 || c.Mss >= MaxSuperSegmentPayload || !c.GuestAddress.IsIPv4) return c.Mss;
        return MaxSuperSegmentPayload / c.Mss * c.Mss;
    }

    /// <summary>What this segment leaves to the device: the checksum when it can finish it, the cutting when it carries more than the MSS.</summary>
    private TransmitOffload OffloadFor(TcpConnection c, int headerLength, int len)
    {
        var offloads = _sender.Offloads;
        // IPv6 packets go out whole: their checksum is finished here (the link's offload contract is IPv4's today).
        if ((offloads & LinkOffloads.PartialChecksum) == 0 || !c.GuestAddress.IsIPv4) return default;
        bool segmented = len > c.Mss && (offloads & LinkOffloads.TcpSegmentation) != 0;
        return new TransmitOffload
        {
            PartialChecksum = true,
            ChecksumOffset = TcpSegment.Offsets.Checksum,
            SegmentSize = segmented ? c.Mss : 0,
            HeaderLength = segmented ? headerLength : 0,
        };
    }

    private void QueueTransmit(TcpConnection c)
    {
        if (c.WaitingTransmit) return;
        c.WaitingTransmit = true;
        _txWaiters.Add(c);
    }
}
