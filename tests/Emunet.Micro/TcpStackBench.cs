using Emunet.Engine.Link;
using BenchmarkDotNet.Attributes;
using Emunet.Engine.Diagnostics;
using Emunet.Engine.Runtime;
using Emunet.Engine.Stack;
using Emunet.Engine.Stack.Nat;
using Emunet.Engine.Stack.Tcp;
using Emunet.Engine.Wire;
using Microsoft.Extensions.Logging.Abstractions;

namespace Emunet.Micro;

/// <summary>
/// A guest segment through the TCP stack and the segment it answers: an ACK for no connection goes in (checked view,
/// checksum, flow-table lookup, drop counted) and a RST comes out (RFC 9293 §3.10.7.1: header and checksum built in
/// the lent packet, committed to the device). The stack's per-segment path without a host socket behind it.
/// </summary>
[MemoryDiagnoser]
public class TcpStackBench
{
    private static readonly IPv4Address Guest = new(10, 0, 2, 15), Gateway = new(10, 0, 2, 2);
    private readonly DiscardSender _sender = new();
    private EventLoop _loop = null!;
    private TcpStack _tcp = null!;
    private byte[] _packet = [];

    [GlobalSetup]
    public void Setup()
    {
        _loop = new EventLoop();
        var counters = new Counters();
        var config = new NetworkConfig();
        _tcp = new TcpStack(_loop, _sender, new FlowTable(_loop, counters, new BufferBudget()), config, new AddressMap(config), counters, NullLogger.Instance);
        var f = new TcpFields
        {
            SourcePort = 40000, DestinationPort = 9, SequenceNumber = 1000, AcknowledgmentNumber = 2000,
            Flags = TcpFlags.Ack, Window = 65535, WindowScale = -1,
        };
        _packet = new byte[IPv4Packet.MinHeaderLength + f.HeaderLength];
        int len = f.Emit(_packet.AsSpan(IPv4Packet.MinHeaderLength), Guest, Gateway, 0);
        IPv4Packet.WriteHeader(_packet, Guest, Gateway, IPv4Packet.ProtocolTcp, IPv4Packet.MinHeaderLength + len);
    }

    [GlobalCleanup]
    public void Cleanup() => _loop.Dispose();

    [Benchmark]
    public int SegmentInResetOut()
    {
        if (IPv4Packet.TryParse(_packet, out var ip) != IPv4Packet.ParseError.None) return -1;
        _tcp.OnSegment(ip);
        return _sender.Committed;
    }

    /// <summary>A device that takes every packet and drops it after writing its IPv4 header, as a real one would.</summary>
    private sealed class DiscardSender : IPacketSender
    {
        private readonly byte[] _buffer = new byte[IPv4Packet.MinHeaderLength + 65535];
        private int _token;

        public int Committed { get; private set; }
        public int TransmitSpace => int.MaxValue;
        public int MaxPayload => 65480;
        public bool GuestReachable => true;

        public OutboundPacket BeginPacket(IPv4Address source, IPv4Address destination, byte protocol, int maxPayload) =>
            new(this, _buffer, IPv4Packet.MinHeaderLength, maxPayload, ++_token, source, destination, protocol);

        public LinkOffloads Offloads => LinkOffloads.None;

        public void CommitPacket(in OutboundPacket packet, int payloadLength, in TransmitOffload offload)
        {
            IPv4Packet.WriteHeader(_buffer, packet.Source, packet.Destination, packet.Protocol, IPv4Packet.MinHeaderLength + payloadLength);
            Committed++;
        }
    }
}
