using System.Diagnostics;
using Emunet.Engine.Link;
using Emunet.Engine.Diagnostics;
using System.Collections.Concurrent;
using System.Net;
using System.Net.Sockets;
using Emunet.Engine.Runtime;
using Emunet.Engine.Stack;
using Emunet.Engine.Stack.Nat;
using Emunet.Engine.Stack.Tcp;
using Emunet.Engine.Wire;
using Microsoft.Extensions.Logging.Abstractions;

namespace Emunet.Engine.Tests.Tcp;

/// <summary>An <see cref="IPacketSender"/> that records every IPv4 packet Emunet emits; it can play a full device.</summary>
internal sealed class RecordingSender : IPacketSender
{
    private readonly byte[] _buffer = new byte[70_000];
    private int _token;

    public BlockingCollection<byte[]> Packets { get; } = new();
    public volatile bool Full;
    /// <summary>Commit without recording (allocation measurements).</summary>
    public volatile bool Discard;
    /// <summary>Packets committed, recorded or not.</summary>
    public int Committed;
    /// <summary>
    /// When set, each recorded packet's commit time (Stopwatch ticks) is kept (<see cref="CommitTime"/>): tests of the
    /// engine's timers measure between commits, not between the moments a test thread happened to take the packets.
    /// </summary>
    public volatile bool RecordTimes;
    private readonly ConcurrentDictionary<byte[], long> _commitTimes = new(ReferenceEqualityComparer.Instance);

    /// <summary>The Stopwatch timestamp at which <paramref name="raw"/> was committed (needs <see cref="RecordTimes"/>).</summary>
    public long CommitTime(byte[] raw) => _commitTimes.TryGetValue(raw, out long t) ? t : throw new InvalidOperationException("no commit time recorded for this packet");
    /// <summary>Packets refused while <see cref="Full"/>.</summary>
    public int Refused;
    public int MaxPayload { get; init; } = 1480;
    public int TransmitSpace => Full ? 0 : int.MaxValue;
    /// <summary>False plays an engine with no guest attached.</summary>
    public volatile bool Attached = true;
    public bool GuestReachable => Attached;

    public OutboundPacket BeginPacket(IPv4Address source, IPv4Address destination, byte protocol, int maxPayload)
    {
        if (Full)
        {
            Interlocked.Increment(ref Refused);
            return default;
        }
        if (maxPayload > MaxPayload && (Offloads & LinkOffloads.TcpSegmentation) == 0) Assert.Fail($"a packet of {maxPayload} bytes exceeds the device's {MaxPayload}");
        return new OutboundPacket(this, _buffer, IPv4Packet.MinHeaderLength, maxPayload, ++_token, source, destination, protocol);
    }

    /// <summary>The offloads this sender plays the device of (none: a stream link).</summary>
    public LinkOffloads Offloads { get; set; }

    /// <summary>What the stack left to the device, per recorded packet, in the order of <see cref="Packets"/>.</summary>
    public ConcurrentQueue<TransmitOffload> PacketOffloads { get; } = new();

    /// <summary>Plays a device with direct receive: <see cref="TrySendDirect"/> takes segments in pieces.</summary>
    public volatile bool Direct;
    /// <summary>Packets taken by <see cref="TrySendDirect"/>, and those of them whose payload came in two pieces (a wrapped ring).</summary>
    public int DirectSent, DirectWrapped;

    public bool TrySendDirect(FlowAddress source, FlowAddress destination, byte protocol, ReadOnlySpan<byte> transportHeader,
        ReadOnlySpan<byte> body, ReadOnlySpan<byte> tail, in TransmitOffload offload)
    {
        if (!Direct || Full) return false;
        if (!body.IsEmpty && !tail.IsEmpty) DirectWrapped++;
        if (body.IsEmpty && !tail.IsEmpty) Assert.Fail("a payload's second piece without its first");
        var packet = new FramePieces(transportHeader, body, tail);
        packet.CopyTo(0, _buffer.AsSpan(IPv4Packet.MinHeaderLength, packet.Length));
        DirectSent++;
        Record(source.IPv4, destination.IPv4, protocol, packet.Length, in offload);
        return true;
    }

    public void CommitPacket(in OutboundPacket packet, int payloadLength, in TransmitOffload offload)
    {
        if (packet.Token != _token) Assert.Fail("a packet was committed after a newer one was lent");
        Record(packet.Source, packet.Destination, packet.Protocol, payloadLength, in offload);
    }

    private void Record(IPv4Address source, IPv4Address destination, byte protocol, int payloadLength, in TransmitOffload offload)
    {
        if (offload != default && (Offloads & LinkOffloads.PartialChecksum) == 0) Assert.Fail("an offload was asked of a device that has none");
        if (offload.SegmentSize > 0 && (Offloads & LinkOffloads.TcpSegmentation) == 0) Assert.Fail("segmentation was asked of a device that cannot");
        if (!Discard) PacketOffloads.Enqueue(offload);
        IPv4Packet.WriteHeader(_buffer, source, destination, protocol, IPv4Packet.MinHeaderLength + payloadLength);
        if (offload.PartialChecksum)
        {
            // Play the device: the field must hold the pseudo-header sum; finish it the way a guest's driver would.
            var l4 = _buffer.AsSpan(IPv4Packet.MinHeaderLength + offload.ChecksumStart, payloadLength - offload.ChecksumStart);
            uint pseudo = Checksum.PseudoHeader(source, destination, protocol, l4.Length);
            Assert.Equal((ushort)~Checksum.Finish(pseudo), System.Buffers.Binary.BinaryPrimitives.ReadUInt16BigEndian(l4[offload.ChecksumOffset..]));
            System.Buffers.Binary.BinaryPrimitives.WriteUInt16BigEndian(l4[offload.ChecksumOffset..], Checksum.Finish(Checksum.Accumulate(0, l4)));
        }
        Committed++;
        if (Discard) return;
        var recorded = _buffer.AsSpan(0, IPv4Packet.MinHeaderLength + payloadLength).ToArray();
        if (RecordTimes) _commitTimes[recorded] = Stopwatch.GetTimestamp();
        Packets.Add(recorded);
    }
}

/// <summary>A segment Emunet sent to the guest, parsed by Emunet's own view (PacketDotNet checks some tests independently).</summary>
internal sealed class Seg
{
    public required byte[] Raw;
    public IPv4Address Source, Destination;
    public ushort SourcePort, DestinationPort;
    public uint SeqNum, AckNum;
    public TcpFlags Flags;
    public ushort Window;
    public byte[] Payload = Array.Empty<byte>();
    public TcpOptions Options;

    public bool Is(TcpFlags flags) => Flags == flags;
    public bool Has(TcpFlags flags) => (Flags & flags) == flags;

    public static Seg Parse(byte[] raw)
    {
        Assert.Equal(IPv4Packet.ParseError.None, IPv4Packet.TryParse(raw, out var ip));
        Assert.Equal(IPv4Packet.ProtocolTcp, ip.Protocol);
        Assert.Equal(TcpSegment.ParseError.None, TcpSegment.TryParse(ip.Payload, ip.Source, ip.Destination, out var tcp));
        return new Seg
        {
            Raw = raw,
            Source = ip.Source,
            Destination = ip.Destination,
            SourcePort = tcp.SourcePort,
            DestinationPort = tcp.DestinationPort,
            SeqNum = tcp.SequenceNumber,
            AckNum = tcp.AcknowledgmentNumber,
            Flags = tcp.Flags,
            Window = tcp.Window,
            Payload = tcp.Payload.ToArray(),
            Options = tcp.ParseOptions(),
        };
    }

    public override string ToString() =>
        $"{Source}:{SourcePort} -> {Destination}:{DestinationPort} [{Flags}] seq={SeqNum} ack={AckNum} win={Window} len={Payload.Length}";
}

/// <summary>The guest's view of one connection: its next sequence number and the next one it expects from Emunet.</summary>
internal sealed class GuestFlow
{
    public ushort GuestPort;
    public IPv4Address Peer;
    public ushort PeerPort;
    public uint Snd;
    public uint Rcv;
    public ushort Window = 65535;
}

/// <summary>
/// A segment-by-segment harness in the smoltcp style: the stack runs on an <see cref="EventLoop"/> thread with real host
/// sockets on 127.0.0.1; the test plays the guest, sending segments in and taking the ones Emunet emits, each wait bounded.
/// </summary>
internal sealed class TcpHarness : IDisposable
{
    public static readonly IPv4Address Guest = new(10, 0, 2, 15);
    public static readonly IPv4Address Gateway = new(10, 0, 2, 2);
    public static readonly TimeSpan Timeout = TimeSpan.FromSeconds(5);

    private static int s_nextPort = 40000;
    private readonly Thread _thread;

    public EventLoop Loop { get; } = new();
    public RecordingSender Sender { get; }
    public Counters Counters { get; } = new();
    public NetworkConfig Config { get; } = new();
    public TcpStack Tcp { get; }
    /// <summary>The flow table <see cref="Tcp"/> keeps its connections in.</summary>
    public FlowTable Flows { get; }

    public TcpHarness(Action<TcpStack>? configure = null, int maxPayload = 1480, long bufferBudget = BufferBudget.DefaultLimit)
    {
        Sender = new RecordingSender { MaxPayload = maxPayload };
        Microsoft.Extensions.Logging.ILogger logger = Environment.GetEnvironmentVariable("EMUNET_TEST_LOG") is null ? NullLogger.Instance : new ConsoleErrorLogger();
        Flows = new FlowTable(Loop, Counters, new BufferBudget(bufferBudget));
        Tcp = new TcpStack(Loop, Sender, Flows, Config, new AddressMap(Config), Counters, logger);
        // The handshake's RTO before any RTT sample; longer than the RFC's 1 s so a loaded test machine does not see
        // SYN retransmissions where a test does not expect them (tests that exercise them set it lower).
        Tcp.InitialRtoMs = 3000;
        // Likewise after RTT samples: most tests check segments one by one, and a test thread held up for 200 ms (the
        // stack's floor) would see a retransmission it did not cause (tests of the RTO set their own).
        Tcp.MinRtoMs = 3000;
        configure?.Invoke(Tcp);
        _thread = new Thread(Loop.Run) { IsBackground = true, Name = "emunet-tcp-test" };
        _thread.Start();
    }

    public static ushort NextGuestPort() => (ushort)Interlocked.Increment(ref s_nextPort);

    public T Invoke<T>(Func<TcpStack, T> work) => Loop.InvokeAsync(() => work(Tcp)).WaitAsync(Timeout).GetAwaiter().GetResult();

    public void Invoke(Action<TcpStack> work) => Invoke(t => { work(t); return 0; });

    /// <summary>Builds an IPv4 packet carrying one TCP segment from <paramref name="source"/>.</summary>
    public static byte[] BuildPacket(IPv4Address source, IPv4Address destination, ushort sourcePort, ushort destinationPort,
        uint seq, uint ack, TcpFlags flags, ushort window, ReadOnlySpan<byte> payload, ushort mss = 0, int windowScale = -1)
    {
        var f = new TcpFields
        {
            SourcePort = sourcePort,
            DestinationPort = destinationPort,
            SequenceNumber = seq,
            AcknowledgmentNumber = ack,
            Flags = flags,
            Window = window,
            MaxSegmentSize = mss,
            WindowScale = windowScale,
        };
        var packet = new byte[IPv4Packet.MinHeaderLength + f.HeaderLength + payload.Length];
        var tcp = packet.AsSpan(IPv4Packet.MinHeaderLength);
        payload.CopyTo(tcp[f.HeaderLength..]);
        int len = f.Emit(tcp, source, destination, payload.Length);
        IPv4Packet.WriteHeader(packet, source, destination, IPv4Packet.ProtocolTcp, IPv4Packet.MinHeaderLength + len);
        return packet;
    }

    /// <summary>Hands a whole IPv4 packet to the stack as the IPv4 layer would.</summary>
    public void Inject(byte[] packet) => Invoke(t =>
    {
        Assert.Equal(IPv4Packet.ParseError.None, IPv4Packet.TryParse(packet, out var ip));
        t.OnSegment(ip);
    });

    public void FromGuest(ushort guestPort, IPv4Address peer, ushort peerPort, uint seq, uint ack, TcpFlags flags, ushort window,
        ReadOnlySpan<byte> payload = default, ushort mss = 0, int windowScale = -1) =>
        Inject(BuildPacket(Guest, peer, guestPort, peerPort, seq, ack, flags, window, payload, mss, windowScale));

    private readonly HashSet<(ushort, ushort, uint)> _synsSeen = new();

    /// <summary>
    /// The next segment Emunet emits; fails after <paramref name="timeoutMs"/>. A SYN or SYN-ACK identical to one
    /// already taken (a handshake retransmission, legitimate when the test thread was slow) is skipped unless
    /// <paramref name="keepSynRetransmissions"/>.
    /// </summary>
    public Seg Next(int timeoutMs = 5000, bool keepSynRetransmissions = false)
    {
        while (true)
        {
            Assert.True(Sender.Packets.TryTake(out var raw, timeoutMs), $"no segment from Emunet within {timeoutMs} ms");
            var s = Seg.Parse(raw!);
            if (s.Has(TcpFlags.Syn) && !_synsSeen.Add((s.SourcePort, s.DestinationPort, s.SeqNum)) && !keepSynRetransmissions) continue;
            return s;
        }
    }

    /// <summary>Asserts Emunet emits nothing for <paramref name="ms"/> (used only where silence is the behaviour under test).</summary>
    public void ExpectQuiet(int ms)
    {
        if (Sender.Packets.TryTake(out var raw, ms)) Assert.Fail($"unexpected segment: {Seg.Parse(raw!)}");
    }

    // ---- The guest side of an outbound connection ---------------------------------------------------------------

    /// <summary>Three-way handshake from the guest to 10.0.2.2:<paramref name="hostPort"/> (127.0.0.1 on the host).</summary>
    public GuestFlow Connect(int hostPort, ushort window = 65535, int windowScale = -1, ushort mss = 1460)
    {
        var flow = new GuestFlow { GuestPort = NextGuestPort(), Peer = Gateway, PeerPort = (ushort)hostPort, Snd = 1000, Window = window };
        FromGuest(flow.GuestPort, flow.Peer, flow.PeerPort, 999, 0, TcpFlags.Syn, window, default, mss, windowScale);
        var synAck = Next();
        Assert.True(synAck.Is(TcpFlags.Syn | TcpFlags.Ack), $"expected SYN-ACK, got {synAck}");
        Assert.Equal(1000u, synAck.AckNum);
        flow.Rcv = synAck.SeqNum + 1;
        Ack(flow);
        return flow;
    }

    public void Ack(GuestFlow f, ushort? window = null) =>
        FromGuest(f.GuestPort, f.Peer, f.PeerPort, f.Snd, f.Rcv, TcpFlags.Ack, window ?? f.Window);

    public void Send(GuestFlow f, ReadOnlySpan<byte> data, TcpFlags extra = TcpFlags.Psh)
    {
        FromGuest(f.GuestPort, f.Peer, f.PeerPort, f.Snd, f.Rcv, TcpFlags.Ack | extra, f.Window, data);
        f.Snd = unchecked(f.Snd + (uint)data.Length + ((extra & TcpFlags.Fin) != 0 ? 1u : 0u));
    }

    public void Fin(GuestFlow f) => Send(f, ReadOnlySpan<byte>.Empty, TcpFlags.Fin);

    /// <summary>Takes in-order data segments until <paramref name="count"/> bytes arrived, ACKing each one.</summary>
    public byte[] Receive(GuestFlow f, int count, bool ackEach = true)
    {
        var result = new MemoryStream();
        while (result.Length < count)
        {
            var s = Next();
            Assert.True(s.Has(TcpFlags.Ack), $"data segment without ACK: {s}");
            Assert.Equal(f.Rcv, s.SeqNum);
            Assert.True(s.Payload.Length > 0, $"expected data, got {s}");
            result.Write(s.Payload);
            f.Rcv = unchecked(f.Rcv + (uint)s.Payload.Length + (s.Has(TcpFlags.Fin) ? 1u : 0u));
            if (ackEach) Ack(f);
        }
        return result.ToArray();
    }

    public void Dispose()
    {
        try { Invoke(t => t.OnGuestGone()); }
        finally
        {
            Loop.Stop();
            _thread.Join(Timeout);
            Loop.Dispose();
        }
    }
}

/// <summary>Host-side helpers: a loopback server and bounded blocking reads.</summary>
internal static class HostSide
{
    public static Socket Listen(int backlog = 16)
    {
        var s = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
        s.Bind(new IPEndPoint(IPAddress.Loopback, 0));
        s.Listen(backlog);
        return s;
    }

    public static int Port(Socket s) => ((IPEndPoint)s.LocalEndPoint!).Port;

    public static Socket Accept(Socket listener)
    {
        var a = listener.AcceptAsync().WaitAsync(TcpHarness.Timeout).GetAwaiter().GetResult();
        a.ReceiveTimeout = 5000;
        a.SendTimeout = 5000;
        return a;
    }

    /// <summary>A port with nothing listening (bound, closed again).</summary>
    public static int ClosedPort()
    {
        using var s = Listen();
        return Port(s);
    }

    public static byte[] ReadExactly(Socket s, int count)
    {
        var buf = new byte[count];
        int done = 0;
        while (done < count)
        {
            int n = s.Receive(buf, done, count - done, SocketFlags.None);
            if (n == 0) throw new EndOfStreamException($"EOF after {done} of {count} bytes");
            done += n;
        }
        return buf;
    }

    /// <summary>What the next receive returns: bytes, 0 for EOF, or the socket error.</summary>
    public static SocketError ReceiveError(Socket s, out int n)
    {
        var buf = new byte[4096];
        n = s.Receive(buf, 0, buf.Length, SocketFlags.None, out var error);
        return error;
    }

    public static byte[] Pattern(int length, int seed = 1)
    {
        var b = new byte[length];
        new Random(seed).NextBytes(b);
        return b;
    }
}

/// <summary>Set EMUNET_TEST_LOG=1 to see the stack's debug log on stderr while a test runs.</summary>
internal sealed class ConsoleErrorLogger : Microsoft.Extensions.Logging.ILogger
{
    public IDisposable? BeginScope<TState>(TState state) where TState : notnull => null;
    public bool IsEnabled(Microsoft.Extensions.Logging.LogLevel logLevel) => true;
    public void Log<TState>(Microsoft.Extensions.Logging.LogLevel logLevel, Microsoft.Extensions.Logging.EventId eventId, TState state,
        Exception? exception, Func<TState, Exception?, string> formatter) => Console.Error.WriteLine($"[{logLevel}] {formatter(state, exception)}");
}
