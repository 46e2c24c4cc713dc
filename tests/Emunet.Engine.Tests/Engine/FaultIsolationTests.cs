using System.Buffers.Binary;
using System.Collections.Concurrent;
using System.Net.Sockets;
using Emunet.Engine.Diagnostics;
using Emunet.Engine.Interop;
using Emunet.Engine.Runtime;
using Emunet.Engine.Stack;
using Emunet.Engine.Stack.Nat;
using Emunet.Engine.Tests.Stack;
using Emunet.Engine.Wire;
using Microsoft.Extensions.Logging;

namespace Emunet.Engine.Tests.Engine;

/// <summary>No exception from one flow, handler or capture ends the engine; guest-triggered logging is rate-limited.</summary>
public sealed class FaultIsolationTests
{
    private sealed class Throwing(int fd) : IPollable, IFaultIsolated
    {
        public int Faults;
        public void OnPoll(uint events)
        {
            LibcVhost.DrainEventFd(fd);
            throw new InvalidOperationException("a bug in one handler");
        }
        public void OnFault(Exception error) => Faults++;
    }

    [Fact]
    public async Task A_throwing_handler_is_reported_and_isolated_and_the_loop_goes_on()
    {
        using var loop = new EventLoop();
        var reported = new ConcurrentQueue<Exception>();
        loop.SetFaultReporter((_, e) => reported.Enqueue(e));
        int fd = Libc.eventfd(0, 0x800 | 0x80000); // EFD_NONBLOCK | EFD_CLOEXEC
        var bad = new Throwing(fd);
        loop.Register(fd, Libc.EPOLLIN, bad);
        var thread = new Thread(loop.Run) { IsBackground = true };
        thread.Start();
        LibcVhost.SignalEventFd(fd);
        Assert.True(SpinWait.SpinUntil(() => !reported.IsEmpty, 5000));
        // The loop still runs work after the fault.
        Assert.Equal(42, await loop.InvokeAsync(() => 42).WaitAsync(TimeSpan.FromSeconds(5)));
        Assert.Equal(1, await loop.InvokeAsync(() => bad.Faults));
        loop.Stop();
        thread.Join();
        Libc.close(fd);
    }

    private sealed class TimerBomb(FlowKey key) : Flow
    {
        public bool Aborted;
        public FlowTable? Table;
        public override string StateName => "bomb";
        public override void OnPoll(uint events) { }
        public override long OnTimer(long nowMs) => throw new InvalidOperationException("timer bug");
        protected override void Abort() { Aborted = true; Table!.Remove(this); }
        public void Init() => Key = key;
    }

    private sealed class Idle : Flow
    {
        public bool Closed;
        public FlowTable? Table;
        public override string StateName => "idle";
        public override void OnPoll(uint events) { }
        protected override void OnIdle() { Closed = true; Table!.Remove(this); }
        protected override void Abort() => Table!.Remove(this);
    }

    [Fact]
    public void A_flow_whose_timer_throws_is_dropped_and_the_scan_serves_the_others()
    {
        using var loop = new EventLoop();
        var reported = new List<Exception>();
        loop.SetFaultReporter((_, e) => reported.Add(e));
        var table = new FlowTable(loop, new Counters());
        var idle = new Idle { Table = table, IdleTimeoutMs = 10, LastActive = 0 };
        idle.Key = FlowKey.IPv4(FlowProtocol.Udp, new IPv4Address(10, 0, 2, 15), 1, new IPv4Address(10, 0, 2, 2), 1);
        var bomb = new TimerBomb(FlowKey.IPv4(FlowProtocol.Udp, new IPv4Address(10, 0, 2, 15), 2, new IPv4Address(10, 0, 2, 2), 2)) { Table = table };
        bomb.Init();
        Assert.True(table.TryAdd(idle));
        Assert.True(table.TryAdd(bomb));
        table.OnTimer(1000);
        Assert.True(bomb.Aborted);
        Assert.True(idle.Closed);
        Assert.Equal(0, table.Count);
        Assert.Single(reported);
    }

    private sealed class CountingLogger : ILoggerFactory, ILogger
    {
        public int Lines;
        public readonly List<string> Texts = new();
        public ILogger CreateLogger(string categoryName) => this;
        public void AddProvider(ILoggerProvider provider) { }
        public void Dispose() { }
        public IDisposable? BeginScope<TState>(TState state) where TState : notnull => null;
        public bool IsEnabled(LogLevel logLevel) => true;
        public void Log<TState>(LogLevel logLevel, EventId eventId, TState state, Exception? exception, Func<TState, Exception?, string> formatter)
        {
            lock (Texts) { Lines++; Texts.Add(formatter(state, exception)); }
        }
    }

    [Fact]
    public void Repeated_lines_are_limited_and_the_next_one_says_how_many_were_held()
    {
        long now = 0;
        var sink = new CountingLogger();
        var limited = new RateLimitedLoggerFactory(sink, () => now);
        var log = limited.CreateLogger("Emunet.Stack");
        for (int i = 0; i < 50_000; i++) log.LogWarning("The guest declined the DHCP address {Address}.", "10.0.2.15");
        log.LogWarning("Another kind of line {N}.", 1);
        Assert.Equal(LogLimiter.Burst + 1, sink.Lines);
        Assert.Equal(50_000 - LogLimiter.Burst, limited.Suppressed);
        now += LogLimiter.IntervalMs;
        log.LogWarning("The guest declined the DHCP address {Address}.", "10.0.2.15");
        Assert.Contains($"({50_000 - LogLimiter.Burst} similar lines not logged)", sink.Texts[^1]);
        log.LogCritical("Critical lines always pass {N}.", 1);
        Assert.Equal(LogLimiter.Burst + 3, sink.Lines);
    }

    [Fact]
    public async Task A_dhcp_decline_flood_through_a_real_engine_logs_a_few_lines()
    {
        var sink = new CountingLogger();
        var loggers = sink;
        string dir = Directory.CreateTempSubdirectory("emunet-fault-").FullName;
        string path = Path.Combine(dir, "g.sock");
        using var engine = new EmunetEngine(new EngineOptions { Name = "fault", StreamSocket = path }, loggers);
        engine.Start();
        using var emulator = new Socket(AddressFamily.Unix, SocketType.Stream, ProtocolType.Unspecified);
        emulator.Connect(new UnixDomainSocketEndPoint(path));
        var decline = Framed(DhcpTests.ClientMessageForTests(DhcpMessage.MessageType.Decline));
        var batch = new byte[decline.Length * 1000];
        for (int i = 0; i < 1000; i++) decline.CopyTo(batch, i * decline.Length);
        for (int i = 0; i < 50; i++) emulator.Send(batch);
        var deadline = DateTime.UtcNow.AddSeconds(30);
        while ((await engine.GetStatisticsAsync()).FramesFromGuest < 50_000 && DateTime.UtcNow < deadline) await Task.Delay(20);
        var stats = await engine.GetStatisticsAsync();
        Assert.Equal(50_000, stats.FramesFromGuest);
        Assert.True(sink.Lines < 20, $"{sink.Lines} lines logged");
        Assert.True(stats.LogLinesSuppressed >= 49_000, $"{stats.LogLinesSuppressed} suppressed");
        Directory.Delete(dir, true);
    }

    [Fact]
    public async Task A_capture_on_a_full_disk_stops_itself_and_says_why_and_the_engine_goes_on()
    {
        string dir = Directory.CreateTempSubdirectory("emunet-fault-").FullName;
        string path = Path.Combine(dir, "g.sock");
        var loggers = new CountingLogger();
        using var engine = new EmunetEngine(new EngineOptions { Name = "capture", StreamSocket = path, CapturePath = "/dev/full" }, loggers);
        engine.Start();
        using var emulator = new Socket(AddressFamily.Unix, SocketType.Stream, ProtocolType.Unspecified) { ReceiveTimeout = 5000 };
        emulator.Connect(new UnixDomainSocketEndPoint(path));
        var arp = Framed(GuestFrames.Arp(ArpPacket.OperationRequest, StackHarness.GuestIp, StackHarness.Gateway));
        // Frames flow until the capture's flush (at least once a second) meets the full disk.
        var deadline = DateTime.UtcNow.AddSeconds(20);
        EngineStatisticsView stats;
        do
        {
            emulator.Send(arp);
            ReadFrame(emulator);
            var now = await engine.GetStatisticsAsync();
            stats = new(now.CaptureFailure, now.CaptureFile);
        } while (stats.Failure is null && DateTime.UtcNow < deadline);
        Assert.NotNull(stats.Failure);
        Assert.Contains("/dev/full", stats.Failure);
        Assert.Null(stats.File);
        var e = await Assert.ThrowsAnyAsync<InvalidOperationException>(() => engine.StopCaptureAsync());
        Assert.Contains("No space left on device", e.Message);
        Assert.Equal(0, (await engine.GetStatisticsAsync()).DropsByReason.GetValueOrDefault("InternalFault"));
        // Still serving the guest.
        emulator.Send(arp);
        Assert.Equal(EthernetFrame.EtherTypeArp, BinaryPrimitives.ReadUInt16BigEndian(ReadFrame(emulator).AsSpan(12)));
        Assert.False(engine.Completion.IsCompleted);
        engine.Dispose();
        Assert.True(engine.Completion.IsCompletedSuccessfully);
        Assert.False(File.Exists(path));
        Directory.Delete(dir, true);
    }

    private readonly record struct EngineStatisticsView(string? Failure, string? File);

    private static byte[] Framed(byte[] frame)
    {
        var b = new byte[4 + frame.Length];
        BinaryPrimitives.WriteUInt32BigEndian(b, (uint)frame.Length);
        frame.CopyTo(b, 4);
        return b;
    }

    private static byte[] ReadFrame(Socket s)
    {
        var len = new byte[4];
        ReadExactly(s, len);
        var frame = new byte[BinaryPrimitives.ReadUInt32BigEndian(len)];
        ReadExactly(s, frame);
        return frame;
    }

    private static void ReadExactly(Socket s, byte[] buffer)
    {
        int n = 0;
        while (n < buffer.Length)
        {
            int r = s.Receive(buffer, n, buffer.Length - n, SocketFlags.None);
            if (r == 0) throw new IOException("the engine closed the link");
            n += r;
        }
    }
}
