using System.Net;
using System.Net.Sockets;
using Emunet.Engine.Diagnostics;
using Emunet.Engine.Link;
using Emunet.Engine.Runtime;
using Emunet.Engine.Stack;
using Emunet.Engine.Wire;
using Microsoft.Extensions.Logging.Abstractions;

namespace Emunet.Fuzz.Targets;

/// <summary>
/// A fresh <see cref="NetStack"/> per input over an in-memory device, driven on the calling thread (the loop never
/// runs), with the default address plan. The outbound policy keeps every fuzzed destination on this machine: the
/// gateway aliases (10.0.2.2 and fec0::2, host loopback) are allowed and everything else of either family denied, and the
/// DNS relay goes to a closed loopback
/// port; the host's own addresses are given as none, so no input depends on this host's interfaces.
/// </summary>
internal sealed class StackRig : IDisposable
{
    public static readonly MacAddress GuestMac = MacAddress.Parse("52:54:00:12:34:56");

    public static readonly NetworkConfig Config = new()
    {
        DnsUpstream = [new IPEndPoint(IPAddress.Loopback, 9)],
        OutboundRules =
        [
            OutboundRule.Parse("10.0.2.2", allow: true), OutboundRule.Parse("0.0.0.0/0", allow: false),
            OutboundRule.Parse("fec0::2", allow: true), OutboundRule.Parse("::/0", allow: false),
        ],
    };

    private readonly EventLoop _loop = new();
    private readonly Socket _listener = new(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
    private bool _pumped;
    public readonly SinkDevice Device = new();
    public readonly NetStack Stack;

    public StackRig()
    {
        Stack = new NetStack(_loop, Device, Config, new AddressMap(Config, static () => []), new Counters(), NullLoggerFactory.Instance);
        // A host server for the guest to reach through the gateway alias: connections complete in its backlog.
        _listener.Bind(new IPEndPoint(IPAddress.Loopback, 0));
        _listener.Listen(16);
        ListenerPort = (ushort)((IPEndPoint)_listener.LocalEndPoint!).Port;
    }

    /// <summary>The port of the loopback server (10.0.2.2:this from the guest).</summary>
    public ushort ListenerPort { get; }

    /// <summary>
    /// Runs the engine loop once on this thread: host sockets that are ready now are served (a connect that completed
    /// sends the guest its SYN-ACK). The loop stops for good after it, so only the first call does anything.
    /// </summary>
    public void Pump()
    {
        if (_pumped) return;
        _pumped = true;
        _loop.Post(_loop.Stop);
        _loop.Run();
    }

    /// <summary>The guest announces itself (a gratuitous ARP), so the stack knows where replies go.</summary>
    public void LearnGuestMac()
    {
        Span<byte> frame = stackalloc byte[EthernetFrame.HeaderLength + ArpPacket.Length];
        EthernetFrame.WriteHeader(frame, MacAddress.Broadcast, GuestMac, EthernetFrame.EtherTypeArp);
        ArpPacket.Write(frame[EthernetFrame.HeaderLength..], ArpPacket.OperationRequest, GuestMac, Config.Guest,
            MacAddress.Zero, Config.Guest);
        Stack.OnFrame(frame);
        if (Stack.GuestMac != GuestMac) throw new FuzzInvariantException("The stack did not learn the guest MAC from its ARP announcement.");
    }

    public void Dispose()
    {
        Stack.Dispose();
        _listener.Dispose();
        _loop.Dispose();
    }
}

/// <summary>
/// A device that takes every frame the stack sends and checks it: within the lease, a whole Ethernet header, and for
/// IPv4 a header that parses with a valid checksum, a total length matching the frame, and a UDP, TCP or ICMP message
/// whose length and checksum are right.
/// </summary>
internal sealed class SinkDevice : IFrameDevice
{
    private readonly byte[] _transmit = new byte[LinkLimits.MaxFrameLength];
    private int _token;
    private int _lent = -1;

    public bool IsConnected => true;
    public int TransmitSpace => 1 << 20;
    public int FramesSent { get; private set; }

    /// <summary>What a guest would acknowledge: the end of the last TCP segment sent to it (RFC 9293 §3.4).</summary>
    public uint? NextAcknowledgment { get; private set; }

    public TransmitLease BeginTransmit(int maxLength)
    {
        if (maxLength < 0 || maxLength > _transmit.Length) return default;
        _lent = maxLength;
        return new TransmitLease(this, _transmit.AsSpan(0, maxLength), ++_token);
    }

    public void CommitTransmit(int token, int length)
    {
        if (token != _token || _lent < 0) throw new FuzzInvariantException("A frame was committed without its lease.");
        if (length < EthernetFrame.HeaderLength || length > _lent)
            throw new FuzzInvariantException($"A {length}-byte frame was committed on a {_lent}-byte lease.");
        _lent = -1;
        FramesSent++;
        var frame = _transmit.AsSpan(0, length);
        if (!EthernetFrame.TryParse(frame, out var ethernet)) return;
        if (ethernet.EtherType == EthernetFrame.EtherTypeIPv6) { CheckIPv6(ethernet.Payload); return; }
        if (ethernet.EtherType != EthernetFrame.EtherTypeIPv4) return;
        var error = IPv4Packet.TryParse(ethernet.Payload, out var packet);
        if (error != IPv4Packet.ParseError.None)
            throw new FuzzInvariantException($"The stack sent an IPv4 packet that does not parse: {error}.");
        if (packet.TotalLength != ethernet.Payload.Length)
            throw new FuzzInvariantException($"The stack sent {ethernet.Payload.Length} bytes of IPv4 saying {packet.TotalLength}.");
        if (!packet.IsFragment && !IsTransportValid(in packet))
            throw new FuzzInvariantException($"The stack sent a protocol {packet.Protocol} message with a bad length or checksum.");
        if (packet.Protocol == IPv4Packet.ProtocolTcp && TcpSegment.TryParseUnchecked(packet.Payload, out var segment) == TcpSegment.ParseError.None)
            NextAcknowledgment = segment.SequenceNumber + (uint)segment.SequenceLength;
    }

    /// <summary>An IPv6 packet to the guest: whole, never a fragment (RFC 8200 §5), its upper-layer checksum right.</summary>
    private static void CheckIPv6(ReadOnlySpan<byte> bytes)
    {
        var error = IPv6Packet.TryParse(bytes, out var packet);
        if (error != IPv6Packet.ParseError.None) throw new FuzzInvariantException($"The stack sent an IPv6 packet that does not parse: {error}.");
        if (packet.Bytes.Length != bytes.Length)
            throw new FuzzInvariantException($"The stack sent {bytes.Length} bytes of IPv6 saying {packet.Bytes.Length}.");
        byte next = packet.NextHeader;
        if (next == IPv6Packet.NextHeaderFragment) throw new FuzzInvariantException("The stack sent a fragment to the guest.");
        if (next is IPv6Packet.NextHeaderIcmpv6 or IPv6Packet.NextHeaderUdp or IPv6Packet.NextHeaderTcp
            && IPv6Packet.UpperLayerChecksum(packet.Source, packet.Destination, next, packet.Payload) != 0)
            throw new FuzzInvariantException($"The stack sent an IPv6 next-header {next} message with a bad checksum.");
    }

    private static bool IsTransportValid(in IPv4Packet packet) => packet.Protocol switch
    {
        IPv4Packet.ProtocolUdp => UdpDatagram.TryParse(packet.Payload, out var udp) && udp.Length == packet.Payload.Length
            && udp.IsChecksumValid(packet.Source, packet.Destination),
        IPv4Packet.ProtocolTcp => TcpSegment.TryParse(packet.Payload, packet.Source, packet.Destination, out _) == TcpSegment.ParseError.None,
        IPv4Packet.ProtocolIcmp => packet.Payload.Length >= IcmpPacket.HeaderLength && Checksum.Compute(packet.Payload) == 0,
        _ => true,
    };
}
