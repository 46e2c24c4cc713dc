using Emunet.Engine.Diagnostics;
using Emunet.Engine.Stack.Nat;
using Emunet.Engine.Stack.Tcp;

namespace Emunet.Engine.Tests.Tcp;

/// <summary>Rings start small and grow under one engine-wide budget; memory goes back when they are released.</summary>
public class BufferBudgetTests
{
    [Fact]
    public void A_ring_starts_at_the_floor_and_doubles_while_the_budget_allows()
    {
        var budget = new BufferBudget(64 * 1024);
        var ring = new ByteRing(1 << 20, budget);
        Assert.Equal(0, ring.Allocated);
        var data = HostSide.Pattern(40_000);
        Assert.Equal(40_000, ring.Write(data));
        Assert.Equal(65536, ring.Allocated);          // 4 KiB doubled to cover 40,000 bytes
        Assert.Equal(65536, budget.Used);
        // The budget is spent: the ring keeps what it has and stores only what fits.
        Assert.Equal(65536 - 40_000, ring.Write(HostSide.Pattern(100_000)));
        Assert.True(budget.Refusals >= 1);
        Assert.Equal(0, ring.StorableFree);
        Assert.Equal(1 << 20, ring.Capacity);        // what a window may still promise
        var back = new byte[40_000];
        ring.CopyTo(0, back);
        Assert.Equal(data, back);
        ring.Release();
        Assert.Equal(0, budget.Used);
    }

    [Fact]
    public void Growth_keeps_wrapped_bytes_in_order()
    {
        var budget = new BufferBudget(1 << 20);
        var ring = new ByteRing(1 << 16, budget);
        ring.Write(HostSide.Pattern(4000, 1));
        ring.Consume(3000);                             // head near the end of the 4 KiB array
        ring.Write(HostSide.Pattern(3000, 2));          // wraps, then grows
        var expected = HostSide.Pattern(4000, 1)[3000..].Concat(HostSide.Pattern(3000, 2)).ToArray();
        var got = new byte[expected.Length];
        ring.CopyTo(0, got);
        Assert.Equal(expected, got);
    }

    [Fact]
    public void Growth_into_a_mapped_block_and_on_keeps_wrapped_bytes_in_order()
    {
        var budget = new BufferBudget(8 << 20);
        var ring = new ByteRing(1 << 20, budget);
        var expected = new List<byte>();
        var got = new List<byte>();
        // Writes and reads of odd sizes, so the head wraps at every size the ring passes: 4 KiB arrays to 1 MiB mapped.
        for (int i = 0; ring.Allocated < 1 << 20 || i < 40; i++)
        {
            var chunk = HostSide.Pattern(7_001 * (i % 9 + 1), i);
            int n = ring.Write(chunk);
            expected.AddRange(chunk.AsSpan(0, n).ToArray());
            int take = Math.Min(ring.Count, 5_003 * (i % 5 + 1));
            var back = new byte[take];
            ring.CopyTo(0, back);
            ring.Consume(take);
            got.AddRange(back);
            Assert.True(i < 10_000, "the ring never reached 1 MiB");
        }
        var rest = new byte[ring.Count];
        ring.CopyTo(0, rest);
        got.AddRange(rest);
        Assert.Equal(expected, got);
        Assert.Equal(1 << 20, ring.Allocated);
        ring.Release();
        Assert.Equal(0, budget.Used);
    }

    [Fact]
    public void A_mapped_ring_gives_its_pages_back_to_the_kernel_when_released()
    {
        // Rings above 64 KiB live in their own mapping: released, their pages leave the resident set at once, with no
        // collection (a managed array would stay until the next generation-2 collection, and its pages after it).
        // 8 MiB: below the budget's own trim (a drain from 16 MiB forces a collection).
        const int Size = 8 << 20;
        var budget = new BufferBudget(2L * Size);
        var ring = new ByteRing(Size, budget);
        var chunk = new byte[1 << 20];
        Array.Fill(chunk, (byte)0x5a);
        while (ring.Count < Size) Assert.Equal(chunk.Length, ring.Write(chunk));
        Assert.Equal(Size, ring.Allocated);
        long held = ResidentAnonymousBytes();
        ring.Release();
        long after = ResidentAnonymousBytes();
        Assert.True(held - after >= Size * 3L / 4, $"resident anonymous memory went from {held >> 20} to {after >> 20} MiB when a {Size >> 20} MiB ring was released");
        Assert.Equal(0, budget.Used);
        Assert.Equal(0, ring.Allocated);
        Assert.True(ring.ReadableSpan(0).IsEmpty);
    }

    /// <summary>RssAnon of this process (proc(5)).</summary>
    private static long ResidentAnonymousBytes()
    {
        foreach (var line in File.ReadLines("/proc/self/status"))
            if (line.StartsWith("RssAnon:", StringComparison.Ordinal))
                return long.Parse(line.Split(' ', StringSplitOptions.RemoveEmptyEntries)[1]) * 1024;
        throw new InvalidOperationException("no RssAnon in /proc/self/status");
    }

    [Fact]
    public void Every_ring_gets_its_floor_even_with_the_budget_spent()
    {
        var budget = new BufferBudget(BufferBudget.MinChunk);
        var a = new ByteRing(1 << 20, budget);
        var b = new ByteRing(1 << 20, budget);
        Assert.Equal(BufferBudget.MinChunk, a.Write(new byte[100_000]));
        Assert.Equal(BufferBudget.MinChunk, b.Write(new byte[100_000])); // no connection stalls for want of memory
        Assert.Equal(2 * BufferBudget.MinChunk, budget.Used);
    }

    [Fact]
    public async Task Host_data_flows_through_a_tiny_budget_by_back_pressure()
    {
        // A long transfer driven segment by segment: a loaded machine must not see spurious retransmissions here.
        using var h = new TcpHarness(t => t.MinRtoMs = 3000, bufferBudget: 64 * 1024);
        using var server = HostSide.Listen();
        var flow = h.Connect(HostSide.Port(server));
        using var host = HostSide.Accept(server);
        var data = HostSide.Pattern(2 << 20, 3);
        var sender = Task.Run(() => host.Send(data));
        Assert.Equal(data, h.Receive(flow, data.Length));
        await sender.WaitAsync(TcpHarness.Timeout);
        long peak = h.Invoke(_ => h.Flows.Budget.Used);
        Assert.True(peak <= h.Flows.Budget.Limit + 2 * BufferBudget.MinChunk, $"{peak} bytes held");
        Assert.Equal(0, h.Counters.Drops(DropReason.TcpBufferBudget));
    }
}

/// <summary>Many connections pushing into a guest that never reads: the buffers stay within the budget and go back.</summary>
public class BufferBudgetLoadTests
{
    [Fact]
    public void Two_hundred_stalled_connections_hold_no_more_than_the_budget_and_release_it()
    {
        const long budget = 8 << 20;
        using var h = new TcpHarness(bufferBudget: budget);
        using var server = HostSide.Listen(backlog: 256);
        var hosts = new List<System.Net.Sockets.Socket>();
        var chunk = HostSide.Pattern(256 * 1024, 5);
        try
        {
            for (int i = 0; i < 200; i++)
            {
                h.Connect(HostSide.Port(server), window: 0); // the guest app never reads: its window stays shut
                var host = HostSide.Accept(server);
                host.Blocking = false;
                hosts.Add(host);
            }
            h.Sender.Discard = true;
            // Each host peer pushes until its socket buffers fill (the engine stops reading when its ring is full).
            foreach (var host in hosts)
                for (int k = 0; k < 8; k++)
                    if (host.Send(chunk, 0, chunk.Length, System.Net.Sockets.SocketFlags.None, out var e) <= 0 || e != System.Net.Sockets.SocketError.Success) break;
            long used = 0;
            var deadline = DateTime.UtcNow.AddSeconds(10);
            while (DateTime.UtcNow < deadline)
            {
                used = h.Invoke(_ => h.Flows.Budget.Used);
                if (used >= budget) break;
                Thread.Sleep(20);
            }
            Assert.True(used >= budget / 2, $"only {used} bytes buffered: the test did not load the engine");
            Assert.True(used <= budget + 400 * BufferBudget.MinChunk, $"{used} bytes held against a budget of {budget}");
        }
        finally
        {
            foreach (var host in hosts) host.Dispose();
        }
        h.Invoke(t => t.OnGuestGone());
        Assert.Equal(0, h.Invoke(_ => h.Flows.Budget.Used));
    }
}
