using Emunet.Engine.Diagnostics;
using System.Diagnostics;
using System.Net;
using System.Net.Sockets;
using Emunet.Engine.Forwarding;
using Emunet.Engine.Stack;
using Emunet.Engine.Stack.Nat;
using Emunet.Engine.Wire;
using Microsoft.Extensions.Logging.Abstractions;

namespace Emunet.Engine.Tests.Tcp;

/// <summary>Active opens into the guest (OpenToGuest) and the TCP forwarder.</summary>
public class TcpForwardTests
{
    /// <summary>The forward the tests' connections count against (xunit makes one per test).</summary>
    private readonly ForwardBinding forward = new("tcp:test");

    private const ushort GuestPort = 8080;

    /// <summary>A connected client/accepted pair on loopback: the accepted end is what a forwarder hands the stack.</summary>
    private static (Socket Client, Socket Accepted) ClientPair()
    {
        using var listener = HostSide.Listen();
        var client = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp) { ReceiveTimeout = 5000, SendTimeout = 5000 };
        client.Connect(new IPEndPoint(IPAddress.Loopback, HostSide.Port(listener)));
        var accepted = HostSide.Accept(listener);
        return (client, accepted);
    }

    /// <summary>Expects Emunet's SYN into the guest's port and answers it with a SYN-ACK; returns the guest's flow.</summary>
    private static GuestFlow AnswerSyn(TcpHarness h)
    {
        var syn = h.Next();
        Assert.Equal(TcpFlags.Syn, syn.Flags);
        Assert.Equal(TcpHarness.Gateway, syn.Source);
        Assert.Equal(TcpHarness.Guest, syn.Destination);
        Assert.Equal(GuestPort, syn.DestinationPort);
        Assert.True(syn.SourcePort >= 49152);
        Assert.Equal(1460, syn.Options.MaxSegmentSize);
        Assert.Equal(3, syn.Options.WindowScale);
        h.FromGuest(GuestPort, TcpHarness.Gateway, syn.SourcePort, 5000, syn.SeqNum + 1, TcpFlags.Syn | TcpFlags.Ack, 65535,
            mss: 1460, windowScale: 0);
        var ack = h.Next();
        Assert.Equal(TcpFlags.Ack, ack.Flags);
        Assert.Equal(5001u, ack.AckNum);
        Assert.Equal(syn.SeqNum + 1, ack.SeqNum);
        return new GuestFlow { GuestPort = GuestPort, Peer = TcpHarness.Gateway, PeerPort = syn.SourcePort, Snd = 5001, Rcv = syn.SeqNum + 1 };
    }

    [Fact]
    public void OpenToGuestSplicesAfterTheGuestAccepts()
    {
        using var h = new TcpHarness();
        var (client, accepted) = ClientPair();
        using var clientScope = client;
        Assert.True(h.Invoke(t => t.OpenToGuest(accepted, TcpHarness.Guest, GuestPort, forward)));
        var flow = AnswerSyn(h);

        client.Send("ping"u8);
        Assert.Equal("ping"u8.ToArray(), h.Receive(flow, 4));
        h.Send(flow, "pong"u8);
        Assert.Equal(flow.Snd, h.Next().AckNum);
        Assert.Equal("pong"u8.ToArray(), HostSide.ReadExactly(client, 4));

        var info = new List<ConnectionInfo>();
        h.Invoke(_ => h.Flows.Snapshot(info));
        var ci = Assert.Single(info);
        Assert.Equal(FlowDirection.Forwarded, ci.Direction);
        Assert.Equal("tcp:test", ci.Forward);
        Assert.Equal(GuestPort, ci.GuestEndPoint.Port);
        Assert.Equal(((IPEndPoint)client.LocalEndPoint!).Port, ci.HostRemoteEndPoint!.Port);
        Assert.Equal(1, h.Invoke(_ => forward.ActiveFlows));

        // The client closes; the guest closes back; the connection is freed and the count drops.
        client.Shutdown(SocketShutdown.Send);
        var fin = h.Next();
        Assert.True(fin.Has(TcpFlags.Fin));
        flow.Rcv++;
        h.Ack(flow);
        h.Fin(flow);
        Assert.Equal(flow.Snd, h.Next().AckNum);
        Assert.Equal(SocketError.Success, HostSide.ReceiveError(client, out int n));
        Assert.Equal(0, n);
        var sw = Stopwatch.StartNew();
        while (h.Invoke(_ => forward.ActiveFlows) != 0)
        {
            Assert.True(sw.Elapsed < TcpHarness.Timeout);
            Thread.Sleep(5);
        }
    }

    [Fact]
    public void GuestPortClosedResetsTheClientAtOnce()
    {
        using var h = new TcpHarness();
        var (client, accepted) = ClientPair();
        using var clientScope = client;
        Assert.True(h.Invoke(t => t.OpenToGuest(accepted, TcpHarness.Guest, GuestPort, forward)));
        var syn = h.Next();
        Assert.Equal(TcpFlags.Syn, syn.Flags);
        // Linux's answer for a closed port.
        h.FromGuest(GuestPort, TcpHarness.Gateway, syn.SourcePort, 0, syn.SeqNum + 1, TcpFlags.Rst | TcpFlags.Ack, 0);
        var sw = Stopwatch.StartNew();
        Assert.Equal(SocketError.ConnectionReset, HostSide.ReceiveError(client, out _));
        Assert.True(sw.ElapsedMilliseconds < 1000);
        Assert.Equal(0, h.Invoke(t => t.ConnectionCount));
        Assert.Equal(1, h.Counters.Drops(DropReason.ForwardRefused));
    }

    [Fact]
    public void GuestAppDyingResetsTheClient()
    {
        using var h = new TcpHarness();
        var (client, accepted) = ClientPair();
        using var clientScope = client;
        Assert.True(h.Invoke(t => t.OpenToGuest(accepted, TcpHarness.Guest, GuestPort, forward)));
        var flow = AnswerSyn(h);
        h.FromGuest(GuestPort, TcpHarness.Gateway, flow.PeerPort, flow.Snd, flow.Rcv, TcpFlags.Rst | TcpFlags.Ack, 0);
        Assert.Equal(SocketError.ConnectionReset, HostSide.ReceiveError(client, out _));
    }

    [Fact]
    public void UnreachableGuestGetsSynRetransmissionsThenTheClientIsReset()
    {
        using var h = new TcpHarness(t => { t.InitialRtoMs = 50; t.MaxSynRetransmissions = 2; });
        h.Sender.RecordTimes = true; // the intervals between the engine's sends, whenever this thread takes them
        var (client, accepted) = ClientPair();
        using var clientScope = client;
        Assert.True(h.Invoke(t => t.OpenToGuest(accepted, TcpHarness.Guest, GuestPort, forward)));
        var first = h.Next(keepSynRetransmissions: true);
        var second = h.Next(keepSynRetransmissions: true);
        var third = h.Next(keepSynRetransmissions: true);
        foreach (var s in new[] { first, second, third })
        {
            Assert.Equal(TcpFlags.Syn, s.Flags);
            Assert.Equal(first.SeqNum, s.SeqNum);
        }
        double t1 = Stopwatch.GetElapsedTime(h.Sender.CommitTime(first.Raw), h.Sender.CommitTime(second.Raw)).TotalMilliseconds;
        double t2 = Stopwatch.GetElapsedTime(h.Sender.CommitTime(second.Raw), h.Sender.CommitTime(third.Raw)).TotalMilliseconds;
        // RFC 6298 §5.5: 50 ms, then twice that (the loop's timers are coarse: a few ms either way).
        Assert.True(t1 >= 40 && t2 >= 1.6 * t1 && t2 >= 80, $"no backoff: {t1:0} ms then {t2:0} ms");
        Assert.Equal(SocketError.ConnectionReset, HostSide.ReceiveError(client, out _));
        Assert.Equal(0, h.Invoke(t => t.ConnectionCount));
    }

    [Fact]
    public void ForwarderAcceptsOpensAndForceStopResets()
    {
        using var h = new TcpHarness();
        var spec = ForwardSpec.Create(ForwardProtocol.Tcp, 0, GuestPort);
        var fwd = new TcpForwarder(h.Loop, h.Tcp, () => TcpHarness.Guest, spec, h.Counters, NullLogger.Instance);
        h.Invoke(_ => fwd.Start());
        Assert.True(fwd.BoundPort > 0);

        using var client = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp) { ReceiveTimeout = 5000 };
        client.Connect(new IPEndPoint(IPAddress.Loopback, fwd.BoundPort));
        var flow = AnswerSyn(h);
        var fi = h.Invoke(_ => fwd.Info);
        Assert.Equal(1L, fi.TotalConnections);
        Assert.Equal(1, fi.ActiveConnections);
        Assert.Equal(fwd.BoundPort, fi.BoundPort);
        // Asked for port 0, the forward is known by the port it got.
        Assert.Equal(spec with { HostPort = fwd.BoundPort }, fi.Spec);
        var info = new List<ConnectionInfo>();
        h.Invoke(_ => h.Flows.Snapshot(info));
        Assert.Equal(fi.Spec.ToString(), Assert.Single(info).Forward);

        client.Send("x"u8);
        Assert.Equal("x"u8.ToArray(), h.Receive(flow, 1));

        h.Invoke(_ => fwd.Stop(resetConnections: true));
        var rst = h.Next();
        Assert.True(rst.Has(TcpFlags.Rst));
        Assert.Equal(SocketError.ConnectionReset, HostSide.ReceiveError(client, out _));
        Assert.Equal(0, h.Invoke(_ => fwd.Info.ActiveConnections));
        using var late = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
        var e = Assert.Throws<SocketException>(() => late.Connect(new IPEndPoint(IPAddress.Loopback, fwd.BoundPort)));
        Assert.Equal(SocketError.ConnectionRefused, e.SocketErrorCode);
    }

    [Fact]
    public void WithNoGuestAttachedAForwardedClientIsResetAtOnce()
    {
        using var h = new TcpHarness();
        h.Sender.Attached = false;
        var fwd = new TcpForwarder(h.Loop, h.Tcp, () => TcpHarness.Guest, ForwardSpec.Create(ForwardProtocol.Tcp, 0, GuestPort), h.Counters, NullLogger.Instance);
        h.Invoke(_ => fwd.Start());
        using var client = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp) { ReceiveTimeout = 5000 };
        client.Connect(new IPEndPoint(IPAddress.Loopback, fwd.BoundPort));
        var sw = Stopwatch.StartNew();
        Assert.Equal(SocketError.ConnectionReset, HostSide.ReceiveError(client, out _));
        Assert.True(sw.ElapsedMilliseconds < 1000, $"the reset took {sw.ElapsedMilliseconds} ms");
        Assert.Equal(1, h.Counters.Drops(DropReason.ForwardNoGuest));
        Assert.Equal(0, h.Invoke(t => t.ConnectionCount));
        h.Invoke(_ => fwd.Stop(resetConnections: false));
    }

    [Fact]
    public void PortInUseNamesTheAddressAndTheProcess()
    {
        using var h = new TcpHarness();
        using var holder = HostSide.Listen();
        int port = HostSide.Port(holder);
        var fwd = new TcpForwarder(h.Loop, h.Tcp, () => TcpHarness.Guest, ForwardSpec.Create(ForwardProtocol.Tcp, port, GuestPort), h.Counters, NullLogger.Instance);
        var e = Assert.Throws<InvalidOperationException>(() => h.Invoke(_ => fwd.Start()));
        Assert.Contains($"tcp 127.0.0.1:{port}", e.Message);
        Assert.Contains("in use", e.Message);
        Assert.Contains($"process {Environment.ProcessId} (", e.Message);
    }
}
