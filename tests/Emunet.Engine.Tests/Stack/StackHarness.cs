using Emunet.Engine.Link;
using Emunet.Engine.Diagnostics;
using System.Buffers.Binary;
using System.Collections.Concurrent;
using System.Net;
using Emunet.Engine.Devices;
using Emunet.Engine.Forwarding;
using Emunet.Engine.Runtime;
using Emunet.Engine.Stack;
using Emunet.Engine.Wire;
using Microsoft.Extensions.Logging.Abstractions;

namespace Emunet.Engine.Tests.Stack;

/// <summary>A frame device that records what the stack sends; <see cref="Full"/> makes it push back.</summary>
internal sealed class CaptureDevice : IFrameDevice
{
    private readonly byte[] _transmit = new byte[70_000];
    public readonly BlockingCollection<byte[]> Frames = new();

    public bool IsConnected { get; set; } = true;
    public bool Full { get; set; }
    /// <summary>Commits count in <see cref="Committed"/> and keep nothing (allocation tests: no copy per frame).</summary>
    public bool Discard { get; set; }
    public int Committed;
    public int TransmitSpace => Full ? 0 : 1 << 20;

    private int _token;

    public TransmitLease BeginTransmit(int maxLength) =>
        Full || maxLength > _transmit.Length ? default : new TransmitLease(this, _transmit.AsSpan(0, maxLength), ++_token);

    public void CommitTransmit(int token, int length)
    {
        if (token != _token) Assert.Fail("a frame was committed after a newer lease was lent");
        Committed++;
        if (Discard) return;
        Frames.Add(_transmit.AsSpan(0, length).ToArray());
    }
}

/// <summary>
/// A NetStack over a <see cref="CaptureDevice"/>. Without <see cref="Start"/> the test thread drives the stack
/// directly (no host sockets involved); after it the loop runs on its own thread and every call is marshalled there.
/// </summary>
internal sealed class StackHarness : IDisposable
{
    public static readonly MacAddress GuestMac = MacAddress.Parse("52:54:00:12:34:56");
    public static readonly IPv4Address GuestIp = new(10, 0, 2, 15);
    public static readonly IPv4Address Gateway = new(10, 0, 2, 2);
    public static readonly IPv4Address Dns = new(10, 0, 2, 3);
    public static readonly TimeSpan Timeout = TimeSpan.FromSeconds(5);

    public readonly EventLoop Loop = new();
    public readonly CaptureDevice Device = new();
    public readonly Counters Counters = new();
    public readonly NetworkConfig Config;
    public readonly NetStack Stack;
    /// <summary>The engine's forwards over <see cref="Stack"/>, TCP and UDP.</summary>
    public readonly ForwardTable Forwards;
    private Thread? _thread;

    public StackHarness(NetworkConfig? config = null)
    {
        // No test may reach a real resolver: DNS goes to a closed loopback port unless a test says otherwise.
        Config = config ?? new NetworkConfig { DnsUpstream = new[] { new IPEndPoint(IPAddress.Loopback, 9) } };
        Stack = new NetStack(Loop, Device, Config, new AddressMap(Config), Counters, NullLoggerFactory.Instance);
        Forwards = new ForwardTable(Loop, Stack, Counters, NullLogger.Instance);
    }

    public MacAddress GatewayMac => Config.GatewayMac;

    public void Start()
    {
        _thread = new Thread(Loop.Run) { IsBackground = true, Name = "test engine loop" };
        _thread.Start();
    }

    public T Invoke<T>(Func<T> work)
    {
        if (_thread is null) return work();
        var task = Loop.InvokeAsync(work);
        if (!task.Wait(Timeout)) throw new TimeoutException("The engine loop did not run the work in time.");
        return task.Result;
    }

    public void Invoke(Action work) => Invoke(() => { work(); return 0; });

    public void Send(byte[] frame) => Invoke(() => Stack.OnFrame(frame));

    public byte[] Expect()
    {
        if (!Device.Frames.TryTake(out var frame, Timeout)) throw new Xunit.Sdk.XunitException("No frame reached the guest in time.");
        return frame;
    }

    public void ExpectNone()
    {
        if (_thread is not null) Invoke(() => { });
        Assert.True(Device.Frames.Count == 0, $"Expected no frame, got {Device.Frames.Count}.");
    }

    public void Dispose()
    {
        if (_thread is not null)
        {
            Invoke(() => { Forwards.StopAll(); Stack.Dispose(); });
            Loop.Stop();
            _thread.Join();
        }
        else
        {
            Forwards.StopAll();
            Stack.Dispose();
        }
        Loop.Dispose();
    }
}

/// <summary>Frames as a guest would send them, built with the Wire emitters.</summary>
internal static class GuestFrames
{
    public static byte[] Ethernet(MacAddress destination, ushort etherType, ReadOnlySpan<byte> payload, MacAddress? source = null)
    {
        var frame = new byte[EthernetFrame.HeaderLength + payload.Length];
        EthernetFrame.WriteHeader(frame, destination, source ?? StackHarness.GuestMac, etherType);
        payload.CopyTo(frame.AsSpan(EthernetFrame.HeaderLength));
        return frame;
    }

    public static byte[] Arp(ushort operation, IPv4Address sender, IPv4Address target, MacAddress? senderMac = null)
    {
        var arp = new byte[ArpPacket.Length];
        ArpPacket.Write(arp, operation, senderMac ?? StackHarness.GuestMac, sender, MacAddress.Zero, target);
        return Ethernet(MacAddress.Broadcast, EthernetFrame.EtherTypeArp, arp, senderMac);
    }

    public static byte[] IPv4(IPv4Address source, IPv4Address destination, byte protocol, ReadOnlySpan<byte> payload,
        ushort identification = 1, MacAddress? to = null)
    {
        var packet = new byte[IPv4Packet.MinHeaderLength + payload.Length];
        payload.CopyTo(packet.AsSpan(IPv4Packet.MinHeaderLength));
        IPv4Packet.WriteHeader(packet, source, destination, protocol, packet.Length, identification, dontFragment: false);
        return Ethernet(to ?? new NetworkConfig().GatewayMac, EthernetFrame.EtherTypeIPv4, packet);
    }

    public static byte[] Udp(IPv4Address source, ushort sourcePort, IPv4Address destination, ushort destinationPort,
        ReadOnlySpan<byte> payload, MacAddress? to = null)
    {
        var datagram = new byte[UdpDatagram.HeaderLength + payload.Length];
        payload.CopyTo(datagram.AsSpan(UdpDatagram.HeaderLength));
        UdpDatagram.WriteHeader(datagram, source, destination, sourcePort, destinationPort, payload.Length);
        return IPv4(source, destination, IPv4Packet.ProtocolUdp, datagram, to: to);
    }

    public static byte[] EchoMessage(ushort id, ushort sequence, ReadOnlySpan<byte> data)
    {
        var icmp = new byte[IcmpPacket.HeaderLength + data.Length];
        data.CopyTo(icmp.AsSpan(IcmpPacket.HeaderLength));
        IcmpPacket.WriteHeader(icmp, IcmpPacket.TypeEchoRequest, 0, id, sequence);
        return icmp;
    }

    public static byte[] Echo(IPv4Address destination, ushort id, ushort sequence, ReadOnlySpan<byte> data) =>
        IPv4(StackHarness.GuestIp, destination, IPv4Packet.ProtocolIcmp, EchoMessage(id, sequence, data));

    /// <summary>One fragment of <paramref name="payload"/> (the whole transport message) at byte <paramref name="offset"/>.</summary>
    public static byte[] Fragment(IPv4Address source, IPv4Address destination, byte protocol, ushort identification,
        ReadOnlySpan<byte> payload, int offset, int length, bool more)
    {
        var packet = new byte[IPv4Packet.MinHeaderLength + length];
        payload.Slice(offset, length).CopyTo(packet.AsSpan(IPv4Packet.MinHeaderLength));
        IPv4Packet.WriteHeader(packet, source, destination, protocol, packet.Length, identification, dontFragment: false);
        ushort flags = (ushort)((more ? 0x2000 : 0) | (offset / 8));
        BinaryPrimitives.WriteUInt16BigEndian(packet.AsSpan(IPv4Packet.Offsets.FlagsFragment), flags);
        BinaryPrimitives.WriteUInt16BigEndian(packet.AsSpan(IPv4Packet.Offsets.Checksum), 0);
        BinaryPrimitives.WriteUInt16BigEndian(packet.AsSpan(IPv4Packet.Offsets.Checksum), Checksum.Compute(packet.AsSpan(0, 20)));
        return Ethernet(new NetworkConfig().GatewayMac, EthernetFrame.EtherTypeIPv4, packet);
    }
}

/// <summary>Checks on frames the stack sent, with PacketDotNet as the independent parser.</summary>
internal static class Oracle
{
    public static PacketDotNet.EthernetPacket Ethernet(byte[] frame)
    {
        var packet = PacketDotNet.Packet.ParsePacket(PacketDotNet.LinkLayers.Ethernet, frame);
        return Assert.IsType<PacketDotNet.EthernetPacket>(packet);
    }

    /// <summary>An IPv4 frame to the guest MAC from the gateway MAC with a valid header checksum.</summary>
    public static PacketDotNet.IPv4Packet IPv4(byte[] frame)
    {
        var eth = Ethernet(frame);
        Assert.Equal(PacketDotNet.EthernetType.IPv4, eth.Type);
        Assert.Equal(StackHarness.GuestMac.ToString().Replace(":", "").ToUpperInvariant(), eth.DestinationHardwareAddress.ToString());
        Assert.Equal(new NetworkConfig().GatewayMac.ToString().Replace(":", "").ToUpperInvariant(), eth.SourceHardwareAddress.ToString());
        var ip = Assert.IsType<PacketDotNet.IPv4Packet>(eth.PayloadPacket);
        Assert.True(ip.ValidIPChecksum, "IPv4 header checksum");
        Assert.Equal(frame.Length - EthernetFrame.HeaderLength, ip.TotalLength);
        return ip;
    }

    public static PacketDotNet.UdpPacket Udp(byte[] frame)
    {
        var ip = IPv4(frame);
        var udp = Assert.IsType<PacketDotNet.UdpPacket>(ip.PayloadPacket);
        Assert.True(udp.ValidUdpChecksum, "UDP checksum");
        return udp;
    }

    public static PacketDotNet.TcpPacket Tcp(byte[] frame)
    {
        var ip = IPv4(frame);
        var tcp = Assert.IsType<PacketDotNet.TcpPacket>(ip.PayloadPacket);
        Assert.True(tcp.ValidTcpChecksum, "TCP checksum");
        return tcp;
    }

    public static PacketDotNet.IcmpV4Packet Icmp(byte[] frame)
    {
        var ip = IPv4(frame);
        var icmp = Assert.IsType<PacketDotNet.IcmpV4Packet>(ip.PayloadPacket);
        Assert.True(icmp.ValidIcmpChecksum, "ICMP checksum");
        return icmp;
    }

    public static IPAddress Ip(IPv4Address a) => a.ToIPAddress();
}
