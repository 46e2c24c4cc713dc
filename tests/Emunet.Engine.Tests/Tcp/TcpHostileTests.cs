using Emunet.Engine.Wire;

namespace Emunet.Engine.Tests.Tcp;

/// <summary>Hostile and random input: nothing throws out of the segment path and the stack keeps working.</summary>
public class TcpHostileTests
{
    [Fact]
    public void RandomSegmentsNeitherThrowNorBreakTheStack()
    {
        using var h = new TcpHarness(t => t.InitialRtoMs = 5000);
        using var server = HostSide.Listen(backlog: 64);
        int port = HostSide.Port(server);
        var rnd = new Random(1234);
        var flows = new List<GuestFlow>();
        for (int i = 0; i < 4; i++) flows.Add(h.Connect(port));

        for (int round = 0; round < 3000; round++)
        {
            var f = flows[rnd.Next(flows.Count)];
            uint seq = rnd.Next(4) switch
            {
                0 => f.Snd,
                1 => unchecked(f.Snd + (uint)rnd.Next(-70000, 70000)),
                2 => (uint)rnd.NextInt64(0, 1L << 32),
                _ => unchecked(f.Snd - 1),
            };
            uint ack = rnd.Next(3) switch
            {
                0 => f.Rcv,
                1 => unchecked(f.Rcv + (uint)rnd.Next(-70000, 70000)),
                _ => (uint)rnd.NextInt64(0, 1L << 32),
            };
            var flags = (TcpFlags)rnd.Next(256);
            var payload = new byte[rnd.Next(4) == 0 ? rnd.Next(0, 1460) : 0];
            rnd.NextBytes(payload);
            var packet = TcpHarness.BuildPacket(TcpHarness.Guest, f.Peer, f.GuestPort, f.PeerPort, seq, ack, flags,
                (ushort)rnd.Next(65536), payload, mss: (ushort)rnd.Next(3), windowScale: rnd.Next(-1, 20));
            if (rnd.Next(10) == 0)
            {
                // Corrupt the data offset or cut the segment, then fix both checksums so the TCP parser sees it.
                var tcp = packet.AsSpan(20);
                if (rnd.Next(2) == 0) tcp[12] = (byte)(rnd.Next(16) << 4);
                int cut = rnd.Next(0, tcp.Length + 1);
                packet = packet[..(20 + cut)];
                FixChecksums(packet);
            }
            h.Inject(packet);
            while (h.Sender.Packets.TryTake(out _)) { }
        }

        // The stack still opens and carries a connection.
        var flow = h.Connect(port);
        h.Send(flow, "still here"u8);
        Assert.Equal(flow.Snd, h.Next().AckNum);
    }

    private static void FixChecksums(byte[] packet)
    {
        var src = IPv4Address.Read(packet.AsSpan(12));
        var dst = IPv4Address.Read(packet.AsSpan(16));
        IPv4Packet.WriteHeader(packet, src, dst, IPv4Packet.ProtocolTcp, packet.Length);
        var tcp = packet.AsSpan(20);
        if (tcp.Length < 18) return;
        tcp[16] = 0;
        tcp[17] = 0;
        ushort c = Checksum.Finish(Checksum.Accumulate(Checksum.PseudoHeader(src, dst, IPv4Packet.ProtocolTcp, tcp.Length), tcp));
        tcp[16] = (byte)(c >> 8);
        tcp[17] = (byte)c;
    }
}
