using BenchmarkDotNet.Attributes;
using Emunet.Engine.Wire;

namespace Emunet.Micro;

/// <summary>The Internet checksum (RFC 1071) over a minimal segment, an MTU-1500 frame and a 64 KiB segment.</summary>
[MemoryDiagnoser]
public class ChecksumBench
{
    private byte[] _data = [];

    [Params(64, 1500, 65520)]
    public int Length { get; set; }

    [GlobalSetup]
    public void Setup()
    {
        _data = new byte[Length];
        new Random(1).NextBytes(_data);
    }

    [Benchmark]
    public ushort Compute() => Checksum.Compute(_data);
}

/// <summary>
/// Header parse and build of one Ethernet + IPv4 + TCP frame, the way the stack takes a guest frame in (checked views,
/// IPv4 and TCP checksums verified) and emits one out (headers and both checksums written over a payload in place).
/// </summary>
[MemoryDiagnoser]
public class HeaderBench
{
    private static readonly IPv4Address Guest = new(10, 0, 2, 15), Host = new(10, 0, 2, 2);
    private static readonly MacAddress GuestMac = MacAddress.Parse("52:54:00:12:34:56"), GatewayMac = MacAddress.Parse("52:55:0a:00:02:02");
    private byte[] _frame = [];
    private byte[] _out = [];

    [Params(0, 1460, 65000)]
    public int Payload { get; set; }

    [GlobalSetup]
    public void Setup()
    {
        _out = new byte[EthernetFrame.HeaderLength + IPv4Packet.MinHeaderLength + TcpSegment.MinHeaderLength + Payload];
        new Random(2).NextBytes(_out.AsSpan(_out.Length - Payload));
        Build();
        _frame = (byte[])_out.Clone();
    }

    /// <summary>Guest → stack: Ethernet view, IPv4 checked view, TCP checked view with its checksum verified.</summary>
    [Benchmark]
    public int Parse()
    {
        if (!EthernetFrame.TryParse(_frame, out var eth)) return -1;
        if (IPv4Packet.TryParse(eth.Payload, out var ip) != IPv4Packet.ParseError.None) return -2;
        if (TcpSegment.TryParse(ip.Payload, ip.Source, ip.Destination, out var tcp) != TcpSegment.ParseError.None) return -3;
        return tcp.Payload.Length + tcp.DestinationPort;
    }

    /// <summary>Stack → guest: the three headers around a payload already in place, with both checksums.</summary>
    [Benchmark]
    public int Build()
    {
        var f = new TcpFields
        {
            SourcePort = 5201, DestinationPort = 40000, SequenceNumber = 1000, AcknowledgmentNumber = 2000,
            Flags = TcpFlags.Ack | TcpFlags.Psh, Window = 65535, WindowScale = -1,
        };
        var span = _out.AsSpan();
        EthernetFrame.WriteHeader(span, GuestMac, GatewayMac, EthernetFrame.EtherTypeIPv4);
        var ip = span[EthernetFrame.HeaderLength..];
        int tcpLength = f.Emit(ip[IPv4Packet.MinHeaderLength..], Host, Guest, Payload);
        IPv4Packet.WriteHeader(ip, Host, Guest, IPv4Packet.ProtocolTcp, IPv4Packet.MinHeaderLength + tcpLength);
        return tcpLength;
    }
}
