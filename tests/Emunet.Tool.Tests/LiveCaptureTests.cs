using System.Buffers.Binary;
using System.Diagnostics;
using System.Net.Sockets;
using System.Text;
using System.Text.Json;
using Emunet.Engine.Control;
using Emunet.Engine.Wire;

namespace Emunet.Tool.Tests;

/// <summary>
/// <c>emunet capture start -</c>: the pcap streamed to standard output from a real engine with a stand-in guest on its
/// device socket, read back by tshark (an independent reader); and a reader that never reads costs frames, counted,
/// never the engine.
/// </summary>
[Collection(RuntimeDirCollection.Name)]
public sealed class LiveCaptureTests : IDisposable
{
    private static readonly MacAddress GuestMac = MacAddress.Parse("52:54:00:12:34:56");
    private readonly RuntimeDirScope _scope = new();

    public void Dispose() => _scope.Dispose();

    private static void Send(Socket link, ReadOnlySpan<byte> frame)
    {
        var framed = new byte[4 + frame.Length];
        BinaryPrimitives.WriteUInt32BigEndian(framed, (uint)frame.Length);
        frame.CopyTo(framed.AsSpan(4));
        link.Send(framed);
    }

    private static byte[] ArpRequest(IPv4Address target)
    {
        var arp = new byte[42];
        EthernetFrame.WriteHeader(arp, MacAddress.Broadcast, GuestMac, EthernetFrame.EtherTypeArp);
        ArpPacket.Write(arp.AsSpan(14), ArpPacket.OperationRequest, GuestMac, new IPv4Address(10, 0, 2, 15), MacAddress.Zero, target);
        return arp;
    }

    private static JsonElement Stats() =>
        JsonDocument.Parse(ToolCommandTests.Cli("stats", "--json").GetAwaiter().GetResult().Out).RootElement;

    [Fact]
    public async Task Capture_to_standard_output_streams_a_pcap_tshark_reads()
    {
        string device = _scope.Scratch("live.dev"), pcap = _scope.Scratch("live.pcap");
        await using var run = new ToolCommandTests.RunningTool("live", "--socket", device);
        using var link = new Socket(AddressFamily.Unix, SocketType.Stream, ProtocolType.Unspecified);
        link.Connect(new UnixDomainSocketEndPoint(device));

        using var stop = new CancellationTokenSource();
        var file = new FileStream(pcap, FileMode.Create, FileAccess.Write, FileShare.Read);
        var output = new StreamWriter(file);
        var capture = Task.Run(() => EmunetCli.InvokeAsync(["capture", "start", "-"], output, TextWriter.Null, stop.Token));
        Wait.Until(() => capture.IsCompleted || Stats().GetProperty("liveCaptures").GetInt32() == 1, "the live capture to start");
        Assert.False(capture.IsCompleted, "capture start - exited early");

        // Two ARP requests; the engine answers each: four frames, both directions.
        Send(link, ArpRequest(new IPv4Address(10, 0, 2, 2)));
        Send(link, ArpRequest(new IPv4Address(10, 0, 2, 3)));
        const int expected = 24 + 4 * (16 + 42);
        Wait.Until(() => new FileInfo(pcap).Length >= expected, "four frames on standard output");

        stop.Cancel(); // Ctrl+C
        Assert.Equal(0, await capture.WaitAsync(TimeSpan.FromSeconds(15)));
        await output.DisposeAsync();
        Wait.Until(() => Stats().GetProperty("liveCaptures").GetInt32() == 0, "the engine to drop the live capture");

        var psi = new ProcessStartInfo("tshark", ["-r", pcap, "-T", "fields", "-e", "arp.opcode", "-e", "arp.dst.proto_ipv4"])
        { RedirectStandardOutput = true, RedirectStandardError = true };
        using var tshark = Process.Start(psi)!;
        string fields = await tshark.StandardOutput.ReadToEndAsync();
        await tshark.WaitForExitAsync();
        Assert.True(tshark.ExitCode == 0, await tshark.StandardError.ReadToEndAsync());
        var lines = fields.Split('\n', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries);
        Assert.Equal(["1\t10.0.2.2", "2\t10.0.2.15", "1\t10.0.2.3", "2\t10.0.2.15"], lines);
    }

    [Fact]
    public async Task Capture_to_a_terminal_or_with_json_is_refused()
    {
        string device = _scope.Scratch("tty.dev");
        await using var run = new ToolCommandTests.RunningTool("tty", "--socket", device);
        var json = await ToolCommandTests.Cli("capture", "start", "-", "--json");
        Assert.Equal((int)ExitCode.UsageError, json.Code);
        Assert.Contains("standard output carries the pcap", json.Err);
        var text = await ToolCommandTests.Cli("capture", "start", "-");   // a StringWriter is no byte stream
        Assert.Equal((int)ExitCode.UsageError, text.Code);
        Assert.Contains("pipe it into a reader", text.Err);
        Assert.Equal(0, Stats().GetProperty("liveCaptures").GetInt32());
    }

    [Fact]
    public async Task A_reader_that_never_reads_costs_counted_frames_not_the_engine()
    {
        string device = _scope.Scratch("slow.dev");
        await using var run = new ToolCommandTests.RunningTool("slow", "--socket", device);
        using var link = new Socket(AddressFamily.Unix, SocketType.Stream, ProtocolType.Unspecified);
        link.Connect(new UnixDomainSocketEndPoint(device));

        // A control client asks for the stream and then reads nothing at all.
        using var reader = new Socket(AddressFamily.Unix, SocketType.Stream, ProtocolType.Unspecified);
        reader.Connect(new UnixDomainSocketEndPoint(RuntimeDirectory.SocketPathFor("slow")));
        reader.Send(Encoding.UTF8.GetBytes("{\"v\":1,\"id\":1,\"op\":\"capture.stream\"}\n"));
        Wait.Until(() => Stats().GetProperty("liveCaptures").GetInt32() == 1, "the live capture to start");

        // 10,000 frames of 1,400 bytes (an ethertype nobody serves: dropped and counted, never answered): 14 MB,
        // far beyond the live capture's 4 MiB ring and the socket's buffer.
        const int frames = 10_000;
        var frame = new byte[1400];
        EthernetFrame.WriteHeader(frame, MacAddress.Broadcast, GuestMac, 0x88b5);
        var framed = new byte[4 + frame.Length];
        BinaryPrimitives.WriteUInt32BigEndian(framed, (uint)frame.Length);
        frame.CopyTo(framed.AsSpan(4));
        for (int i = 0; i < frames; i++) link.Send(framed);

        // The engine took every frame and still answers; what the reader could not take is counted.
        Wait.Until(() => Stats().GetProperty("framesFromGuest").GetInt64() >= frames, "the engine to take every frame");
        var stats = Stats();
        long dropped = stats.GetProperty("liveCaptureFramesDropped").GetInt64();
        Assert.True(dropped > 0, "no frame was dropped: the ring did not fill");

        // Now read all of it: a valid pcap whose records and drops add up to every frame.
        reader.Shutdown(SocketShutdown.Send);
        var all = new MemoryStream();
        var buffer = new byte[1 << 16];
        int n;
        reader.ReceiveTimeout = 15_000;
        // The reply line first; the engine ends the stream when it sees the shutdown, after what it holds.
        while ((n = reader.Receive(buffer)) > 0) all.Write(buffer, 0, n);
        var bytes = all.ToArray();
        int nl = Array.IndexOf(bytes, (byte)'\n');
        Assert.True(nl > 0);
        var pcap = bytes.AsSpan(nl + 1);
        Assert.Equal(0xa1b2c3d4u, BinaryPrimitives.ReadUInt32LittleEndian(pcap));
        int records = 0, offset = 24;
        while (offset + 16 <= pcap.Length)
        {
            int captured = BinaryPrimitives.ReadInt32LittleEndian(pcap[(offset + 8)..]);
            Assert.Equal(1400, captured);
            offset += 16 + captured;
            records++;
        }
        Assert.Equal(pcap.Length, offset);
        Assert.True(records > 0 && records < frames, $"{records} records");
    }
}
