using System.Buffers.Binary;
using System.Net.Sockets;
using Emunet.Engine.Wire;

namespace Emunet.Tool.Tests;

/// <summary>
/// <c>emunet forward add --wait</c> against a real engine and a stand-in guest on its device socket that speaks just
/// enough TCP: it refuses the first connections to its port (RST, "not listening yet") and then accepts (SYN-ACK).
/// </summary>
[Collection(RuntimeDirCollection.Name)]
public sealed class ForwardWaitTests : IDisposable
{
    private readonly RuntimeDirScope _scope = new();

    public void Dispose() => _scope.Dispose();

    private static Task<(int Code, string Out, string Err)> Cli(params string[] args) => ToolCommandTests.Cli(args);

    /// <summary>The stand-in guest: answers the engine's SYNs to <paramref name="port"/>, refusing the first <paramref name="refusals"/>.</summary>
    private static Task RunGuest(Socket link, ushort port, int refusals, CancellationToken token) => Task.Run(() =>
    {
        var guestMac = MacAddress.Parse("52:54:00:12:34:56");
        var guest = new IPv4Address(10, 0, 2, 15);
        var frame = new byte[70_000];
        var header = new byte[4];
        int seen = 0;
        try
        {
            while (!token.IsCancellationRequested)
            {
                if (!ReadExactly(link, header)) return;
                int length = (int)BinaryPrimitives.ReadUInt32BigEndian(header);
                if (!ReadExactly(link, frame.AsSpan(0, length))) return;
                if (!EthernetFrame.TryParse(frame.AsSpan(0, length), out var eth) || eth.EtherType != EthernetFrame.EtherTypeIPv4) continue;
                if (IPv4Packet.TryParse(eth.Payload, out var ip) != IPv4Packet.ParseError.None || ip.Protocol != IPv4Packet.ProtocolTcp) continue;
                if (TcpSegment.TryParse(ip.Payload, ip.Source, ip.Destination, out var seg) != TcpSegment.ParseError.None) continue;
                if (seg.DestinationPort != port || !seg.Syn || seg.Ack) continue;
                bool accept = ++seen > refusals;
                var f = new TcpFields
                {
                    SourcePort = port, DestinationPort = seg.SourcePort, SequenceNumber = accept ? 5000u : 0u,
                    AcknowledgmentNumber = seg.SequenceNumber + 1, Flags = accept ? TcpFlags.Syn | TcpFlags.Ack : TcpFlags.Rst | TcpFlags.Ack,
                    Window = accept ? (ushort)65535 : (ushort)0, WindowScale = -1,
                };
                var reply = new byte[14 + 20 + 60];
                int tcpLength = f.Emit(reply.AsSpan(34), guest, ip.Source, 0);
                IPv4Packet.WriteHeader(reply.AsSpan(14), guest, ip.Source, IPv4Packet.ProtocolTcp, 20 + tcpLength);
                EthernetFrame.WriteHeader(reply, eth.Source, guestMac, EthernetFrame.EtherTypeIPv4);
                Send(link, reply.AsSpan(0, 34 + tcpLength));
            }
        }
        catch (SocketException) { }
        catch (ObjectDisposedException) { }
    }, token);

    private static void Send(Socket link, ReadOnlySpan<byte> frame)
    {
        var framed = new byte[4 + frame.Length];
        BinaryPrimitives.WriteUInt32BigEndian(framed, (uint)frame.Length);
        frame.CopyTo(framed.AsSpan(4));
        link.Send(framed);
    }

    private static bool ReadExactly(Socket s, Span<byte> buffer)
    {
        int n = 0;
        while (n < buffer.Length)
        {
            int r = s.Receive(buffer[n..]);
            if (r == 0) return false;
            n += r;
        }
        return true;
    }

    /// <summary>
    /// A stand-in guest on an engine's device socket: it announces itself with a gratuitous ARP (so the engine learns
    /// its MAC) and answers nothing unless a test drives it. The caller disposes it (the guest detaches).
    /// </summary>
    internal static Socket AttachGuest(string deviceSocket)
    {
        var link = new Socket(AddressFamily.Unix, SocketType.Stream, ProtocolType.Unspecified);
        link.Connect(new UnixDomainSocketEndPoint(deviceSocket));
        // A gratuitous ARP: the engine learns the guest's MAC (and that 10.0.2.15 is here).
        var arp = new byte[42];
        var mac = MacAddress.Parse("52:54:00:12:34:56");
        EthernetFrame.WriteHeader(arp, MacAddress.Broadcast, mac, EthernetFrame.EtherTypeArp);
        ArpPacket.Write(arp.AsSpan(14), ArpPacket.OperationRequest, mac, new IPv4Address(10, 0, 2, 15), MacAddress.Zero, new IPv4Address(10, 0, 2, 15));
        Send(link, arp);
        return link;
    }

    [Fact]
    public async Task Wait_returns_once_the_guest_accepts_after_refusing()
    {
        string device = _scope.Scratch("wait.dev");
        await using var run = new ToolCommandTests.RunningTool("wait", "--socket", device);
        using var link = AttachGuest(device);
        using var stop = new CancellationTokenSource();
        var guest = RunGuest(link, 8088, refusals: 2, stop.Token);
        var (code, output, err) = await Cli("forward", "add", "tcp:0:8088", "--wait", "--timeout", "20");
        Assert.True(code == 0, err);
        Assert.Contains("-> guest port 8088", output);
        stop.Cancel();
        link.Dispose();
        await guest.WaitAsync(TimeSpan.FromSeconds(5));
    }

    [Fact]
    public async Task Wait_times_out_cleanly_when_the_guest_never_accepts()
    {
        string device = _scope.Scratch("never.dev");
        await using var run = new ToolCommandTests.RunningTool("never", "--socket", device);
        using var link = AttachGuest(device);
        using var stop = new CancellationTokenSource();
        var guest = RunGuest(link, 8089, refusals: int.MaxValue, stop.Token);
        var started = DateTime.UtcNow;
        var (code, _, err) = await Cli("forward", "add", "tcp:0:8089", "--wait", "--timeout", "2");
        Assert.Equal(12, code); // GuestNotReady
        Assert.Contains("did not accept on port 8089 within 2 s", err);
        Assert.True(DateTime.UtcNow - started < TimeSpan.FromSeconds(15));
        var list = await Cli("forward", "list", "--instance", "never");
        Assert.Contains("8089", list.Out); // the forward stays
        stop.Cancel();
        link.Dispose();
        await guest.WaitAsync(TimeSpan.FromSeconds(5));
    }
}
