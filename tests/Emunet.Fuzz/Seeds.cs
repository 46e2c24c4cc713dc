using System.Buffers.Binary;
using System.Text;
using Emunet.Engine.Devices.VhostUser;
using Emunet.Engine.Stack;
using Emunet.Engine.Wire;
using Emunet.Fuzz.Targets;

namespace Emunet.Fuzz;

/// <summary>
/// The seed corpus (corpus/TARGET/NAME): small valid inputs per target, written by <c>Emunet.Fuzz --write-seeds DIR</c>
/// so they can be remade when an input format changes. AFL mutates from these.
/// </summary>
internal static class Seeds
{
    private static readonly NetworkConfig Config = StackRig.Config;
    private static readonly IPv4Address Guest = Config.Guest;

    public static IEnumerable<(string Target, string Name, byte[] Input)> All()
    {
        yield return ("frame", "arp-request", Frames(Arp()));
        yield return ("frame", "dhcp-discover", Frames(DhcpFrame(Dhcp(DhcpMessage.MessageType.Discover))));
        yield return ("frame", "dns-query", Frames(DnsFrame(DnsQuery())));
        yield return ("frame", "icmp-echo", Frames(Echo()));
        yield return ("frame", "tcp-syn", Frames(Tcp(TcpFlags.Syn, 1000, 0, [], withOptions: true)));
        // A connection to the rig's loopback server: SYN, the loop runs (the host connect completes, the guest gets
        // its SYN-ACK), then ACK, data, FIN, each acknowledging what the stack sent last; and a RST.
        const FrameFlags fix = FrameFlags.Lengths | FrameFlags.Checksums | FrameFlags.ToListener, ack = fix | FrameFlags.AcknowledgeLast;
        yield return ("frame", "tcp-exchange", [
            .. FrameTarget.Record(Tcp(TcpFlags.Syn, 1000, 0, [], withOptions: true), fix | FrameFlags.Pump),
            .. FrameTarget.Record(Tcp(TcpFlags.Ack, 1001, 0, []), ack),
            .. FrameTarget.Record(Tcp(TcpFlags.Ack | TcpFlags.Psh, 1001, 0, "GET / HTTP/1.0\r\n\r\n"u8), ack),
            .. FrameTarget.Record(Tcp(TcpFlags.Fin | TcpFlags.Ack, 1019, 0, []), ack),
            .. FrameTarget.Record(Tcp(TcpFlags.Rst, 1020, 0, []), fix)]);
        // The same connection, but the guest goes away after its first data and comes back sending more.
        yield return ("frame", "tcp-guest-reconnects", [
            .. FrameTarget.Record(Tcp(TcpFlags.Syn, 1000, 0, [], withOptions: true), fix | FrameFlags.Pump),
            .. FrameTarget.Record(Tcp(TcpFlags.Ack, 1001, 0, []), ack),
            .. FrameTarget.Record(Tcp(TcpFlags.Ack | TcpFlags.Psh, 1001, 0, "ping"u8), ack | FrameFlags.Reconnect),
            .. FrameTarget.Record(Tcp(TcpFlags.Ack | TcpFlags.Psh, 1005, 0, "pong"u8), ack),
            .. FrameTarget.Record(Arp())]);
        yield return ("frame", "ipv4-fragments", Frames(Fragments()));
        yield return ("frame", "udp-to-gateway", Frames(GuestPackets.Udp(Config.GatewayMac, Guest, 40000, Config.Gateway, 9, "hello"u8)));
        // IPv6: Neighbor Discovery and echo, TCP to the host alias, DNS on fec0::3, DHCPv6, fragments behind a header.
        yield return ("frame", "ipv6-ndp", Frames(GuestPackets6.RouterSolicitation(),
            GuestPackets6.NeighborSolicitation(IPv6Address.Unspecified, GuestPackets6.Global),
            GuestPackets6.NeighborSolicitation(GuestPackets6.Global, Config.IPv6Gateway), GuestPackets6.Echo(Config.IPv6Gateway)));
        yield return ("frame", "ipv6-tcp-syn", Frames(GuestPackets6.TcpSyn(Config.IPv6Gateway, 9)));
        yield return ("frame", "ipv6-dns-query", Frames(GuestPackets6.Udp(GuestPackets6.Global, Config.IPv6Dns, 5353, 53, DnsQuery())));
        yield return ("frame", "ipv6-dhcpv6", Frames(GuestPackets6.Udp(GuestPackets6.LinkLocal, Dhcpv6Message.AllServersAndRelays, 546, 547,
            [Dhcpv6Message.TypeInformationRequest, 0x12, 0x34, 0x56, 0, 6, 0, 2, 0, 23])));
        yield return ("frame", "ipv6-fragments", Frames(GuestPackets6.Fragments()));
        // UDP over IPv6 through the host alias (a flow to ::1), to an IPv4-mapped address (refused), and echo beyond
        // Emunet's own addresses (the relay's policy check; the rig denies it).
        yield return ("frame", "ipv6-udp-to-alias", Frames(GuestPackets6.Udp(GuestPackets6.Global, Config.IPv6Gateway, 40000, 9, "hello6"u8),
            GuestPackets6.Udp(GuestPackets6.Global, IPv6Address.Parse("::ffff:10.0.2.2"), 40000, 9, "mapped"u8)));
        yield return ("frame", "ipv6-echo-relay", Frames(GuestPackets6.Echo(IPv6Address.Parse("2001:db8::1")),
            GuestPackets6.Echo(IPv6Address.Parse("::ffff:127.0.0.1"))));

        yield return ("dhcp", "discover", Dhcp(DhcpMessage.MessageType.Discover));
        yield return ("dhcp", "request", Dhcp(DhcpMessage.MessageType.Request, requested: Guest));
        yield return ("dhcp", "request-other", Dhcp(DhcpMessage.MessageType.Request, requested: new IPv4Address(10, 0, 2, 99)));
        yield return ("dhcp", "inform", Dhcp(DhcpMessage.MessageType.Inform));
        yield return ("dhcp", "release", Dhcp(DhcpMessage.MessageType.Release));
        yield return ("dhcp", "decline", Dhcp(DhcpMessage.MessageType.Decline, requested: Guest));

        yield return ("dns", "query", DnsQuery());
        yield return ("dns", "response", DnsResponse());

        yield return ("virtqueue", "rx-tx-indirect", Ring(addresses: false));
        yield return ("virtqueue", "explicit-addresses", Ring(addresses: true));

        yield return ("vhost-user", "session", VhostUserSetup(hostile: false));
        yield return ("vhost-user", "bad-header-then-session", VhostUserSetup(hostile: true));

        string[] requests =
        [
            """{"v":1,"id":1,"op":"info"}""",
            """{"v":1,"id":"a","op":"forward.add","spec":"tcp:127.0.0.1:8080:80"}""",
            """{"v":1,"op":"forward.add","spec":"hostfwd=udp:127.0.0.1:5353-:53"}""",
            """{"v":1,"op":"forward.list"}""",
            """{"v":1,"op":"forward.remove","protocol":"tcp","address":"127.0.0.1","port":8080,"force":true}""",
            """{"v":1,"op":"connections.list","protocol":"tcp","port":10977,"state":"ESTABLISHED"}""",
            """{"v":1,"op":"stats"}""",
            """{"v":1,"op":"capture.start","path":"/tmp/emunet-fuzz.pcap"}""",
            """{"v":1,"op":"capture.stop"}""",
            """{"v":1,"id":{"n":[1,2]},"op":"shutdown"}""",
        ];
        foreach (string r in requests)
        {
            using var doc = System.Text.Json.JsonDocument.Parse(r);
            yield return ("control", doc.RootElement.GetProperty("op").GetString()!.Replace('.', '-') + (r.Contains("hostfwd") ? "-hostfwd" : ""),
                Encoding.UTF8.GetBytes(r));
        }
    }

    public static void Write(string directory)
    {
        foreach (var (target, name, input) in All())
        {
            string folder = Path.Combine(directory, target);
            Directory.CreateDirectory(folder);
            File.WriteAllBytes(Path.Combine(folder, name), input);
        }
    }

    private static byte[] Frames(params byte[][] frames) => frames.SelectMany(f => FrameTarget.Record(f)).ToArray();

    private static byte[] Arp()
    {
        var arp = new byte[ArpPacket.Length];
        ArpPacket.Write(arp, ArpPacket.OperationRequest, StackRig.GuestMac, Guest, MacAddress.Zero, Config.Gateway);
        return GuestPackets.Ethernet(MacAddress.Broadcast, EthernetFrame.EtherTypeArp, arp);
    }

    private static byte[] DhcpFrame(byte[] message) =>
        GuestPackets.Udp(MacAddress.Broadcast, IPv4Address.Any, Engine.Stack.Dhcp.ClientPort, IPv4Address.Broadcast, Engine.Stack.Dhcp.ServerPort, message);

    private static byte[] Dhcp(DhcpMessage.MessageType type, IPv4Address? requested = null)
    {
        var buffer = new byte[DhcpMessage.MinReplyLength + 64];
        var writer = DhcpMessage.WriteHeader(buffer, DhcpMessage.OpRequest, 0x12345678, 0,
            type == DhcpMessage.MessageType.Inform ? Guest : IPv4Address.Any, IPv4Address.Any, IPv4Address.Any, IPv4Address.Any, StackRig.GuestMac);
        writer.AddByte(DhcpMessage.OptionCode.MessageType, (byte)type);
        if (requested is { } address)
        {
            writer.AddAddress(DhcpMessage.OptionCode.RequestedAddress, address);
            writer.AddAddress(DhcpMessage.OptionCode.ServerIdentifier, Config.Gateway);
        }
        writer.Add(DhcpMessage.OptionCode.ParameterRequestList, [1, 3, 6, 26, 28]);
        writer.Add(DhcpMessage.OptionCode.HostName, "guest"u8);
        return buffer[..writer.End()];
    }

    private static byte[] DnsFrame(byte[] message) => GuestPackets.Udp(Config.GatewayMac, Guest, 5353, Config.Dns, Udp.DnsPort, message);

    /// <summary>A recursive query for example.com A (RFC 1035 §4.1).</summary>
    private static byte[] DnsQuery() => Dns(0x0100, answers: 0);

    private static byte[] DnsResponse() => Dns(0x8180, answers: 1);

    private static byte[] Dns(ushort flags, ushort answers)
    {
        var m = new List<byte>(new byte[DnsMessage.HeaderLength]);
        DnsMessage.WriteHeader(System.Runtime.InteropServices.CollectionsMarshal.AsSpan(m), 0x4242, flags, 1, answers);
        m.AddRange([7, .. "example"u8, 3, .. "com"u8, 0, 0, 1, 0, 1]);
        // A compression pointer back to the question name, then TYPE A, CLASS IN, TTL, RDLENGTH 4, 93.184.216.34.
        if (answers > 0) m.AddRange([0xc0, 12, 0, 1, 0, 1, 0, 0, 0x0e, 0x10, 0, 4, 93, 184, 216, 34]);
        return m.ToArray();
    }

    private static byte[] Echo()
    {
        var icmp = new byte[IcmpPacket.HeaderLength + 8];
        IcmpPacket.WriteHeader(icmp, IcmpPacket.TypeEchoRequest, 0, 0x77, 1);
        return GuestPackets.IPv4(Config.GatewayMac, Guest, Config.Gateway, IPv4Packet.ProtocolIcmp, icmp);
    }

    private static byte[] Tcp(TcpFlags flags, uint seq, uint ack, ReadOnlySpan<byte> data, bool withOptions = false)
    {
        var fields = new TcpFields
        {
            SourcePort = 40000, DestinationPort = 10977, SequenceNumber = seq, AcknowledgmentNumber = ack, Flags = flags,
            Window = 65535, MaxSegmentSize = (ushort)(withOptions ? 1460 : 0), WindowScale = withOptions ? 7 : -1,
        };
        var segment = new byte[fields.HeaderLength + data.Length];
        data.CopyTo(segment.AsSpan(fields.HeaderLength));
        fields.Emit(segment, Guest, Config.Gateway, data.Length);
        return GuestPackets.IPv4(Config.GatewayMac, Guest, Config.Gateway, IPv4Packet.ProtocolTcp, segment);
    }

    /// <summary>A UDP datagram to the gateway in two IPv4 fragments (RFC 791 §3.2), the first 16 bytes in the first.</summary>
    private static byte[][] Fragments()
    {
        var whole = GuestPackets.Udp(Config.GatewayMac, Guest, 40001, Config.Gateway, 9, "fragmented datagram payload"u8);
        const int split = 16, ip = EthernetFrame.HeaderLength + IPv4Packet.MinHeaderLength;
        var first = whole[..(ip + split)];
        var second = whole[..ip].Concat(whole[(ip + split)..]).ToArray();
        BinaryPrimitives.WriteUInt16BigEndian(first.AsSpan(EthernetFrame.HeaderLength + IPv4Packet.Offsets.FlagsFragment), 0x2000);
        BinaryPrimitives.WriteUInt16BigEndian(second.AsSpan(EthernetFrame.HeaderLength + IPv4Packet.Offsets.FlagsFragment), split / 8);
        return [first, second];
    }

    /// <summary>
    /// A queue of 8: a two-buffer readable chain (a transmit), a writable one (a receive buffer) and an indirect table
    /// of two, all three made available.
    /// </summary>
    private static byte[] Ring(bool addresses)
    {
        const int size = 8;
        var input = new List<byte> { 3, (byte)(VirtqueueTarget.FlagIndirect | (addresses ? VirtqueueTarget.FlagAddresses : 0)), 0, 0 };
        if (addresses)
            foreach (ulong a in new[] { VirtqueueTarget.DescTable, VirtqueueTarget.AvailRing, VirtqueueTarget.UsedRing })
                input.AddRange(BitConverter.GetBytes(a));
        const ulong buffers = VirtqueueTarget.Buffers, indirect = buffers + 0x1000;
        var table = new byte[16 * size];
        Descriptor(table, 0, buffers, 12, 1, 1);
        Descriptor(table, 1, buffers + 0x100, 1500, 0, 0);
        Descriptor(table, 2, buffers + 0x800, 2048, 2, 0);
        Descriptor(table, 3, indirect, 32, 4, 0);
        input.AddRange(table);
        var avail = new byte[4 + 2 * size];
        BinaryPrimitives.WriteUInt16LittleEndian(avail.AsSpan(2), 3);
        BinaryPrimitives.WriteUInt16LittleEndian(avail.AsSpan(4), 0);
        BinaryPrimitives.WriteUInt16LittleEndian(avail.AsSpan(6), 2);
        BinaryPrimitives.WriteUInt16LittleEndian(avail.AsSpan(8), 3);
        input.AddRange(avail);
        var data = new byte[0x1000 + 32];
        Descriptor(data, 0x1000 / 16, buffers + 0x200, 12, 1, 1);
        Descriptor(data, 0x1000 / 16 + 1, VirtqueueTarget.High, 64, 0, 0);
        input.AddRange(data);
        return input.ToArray();
    }

    /// <summary>
    /// A front-end's whole setup as QEMU sends it (features, memory table with its memfd, both rings with kick and call
    /// eventfds), a frame the guest transmits, one delivered to it, and the rings stopped; hostile: first a message
    /// whose header is wrong, which ends that connection.
    /// </summary>
    private static byte[] VhostUserSetup(bool hostile)
    {
        const ulong frontEnd = 0x7f0000000000;
        const ushort size = 8;
        var image = new byte[0xb000];
        var rings = new[] { (Desc: 0x1000ul, Avail: 0x2000ul, Used: 0x3000ul), (Desc: 0x5000ul, Avail: 0x6000ul, Used: 0x7000ul) };
        // Receive queue: two writable 2 KiB buffers. Transmit queue: one chain, virtio_net_hdr then an ARP request.
        Descriptor(image, (int)(rings[0].Desc / 16), 0x8000, 2048, 2, 0);
        Descriptor(image, (int)(rings[0].Desc / 16) + 1, 0x9000, 2048, 2, 0);
        BinaryPrimitives.WriteUInt16LittleEndian(image.AsSpan((int)rings[0].Avail + 2), 2);
        BinaryPrimitives.WriteUInt16LittleEndian(image.AsSpan((int)rings[0].Avail + 6), 1);
        var arp = Arp();
        arp.CopyTo(image, 0xa000 + VirtioNetQueues.NetHeaderLength);
        Descriptor(image, (int)(rings[1].Desc / 16), 0xa000, (uint)(VirtioNetQueues.NetHeaderLength + arp.Length), 0, 0);
        BinaryPrimitives.WriteUInt16LittleEndian(image.AsSpan((int)rings[1].Avail + 2), 1);

        var input = new List<byte>();
        input.AddRange(BitConverter.GetBytes((ushort)image.Length));
        input.AddRange(image);
        void Send(VhostUserRequest request, byte[] payload, byte action = 0, bool needReply = false, uint version = VhostUserProtocol.Version)
        {
            var message = new byte[VhostUserProtocol.HeaderSize + payload.Length];
            BinaryPrimitives.WriteUInt32LittleEndian(message, (uint)request);
            BinaryPrimitives.WriteUInt32LittleEndian(message.AsSpan(4), version | (needReply ? VhostUserProtocol.FlagNeedReply : 0));
            BinaryPrimitives.WriteUInt32LittleEndian(message.AsSpan(8), (uint)payload.Length);
            payload.CopyTo(message, VhostUserProtocol.HeaderSize);
            input.AddRange(VhostUserTarget.Record(action, message));
        }
        static byte[] U64(ulong value) => BitConverter.GetBytes(value);
        static byte[] Pair(uint a, uint b) => [.. BitConverter.GetBytes(a), .. BitConverter.GetBytes(b)];

        if (hostile) Send(VhostUserRequest.GetFeatures, [], version: 2);
        Send(VhostUserRequest.GetFeatures, []);
        Send(VhostUserRequest.SetFeatures, U64(VhostUserProtocol.OfferedFeatures));
        Send(VhostUserRequest.GetProtocolFeatures, []);
        Send(VhostUserRequest.SetProtocolFeatures, U64(VhostUserProtocol.OfferedProtocolFeatures));
        Send(VhostUserRequest.SetOwner, []);
        Send(VhostUserRequest.SetMemTable,
            [.. Pair(1, 0), .. U64(0), .. U64(VhostUserTarget.MemorySize), .. U64(frontEnd), .. U64(0)], VhostUserTarget.SendMemory, needReply: true);
        for (uint q = 0; q < 2; q++)
        {
            Send(VhostUserRequest.SetVringNum, Pair(q, size));
            Send(VhostUserRequest.SetVringBase, Pair(q, 0));
            Send(VhostUserRequest.SetVringAddr,
                [.. Pair(q, 0), .. U64(frontEnd + rings[q].Desc), .. U64(frontEnd + rings[q].Used), .. U64(frontEnd + rings[q].Avail), .. U64(0)]);
            Send(VhostUserRequest.SetVringCall, U64(q), VhostUserTarget.SendEventFd);
            Send(VhostUserRequest.SetVringKick, U64(q), VhostUserTarget.SendEventFd, needReply: true);
            Send(VhostUserRequest.SetVringEnable, Pair(q, 1));
        }
        input.AddRange(VhostUserTarget.Record(VhostUserTarget.KickTx, []));
        input.AddRange(VhostUserTarget.Record(VhostUserTarget.FrameToGuest, Arp()));
        Send(VhostUserRequest.GetVringBase, Pair(0, 0));
        Send(VhostUserRequest.GetVringBase, Pair(1, 0));
        return input.ToArray();
    }

    private static void Descriptor(byte[] table, int index, ulong address, uint length, ushort flags, ushort next)
    {
        var d = table.AsSpan(16 * index);
        BinaryPrimitives.WriteUInt64LittleEndian(d, address);
        BinaryPrimitives.WriteUInt32LittleEndian(d[8..], length);
        BinaryPrimitives.WriteUInt16LittleEndian(d[12..], flags);
        BinaryPrimitives.WriteUInt16LittleEndian(d[14..], next);
    }
}
