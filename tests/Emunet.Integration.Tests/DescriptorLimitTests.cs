using System.Buffers.Binary;
using System.Diagnostics;
using System.Globalization;
using System.Net;
using System.Net.Sockets;
using Emunet.Engine.Control;
using Emunet.Engine.Stack;
using Emunet.Engine.Wire;
using Emunet.GuestRig;

namespace Emunet.Integration.Tests;

/// <summary>
/// The engine under a low open-file limit (the hardening issue's fourth finding): hundreds of forward clients must not
/// make it spin, flood its log, or die; it sizes its tables to the limit and says so once; and it keeps the last
/// descriptors free (the headroom), so forwards and guest flows are refused before the emulator's connection, the
/// control socket and the runtime itself run out.
/// </summary>
public sealed class DescriptorLimitTests
{
    /// <summary>CPU seconds (user + system) the process has used, from /proc/PID/stat.</summary>
    private static double CpuSeconds(int pid)
    {
        var stat = File.ReadAllText($"/proc/{pid}/stat");
        var fields = stat[(stat.LastIndexOf(')') + 2)..].Split(' ');
        long ticks = long.Parse(fields[11], CultureInfo.InvariantCulture) + long.Parse(fields[12], CultureInfo.InvariantCulture);
        return ticks / 100.0; // USER_HZ
    }

    [Fact]
    public async Task Four_hundred_forward_clients_under_ulimit_256_neither_spin_nor_flood_nor_kill_the_engine()
    {
        var dir = Directory.CreateTempSubdirectory("emunet-nofile-").FullName;
        int port = LoopbackPorts.Free();
        var (engine, lines, listening) = StartUnderLimit(dir, $"--socket \"{Path.Combine(dir, "g.sock")}\" --name nofile --forward tcp:{port}:80", "listening on");
        using var _ = engine;
        var clients = new List<Socket>();
        try
        {
            await listening.WaitAsync(TimeSpan.FromSeconds(30));
            // No guest is attached, so forwarded connections wait for a SYN-ACK that never comes: they hold descriptors.
            for (int i = 0; i < 400; i++)
            {
                var c = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
                try { await c.ConnectAsync(new IPEndPoint(IPAddress.Loopback, port)).WaitAsync(TimeSpan.FromSeconds(5)); }
                catch (Exception e) when (e is SocketException or TimeoutException) { }
                clients.Add(c);
            }
            double before = CpuSeconds(engine.Id);
            var watch = Stopwatch.StartNew();
            await Task.Delay(3000); // measuring a rate over a window, not waiting for a condition
            double used = CpuSeconds(engine.Id) - before;
            Assert.False(engine.HasExited, "the engine died");
            Assert.True(used < 0.5 * watch.Elapsed.TotalSeconds, $"the engine used {used:0.00} s of CPU in {watch.Elapsed.TotalSeconds:0.0} s with no work to do");
            string log;
            lock (lines) log = string.Join('\n', lines);
            Assert.True(lines.Count < 60, $"{lines.Count} log lines:\n{log}");
            Assert.Contains("open-file limit is 256", log);
        }
        finally
        {
            foreach (var c in clients) c.Dispose();
            if (!engine.HasExited) engine.Kill();
            await engine.WaitForExitAsync();
            try { Directory.Delete(dir, true); } catch (IOException) { }
        }
    }

    /// <summary>
    /// Runs <c>emunet run <paramref name="arguments"/></c> under <c>ulimit -n 256</c> (soft and hard: the runtime
    /// raises the soft limit to the hard one at start), its runtime folder in <paramref name="dir"/>; returns it, its
    /// output lines, and a task that completes at the first line containing <paramref name="ready"/>.
    /// </summary>
    private static (Process Engine, List<string> Lines, Task Ready) StartUnderLimit(string dir, string arguments, string ready)
    {
        var psi = new ProcessStartInfo("bash") { RedirectStandardError = true, RedirectStandardOutput = true };
        psi.ArgumentList.Add("-c");
        psi.ArgumentList.Add($"ulimit -n 256 && exec dotnet \"{ToolProcessTests.ToolDll}\" run {arguments} --log-level Information");
        psi.Environment["EMUNET_RUNTIME_DIR"] = Path.Combine(dir, "run");
        var engine = Process.Start(psi)!;
        var lines = new List<string>();
        var started = new TaskCompletionSource();
        engine.ErrorDataReceived += (_, e) =>
        {
            if (e.Data is null) return;
            lock (lines) lines.Add(e.Data);
            if (e.Data.Contains(ready, StringComparison.Ordinal)) started.TrySetResult();
        };
        engine.OutputDataReceived += (_, e) => { if (e.Data is not null) lock (lines) lines.Add(e.Data); };
        engine.BeginErrorReadLine();
        engine.BeginOutputReadLine();
        return (engine, lines, started.Task);
    }

    private static int CountLines(List<string> lines, string text)
    {
        lock (lines) return lines.Count(l => l.Contains(text, StringComparison.Ordinal));
    }

    private static async Task WaitForLogAsync(List<string> lines, string text, TimeSpan timeout)
    {
        var deadline = Stopwatch.StartNew();
        while (CountLines(lines, text) == 0)
        {
            if (deadline.Elapsed > timeout)
                lock (lines) Assert.Fail($"no log line with '{text}' within {timeout.TotalSeconds} s:\n{string.Join('\n', lines)}");
            await Task.Delay(20);
        }
    }

    /// <summary>Waits until <paramref name="condition"/> holds on a fresh stats snapshot; returns that snapshot.</summary>
    private static async Task<StatsDto> WaitForStatsAsync(ControlClient admin, Func<StatsDto, bool> condition, string what, TimeSpan timeout)
    {
        var deadline = Stopwatch.StartNew();
        while (true)
        {
            var stats = await Task.Run(admin.Stats);
            if (condition(stats)) return stats;
            if (deadline.Elapsed > timeout)
                Assert.Fail($"not within {timeout.TotalSeconds} s: {what} ({string.Join(", ", stats.DropsByReason.Select(kv => $"{kv.Key}={kv.Value}"))})");
            await Task.Delay(20);
        }
    }

    private static long Drops(StatsDto stats, string reason) => stats.DropsByReason.GetValueOrDefault(reason);

    /// <summary>Binds forwards to port 80 of the guest until the engine refuses one; returns their ports and the refusal.</summary>
    private static (List<int> Ports, ControlException Refusal) AddForwardsUntilRefused(ControlClient admin, int most)
    {
        var ports = new List<int>();
        for (int i = 0; i < most; i++)
        {
            try { ports.Add(admin.AddForward("tcp:127.0.0.1:0:80").HostPort); }
            catch (ControlException e) { return (ports, e); }
        }
        Assert.Fail($"{most} forwards bound and none refused");
        return default;
    }

    // ---- the guest's side of the stream link: 4-byte big-endian length + Ethernet frame ----

    private static readonly MacAddress GuestMac = MacAddress.Parse("52:54:00:12:34:56");
    private static readonly IPv4Address GuestIp = new(10, 0, 2, 15);
    private static readonly IPv4Address Gateway = new(10, 0, 2, 2);

    private static void SendFrame(Socket link, ReadOnlySpan<byte> frame)
    {
        var framed = new byte[4 + frame.Length];
        BinaryPrimitives.WriteUInt32BigEndian(framed, (uint)frame.Length);
        frame.CopyTo(framed.AsSpan(4));
        link.Send(framed);
    }

    private static void ReadExactly(Socket link, Span<byte> into)
    {
        for (int got = 0; got < into.Length;)
        {
            int n = link.Receive(into[got..]);
            if (n == 0) throw new IOException("the engine closed the emulator's connection");
            got += n;
        }
    }

    /// <summary>Reads frames from the engine until one matches; fails after <paramref name="timeout"/> (the socket's receive timeout bounds each read).</summary>
    private static byte[] ReceiveFrame(Socket link, Func<byte[], bool> match, string what, TimeSpan timeout)
    {
        var deadline = Stopwatch.StartNew();
        var prefix = new byte[4];
        while (deadline.Elapsed < timeout)
        {
            ReadExactly(link, prefix);
            var frame = new byte[BinaryPrimitives.ReadUInt32BigEndian(prefix)];
            ReadExactly(link, frame);
            if (match(frame)) return frame;
        }
        Assert.Fail($"no {what} from the engine within {timeout.TotalSeconds} s");
        return [];
    }

    private static byte[] ArpRequest()
    {
        var frame = new byte[EthernetFrame.HeaderLength + ArpPacket.Length];
        EthernetFrame.WriteHeader(frame, MacAddress.Broadcast, GuestMac, EthernetFrame.EtherTypeArp);
        ArpPacket.Write(frame.AsSpan(EthernetFrame.HeaderLength), ArpPacket.OperationRequest, GuestMac, GuestIp, MacAddress.Zero, Gateway);
        return frame;
    }

    private static bool IsArpReplyFromGateway(byte[] f) =>
        f.Length >= EthernetFrame.HeaderLength + ArpPacket.Length
        && BinaryPrimitives.ReadUInt16BigEndian(f.AsSpan(12)) == EthernetFrame.EtherTypeArp
        && ArpPacket.TryParse(f.AsSpan(EthernetFrame.HeaderLength), out var arp)
        && arp.Operation == ArpPacket.OperationReply && arp.SenderProtocolAddress == Gateway;

    private static byte[] Syn(ushort guestPort, int hostPort)
    {
        var tcp = new TcpFields
        {
            SourcePort = guestPort, DestinationPort = (ushort)hostPort, SequenceNumber = 1000, Flags = TcpFlags.Syn, Window = 65535,
            MaxSegmentSize = 1460, WindowScale = -1,
        };
        var frame = new byte[EthernetFrame.HeaderLength + IPv4Packet.MinHeaderLength + tcp.HeaderLength];
        EthernetFrame.WriteHeader(frame, new NetworkConfig().GatewayMac, GuestMac, EthernetFrame.EtherTypeIPv4);
        var ip = frame.AsSpan(EthernetFrame.HeaderLength);
        int length = tcp.Emit(ip[IPv4Packet.MinHeaderLength..], GuestIp, Gateway, 0);
        IPv4Packet.WriteHeader(ip, GuestIp, Gateway, IPv4Packet.ProtocolTcp, IPv4Packet.MinHeaderLength + length);
        return frame;
    }

    /// <summary>A TCP segment from 10.0.2.2:<paramref name="hostPort"/> to the guest's <paramref name="guestPort"/>; its flags, or null.</summary>
    private static TcpFlags? TcpFlagsTo(byte[] f, ushort guestPort, int hostPort)
    {
        if (f.Length < EthernetFrame.HeaderLength + 40 || BinaryPrimitives.ReadUInt16BigEndian(f.AsSpan(12)) != EthernetFrame.EtherTypeIPv4) return null;
        if (IPv4Packet.TryParse(f.AsSpan(EthernetFrame.HeaderLength), out var ip) != IPv4Packet.ParseError.None || ip.Protocol != IPv4Packet.ProtocolTcp) return null;
        var tcp = ip.Payload;
        if (BinaryPrimitives.ReadUInt16BigEndian(tcp) != hostPort || BinaryPrimitives.ReadUInt16BigEndian(tcp[2..]) != guestPort) return null;
        return (TcpFlags)tcp[13];
    }

    /// <summary>
    /// The headroom end to end, in the engine's own process under <c>ulimit -n 256</c> (64 descriptors kept free):
    /// forwards bound through the control socket until one is refused (the error names the limit and the fix); the
    /// emulator's connection then waits in the backlog with a bounded back-off (counted, logged once) while every
    /// control client is still served; once 16 forwards are removed the emulator attaches and the engine answers its
    /// ARP; back at the headroom, a guest SYN is reset and counted; and the engine never dies for want of descriptors.
    /// A raw client of the stream link stands in for the emulator, so each step is seen frame by frame.
    /// </summary>
    [Fact]
    public async Task At_the_descriptor_headroom_forwards_and_flows_are_refused_the_emulator_waits_and_the_control_socket_serves()
    {
        var dir = Directory.CreateTempSubdirectory("emunet-headroom-").FullName;
        string device = Path.Combine(dir, "g.sock");
        string control = Path.Combine(dir, "run", "headroom.sock");
        // "ready on" comes once the control socket listens ("started on", before it, only says the device does).
        var (engine, lines, started) = StartUnderLimit(dir, $"--socket \"{device}\" --name headroom", "' ready on ");
        using var _ = engine;
        using var server = new TcpListener(IPAddress.Loopback, 0); // a host service the guest's SYN is for
        server.Start();
        int serverPort = ((IPEndPoint)server.LocalEndpoint).Port;
        using var emulator = new Socket(AddressFamily.Unix, SocketType.Stream, ProtocolType.Unspecified) { ReceiveTimeout = 10_000 };
        try
        {
            await started.WaitAsync(TimeSpan.FromSeconds(60));
            Assert.Contains("open-file limit is 256: 64 descriptors are kept free", string.Join('\n', lines));
            using var admin = ControlClient.Connect(control);

            // 1. Forwards until one would take a descriptor from the headroom: refused, naming the limit and the fix.
            var (ports, refusal) = await Task.Run(() => AddForwardsUntilRefused(admin, 256));
            Assert.True(ports.Count > 64, $"only {ports.Count} forwards bound before the refusal: {refusal.Message}");
            Assert.Contains("open-file limit is 256", refusal.Message);
            Assert.Contains("ulimit -n", refusal.Message);

            // 2. The emulator connects (the kernel completes it in the backlog); the next descriptor would be in the
            // headroom, so the device listener does not accept it: it pauses, counts and says so once.
            var held = Stopwatch.StartNew();
            await emulator.ConnectAsync(new UnixDomainSocketEndPoint(device));
            await WaitForLogAsync(lines, "the emulator's connection to", TimeSpan.FromSeconds(10));
            // The back-off: five refusals take at least 50 + 100 + 200 + 400 ms; a listener that spun would count
            // thousands at once.
            var stats = await WaitForStatsAsync(admin, s => Drops(s, "AcceptOutOfDescriptors") >= 5, "five refusals of the emulator", TimeSpan.FromSeconds(15));
            Assert.True(held.ElapsedMilliseconds >= 700, $"five refusals within {held.ElapsedMilliseconds} ms: no back-off");
            Assert.True(Drops(stats, "AcceptOutOfDescriptors") < 12, $"{Drops(stats, "AcceptOutOfDescriptors")} refusals in {held.Elapsed.TotalSeconds:0.0} s");
            Assert.False((await Task.Run(admin.Info)).GuestConnected);
            Assert.Equal(1, CountLines(lines, "the emulator's connection to"));

            // 3. A new control client is served in full: the headroom is there for it.
            var fresh = await Task.Run(() =>
            {
                using var client = ControlClient.Connect(control);
                return client.ListForwards().Count;
            });
            Assert.Equal(ports.Count, fresh);

            // 4. Sixteen forwards removed: within one back-off step (at most 2 s) the waiting emulator is attached, and
            // the engine answers its ARP.
            await Task.Run(() => { foreach (int p in ports.Take(16)) admin.RemoveForward("tcp", "127.0.0.1", p, force: false); });
            var freed = Stopwatch.StartNew();
            await WaitForLogAsync(lines, "Emulator attached", TimeSpan.FromSeconds(10));
            Assert.True(freed.ElapsedMilliseconds < 5000, $"the emulator waited {freed.ElapsedMilliseconds} ms after descriptors were freed");
            await WaitForLogAsync(lines, "Accepting emulator connections on", TimeSpan.FromSeconds(10));
            SendFrame(emulator, ArpRequest());
            ReceiveFrame(emulator, IsArpReplyFromGateway, "ARP reply for 10.0.2.2", TimeSpan.FromSeconds(10));

            // 5. Back at the headroom (forwards take the descriptors just freed): a guest SYN's host socket would be
            // in it, so the SYN is reset and counted, and no connection reaches the host service.
            var (more, again) = await Task.Run(() => AddForwardsUntilRefused(admin, 32));
            Assert.True(more.Count < 16, $"{more.Count} forwards bound after 16 were removed and the emulator took one");
            Assert.Contains("ulimit -n", again.Message);
            const ushort guestPort = 40001;
            SendFrame(emulator, Syn(guestPort, serverPort));
            var reset = ReceiveFrame(emulator, f => TcpFlagsTo(f, guestPort, serverPort) is not null, "answer to the guest's SYN", TimeSpan.FromSeconds(10));
            Assert.True((TcpFlagsTo(reset, guestPort, serverPort)!.Value & TcpFlags.Rst) != 0, $"expected a reset, got {TcpFlagsTo(reset, guestPort, serverPort)}");
            stats = await Task.Run(admin.Stats);
            Assert.Equal(1, Drops(stats, "FlowOutOfDescriptors"));
            Assert.False(server.Pending(), "the refused SYN reached the host service");
            await WaitForLogAsync(lines, "New guest flows are refused", TimeSpan.FromSeconds(10));
            Assert.Equal(1, CountLines(lines, "New guest flows are refused"));

            // 6. Still serving, still alive, and the runtime never ran out.
            Assert.True((await Task.Run(admin.Info)).GuestConnected);
            Assert.False(engine.HasExited, "the engine died");
            Assert.Equal(0, CountLines(lines, "Out of memory"));
        }
        catch (Exception e) when (e is not Xunit.Sdk.XunitException)
        {
            lock (lines) throw new InvalidOperationException($"{e.Message}\nengine log:\n{string.Join('\n', lines)}", e);
        }
        finally
        {
            if (!engine.HasExited) engine.Kill();
            await engine.WaitForExitAsync();
            try { Directory.Delete(dir, true); } catch (IOException) { }
        }
    }
}
