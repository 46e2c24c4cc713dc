using Emunet.Engine.Diagnostics;
using System.Net;
using System.Net.Sockets;
using Emunet.Engine.Interop;
using Emunet.Engine.Stack.Nat;
using Emunet.Engine.Wire;
using Microsoft.Extensions.Logging;

namespace Emunet.Engine.Stack.Tcp;

/// <summary>Opening: a segment that matches no connection, and the guest's SYN held while a host socket connects.</summary>
internal sealed partial class TcpStack
{
    /// <summary>RFC 9293 §3.10.7.1 (CLOSED) and §3.10.7.2 (LISTEN): a segment that matches no connection.</summary>
    private void OnNoConnection(FlowAddress source, FlowAddress destination, in TcpSegment seg)
    {
        if (seg.Rst)
        {
            // An incoming RST with no connection is discarded.
            _counters.Drop(DropReason.TcpNoConnection);
            return;
        }
        if (seg.Ack || !seg.Syn)
        {
            _counters.Drop(DropReason.TcpNoConnection);
            SendResetFor(source, destination, seg);
            return;
        }
        if (!AdmitOutbound())
        {
            SendResetFor(source, destination, seg);
            return;
        }
        var verdict = _map.MapOutbound(RemapProtocol.Tcp, destination, seg.DestinationPort, out var hostAddress, out int hostPort);
        if (verdict != OutboundVerdict.Mapped)
        {
            // Refused the way a closed port is: the guest's connect() fails at once.
            _counters.Drop(verdict == OutboundVerdict.Denied ? DropReason.PolicyDenied : DropReason.TcpUnreachable);
            SendResetFor(source, destination, seg);
            return;
        }
        OpenOutbound(source, destination, seg, hostAddress, hostPort);
    }

    /// <summary>
    /// The guest's SYN: connect a host socket and hold the SYN until it has connected (the guest sees the host's answer:
    /// a SYN-ACK when the host accepted, a RST when it refused).
    /// </summary>
    private void OpenOutbound(FlowAddress source, FlowAddress destination, in TcpSegment seg, IPAddress hostAddress, int hostPort)
    {
        Socket host;
        try
        {
            host = new Socket(hostAddress.AddressFamily, SocketType.Stream, ProtocolType.Tcp) { Blocking = false, NoDelay = true };
        }
        catch (SocketException e)
        {
            if (e.SocketErrorCode == SocketError.TooManyOpenSockets) _flows.OutOfDescriptors(); // EMFILE/ENFILE
            else
            {
                if (_logger.IsEnabled(LogLevel.Warning)) _logger.LogWarning("tcp: cannot create a host socket: {Error}", e.SocketErrorCode);
                _counters.Drop(DropReason.TcpUnreachable);
            }
            SendResetFor(source, destination, seg);
            return;
        }
        if (_flows.AtHeadroom(host))
        {
            // The last descriptors are kept for the emulator and the control socket: refused as a closed port is.
            host.Dispose();
            SendResetFor(source, destination, seg);
            return;
        }
        var c = NewConnection(source, seg.SourcePort, destination, seg.DestinationPort, FlowDirection.Outbound, null);
        c.HostSocket = host;
        c.HostFd = (int)host.Handle;
        c.HostRemote = new IPEndPoint(hostAddress, hostPort);
        c.State = TcpState.Connecting;
        c.Irs = seg.SequenceNumber;
        c.RcvNxt = Seq.Add(c.Irs, 1);
        var options = seg.ParseOptions();
        ApplySynOptions(c, options, offeredScale: options.WindowScale >= 0);
        c.SndWnd = seg.Window; // RFC 7323 §2.2: the window of a SYN is never scaled.
        c.MaxSndWnd = c.SndWnd;
        c.SndWl1 = c.Irs;
        c.SndWl2 = c.Iss;
        if (!Insert(c))
        {
            host.Dispose();
            c.HostSocket = null;
            Free(c);
            SendResetFor(source, destination, seg);
            return;
        }
        // A non-blocking connect to loopback is nearly always pending (EINPROGRESS); an interrupted one goes on in the
        // background (connect(2)). Either way the socket turns writable when it has finished.
        int errno = Libc.ConnectNonBlocking(c.HostFd, hostAddress, hostPort);
        bool pending = errno is Libc.EINPROGRESS or Libc.EINTR;
        if (errno != 0 && !pending)
        {
            if (_logger.IsEnabled(LogLevel.Debug)) _logger.LogDebug("tcp {Id}: connect to {Remote} failed: errno {Error}", c.Id, c.HostRemote, errno);
            Reset(c, resetGuest: true, resetHost: false);
            return;
        }
        if (_logger.IsEnabled(LogLevel.Debug))
            _logger.LogDebug("tcp {Id}: guest {Guest}:{Port} -> {Remote}", c.Id, source, c.GuestPort, c.HostRemote);
        if (pending)
        {
            UpdateHostInterest(c);
            Arm(ref c.RtoDeadline, _loop.NowMs + ConnectTimeoutMs);
        }
        else OnHostConnected(c);
    }

    /// <summary>MSS and window scale from the guest's SYN or SYN-ACK (RFC 9293 §3.7.1, RFC 7323 §2.2-2.3).</summary>
    private void ApplySynOptions(TcpConnection c, in TcpOptions options, bool offeredScale)
    {
        int guestMss = options.MaxSegmentSize > 0 ? options.MaxSegmentSize : DefaultGuestMss;
        c.Mss = Math.Clamp(guestMss, MinMss, LocalMssFor(c.GuestAddress));
        if (offeredScale && options.WindowScale >= 0)
        {
            // RFC 7323 §2.3: a shift above 14 is taken as 14.
            c.SndScale = Math.Min(options.WindowScale, 14);
            c.RcvScale = LocalWindowScale;
            c.WindowScaling = true;
        }
        else
        {
            c.SndScale = 0;
            c.RcvScale = 0;
            c.WindowScaling = false;
        }
        // RFC 5681 §3.1 with RFC 6928's initial window of ten segments.
        c.Cwnd = 10 * c.Mss;
    }
}
