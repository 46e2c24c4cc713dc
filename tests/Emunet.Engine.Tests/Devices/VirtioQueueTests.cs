using Emunet.Engine.Devices.Virtio;

namespace Emunet.Engine.Tests.Devices;

/// <summary>Guest memory range checks and the split virtqueue against a mock driver, well-behaved and hostile.</summary>
public sealed class VirtioQueueTests : IDisposable
{
    private const ulong Base = 0x10000;
    private const ulong MemSize = 1 << 20;
    private const ushort QueueSize = 8;
    private readonly GuestMemory _memory = GuestMemory.Anonymous([new GuestRegion(Base, MemSize, 0x7f0000000000, 0)]);
    private readonly VirtioMockDriver _driver;

    public VirtioQueueTests()
    {
        _driver = new VirtioMockDriver(_memory, Base + 0x1000, Base + 0x2000, Base + 0x3000, QueueSize);
    }

    public void Dispose() => _memory.Dispose();

    private static ulong Buf(int n) => Base + 0x10000 + (ulong)n * 0x1000;

    private ushort AvailEvent()
    {
        Assert.True(_memory.TryReadUInt16(new GuestAddress(_driver.Used.Value + 4 + 8ul * QueueSize), out ushort v));
        return v;
    }

    /// <summary>The driver's side of §2.7.10: after adding entries old..now-1, it kicks only if avail_event is among them.</summary>
    private bool DriverKicks(ushort old, ushort now) => SplitQueue.NeedEvent(AvailEvent(), now, old);

    [Fact]
    public void With_event_idx_an_entry_added_between_the_last_look_and_the_arming_is_taken_not_left_without_a_kick()
    {
        var q = SplitQueue.Create(_memory, QueueSize, _driver.Desc, _driver.Avail, _driver.Used, 0, true, out var error, eventIdx: true)!;
        Assert.Equal(VirtqError.None, error);
        Assert.True(q.ArmAvailEvent() is false);               // idle: kick me for entry 0
        _driver.AddChain((Buf(0), 64, false));                 // the guest's data segment
        Assert.True(DriverKicks(0, 1));
        Assert.True(q.TryPop(out _, out _));
        Assert.False(q.TryPop(out _, out error));              // the device looked: nothing more (avail->idx 1)
        Assert.Equal(VirtqError.None, error);
        _driver.AddChain((Buf(1), 64, false));                 // the FIN, added before the device re-arms
        Assert.False(DriverKicks(1, 2));                       // avail_event still says 0: the driver does not kick
        Assert.True(q.ArmAvailEvent());                        // so the device must find it itself
        Assert.True(q.TryPop(out var fin, out _));
        Assert.Equal(1, fin.Head);
        Assert.False(q.TryPop(out _, out _));
        Assert.False(q.ArmAvailEvent());                       // now nothing is left: kick me for entry 2
        Assert.Equal(2, AvailEvent());
        _driver.AddChain((Buf(2), 64, false));
        Assert.True(DriverKicks(2, 3));
    }

    [Fact]
    public void With_event_idx_a_frame_waiting_for_more_buffers_asks_for_the_next_one_and_takes_buffers_added_meanwhile()
    {
        var q = SplitQueue.Create(_memory, QueueSize, _driver.Desc, _driver.Avail, _driver.Used, 0, true, out _, eventIdx: true)!;
        _driver.AddChain((Buf(0), 4096, true));                // one buffer; the frame needs two
        Assert.True(q.TryPop(out _, out _));
        Assert.False(q.TryPop(out _, out _));                  // not enough: the device rolls back and waits
        q.NextAvail = 0;
        Assert.False(q.ArmAvailEvent());                       // kick me when the buffer after the one I saw comes
        Assert.Equal(1, AvailEvent());
        _driver.AddChain((Buf(1), 4096, true));
        Assert.True(DriverKicks(1, 2));
        // And when it came between the look and the arming, the device goes on at once.
        Assert.True(q.TryPop(out _, out _));
        Assert.True(q.TryPop(out _, out _));
        Assert.False(q.TryPop(out _, out _));
        q.NextAvail = 0;                                       // say three were needed
        _driver.AddChain((Buf(2), 4096, true));
        Assert.True(q.ArmAvailEvent());
    }

    [Fact]
    public void Guest_memory_refuses_ranges_outside_or_across_regions_and_wrapping_addresses()
    {
        using var two = GuestMemory.Anonymous([new GuestRegion(0, 0x1000, 0x1000, 0), new GuestRegion(0x1000, 0x1000, 0x9000, 0)]);
        Assert.True(two.IsValid(new GuestAddress(0xffc), 4));
        Assert.False(two.IsValid(new GuestAddress(0xffe), 4)); // across the boundary of two regions: not one mapping
        Assert.True(two.IsValid(new GuestAddress(0x1000), 0x1000));
        Assert.False(two.IsValid(new GuestAddress(0x1001), 0x1000));
        Assert.False(two.IsValid(new GuestAddress(0x2000), 1));
        Assert.False(two.IsValid(new GuestAddress(ulong.MaxValue - 1), 4)); // would wrap
        Assert.False(two.IsValid(new GuestAddress(0x800), ulong.MaxValue));
        Assert.False(two.TryReadUInt32(new GuestAddress(0x1ffe), out _));
        Assert.False(two.TryWrite(new GuestAddress(0x1ff0), new byte[32]));
        Assert.True(two.TryWriteUInt32(new GuestAddress(0x1ffc), 0xdeadbeef));
        Assert.True(two.TryReadUInt32(new GuestAddress(0x1ffc), out uint v));
        Assert.Equal(0xdeadbeefu, v);
        Assert.True(two.TryTranslateFrontEnd(0x9010, out var g));
        Assert.Equal(0x1010ul, g.Value);
        Assert.False(two.TryTranslateFrontEnd(0xa000, out _));
        Assert.False(new GuestAddress(ulong.MaxValue).TryAdd(1, out _));
    }

    [Fact]
    public void Queue_layout_is_checked_against_the_spec_and_memory()
    {
        var ok = SplitQueue.Create(_memory, 8, _driver.Desc, _driver.Avail, _driver.Used, 0, true, out var error);
        Assert.NotNull(ok);
        Assert.Null(SplitQueue.Create(_memory, 6, _driver.Desc, _driver.Avail, _driver.Used, 0, true, out error)); // §2.7 power of 2
        Assert.Equal(VirtqError.IndexOutOfRange, error);
        Assert.Null(SplitQueue.Create(_memory, 65536, _driver.Desc, _driver.Avail, _driver.Used, 0, true, out _));
        Assert.Null(SplitQueue.Create(_memory, 8, new GuestAddress(_driver.Desc.Value + 8), _driver.Avail, _driver.Used, 0, true, out error)); // 16-aligned
        Assert.Equal(VirtqError.RingOutOfRange, error);
        Assert.Null(SplitQueue.Create(_memory, 8, _driver.Desc, _driver.Avail, new GuestAddress(_driver.Used.Value + 2), 0, true, out _)); // 4-aligned
        Assert.Null(SplitQueue.Create(_memory, 8, _driver.Desc, _driver.Avail, new GuestAddress(Base + MemSize - 16), 0, true, out error));
        Assert.Equal(VirtqError.RingOutOfRange, error);
        Assert.Null(SplitQueue.Create(_memory, 8, new GuestAddress(0), _driver.Avail, _driver.Used, 0, true, out _));
    }

    [Fact]
    public void Chains_are_taken_in_order_walked_and_returned_through_the_used_ring()
    {
        var q = _driver.CreateQueue();
        Assert.False(q.TryPop(out _, out var error));
        Assert.Equal(VirtqError.None, error);

        ushort a = _driver.AddChain((Buf(0), 12, false), (Buf(1), 100, false));
        ushort b = _driver.AddChain((Buf(2), 2048, true));
        Assert.Equal(2, q.AvailableCount());

        Assert.True(q.TryPop(out var chain, out _));
        Assert.Equal(a, chain.Head);
        var list = VirtioMockDriver.Walk(ref chain);
        Assert.Equal(VirtqError.None, chain.Error);
        Assert.Equal([new Descriptor(new GuestAddress(Buf(0)), 12, false), new Descriptor(new GuestAddress(Buf(1)), 100, false)], list);
        Assert.Equal(112u, chain.TotalLength);

        Assert.True(q.TryPop(out chain, out _));
        Assert.Equal(b, chain.Head);
        Assert.Equal([new Descriptor(new GuestAddress(Buf(2)), 2048, true)], VirtioMockDriver.Walk(ref chain));
        Assert.False(q.TryPop(out _, out _));

        q.AddUsed(a, 0);
        q.AddUsed(b, 1500);
        Assert.Equal(0, _driver.UsedIndex); // not visible before PublishUsed
        q.PublishUsed();
        Assert.Equal(2, _driver.UsedIndex);
        Assert.Equal((a, 0u), _driver.UsedElement(0));
        Assert.Equal((b, 1500u), _driver.UsedElement(1));
    }

    [Fact]
    public void Indexes_wrap_at_65536_like_the_driver_s()
    {
        _driver.SetAvailIndex(65534);
        var q = _driver.CreateQueue(nextAvail: 65534);
        for (int i = 0; i < 4; i++) _driver.AddChain((Buf(i), 64, true));
        for (int i = 0; i < 4; i++)
        {
            Assert.True(q.TryPop(out var chain, out _));
            Assert.Equal(Buf(i), VirtioMockDriver.Walk(ref chain)[0].Address.Value);
        }
        Assert.Equal((ushort)2, q.NextAvail);
        Assert.False(q.TryPop(out _, out _));
    }

    [Fact]
    public void Interrupt_suppression_flag_is_respected()
    {
        var q = _driver.CreateQueue();
        Assert.True(q.NeedsInterrupt());
        _driver.SetAvailFlags(SplitQueue.AvailFlagNoInterrupt);
        Assert.False(q.NeedsInterrupt());
    }

    [Fact]
    public void A_descriptor_loop_ends_the_walk_within_the_queue_size()
    {
        var q = _driver.CreateQueue();
        _driver.SetDescriptor(0, Buf(0), 10, VirtioMockDriver.Next, 1);
        _driver.SetDescriptor(1, Buf(1), 10, VirtioMockDriver.Next, 0);
        _driver.Publish(0);
        Assert.True(q.TryPop(out var chain, out _));
        var list = VirtioMockDriver.Walk(ref chain);
        Assert.Equal(VirtqError.ChainLoop, chain.Error);
        Assert.Equal(QueueSize, list.Count);
        Assert.False(chain.TryNext(out _)); // stays ended
    }

    [Fact]
    public void Out_of_range_indexes_are_refused()
    {
        var q = _driver.CreateQueue();
        _driver.SetDescriptor(0, Buf(0), 10, VirtioMockDriver.Next, QueueSize); // next == size
        _driver.Publish(0);
        Assert.True(q.TryPop(out var chain, out _));
        VirtioMockDriver.Walk(ref chain);
        Assert.Equal(VirtqError.IndexOutOfRange, chain.Error);

        _driver.Publish(QueueSize); // head == size
        Assert.False(q.TryPop(out _, out var error));
        Assert.Equal(VirtqError.IndexOutOfRange, error);

        var fresh = new VirtioMockDriver(_memory, Base + 0x5000, Base + 0x6000, Base + 0x7000, QueueSize);
        var q2 = fresh.CreateQueue();
        fresh.SetAvailIndex(QueueSize + 1); // the driver claims more entries than the ring holds
        Assert.False(q2.TryPop(out _, out error));
        Assert.Equal(VirtqError.AvailIndexJump, error);
        Assert.Equal(0, q2.AvailableCount());
    }

    [Fact]
    public void Buffers_outside_guest_memory_are_refused()
    {
        var q = _driver.CreateQueue();
        _driver.AddChain((Base + MemSize - 8, 16, true)); // runs past the end
        _driver.AddChain((ulong.MaxValue - 4, 16, false)); // wraps
        _driver.AddChain((0x100, 16, false)); // below the region
        for (int i = 0; i < 3; i++)
        {
            Assert.True(q.TryPop(out var chain, out _));
            Assert.Empty(VirtioMockDriver.Walk(ref chain));
            Assert.Equal(VirtqError.BufferOutOfRange, chain.Error);
        }
    }

    [Fact]
    public void Chain_lengths_past_4_GiB_are_refused()
    {
        const ulong big = 3ul << 30;
        using var memory = GuestMemory.Anonymous([new GuestRegion(0, big, 0, 0)]);
        var driver = new VirtioMockDriver(memory, 0x1000, 0x2000, 0x3000, QueueSize);
        var q = driver.CreateQueue();
        driver.AddChain((0x10000, 0xBFF00000, false), (0x10000, 0x50000000, false)); // each in memory, over 4 GiB together
        Assert.True(q.TryPop(out var chain, out _));
        Assert.Single(VirtioMockDriver.Walk(ref chain));
        Assert.Equal(VirtqError.LengthOverflow, chain.Error);
    }

    [Fact]
    public void Indirect_tables_are_followed_once_and_nesting_and_misuse_refused()
    {
        var table = new GuestAddress(Buf(10));
        VirtioMockDriver.WriteDescriptor(_memory, table, 0, Buf(0), 12, VirtioMockDriver.Next, 1);
        VirtioMockDriver.WriteDescriptor(_memory, table, 1, Buf(1), 1500, 0, 0);
        var q = _driver.CreateQueue();
        _driver.SetDescriptor(0, table.Value, 32, VirtioMockDriver.Indirect);
        _driver.Publish(0);
        Assert.True(q.TryPop(out var chain, out _));
        Assert.Equal([new Descriptor(new GuestAddress(Buf(0)), 12, false), new Descriptor(new GuestAddress(Buf(1)), 1500, false)], VirtioMockDriver.Walk(ref chain));
        Assert.Equal(VirtqError.None, chain.Error);

        // Nested: the indirect table points at another indirect table.
        VirtioMockDriver.WriteDescriptor(_memory, table, 1, table.Value, 32, VirtioMockDriver.Indirect, 0);
        _driver.Publish(0);
        Assert.True(q.TryPop(out chain, out _));
        Assert.Single(VirtioMockDriver.Walk(ref chain));
        Assert.Equal(VirtqError.NestedIndirect, chain.Error);

        // A loop inside the indirect table ends within its size.
        VirtioMockDriver.WriteDescriptor(_memory, table, 1, Buf(1), 10, VirtioMockDriver.Next, 0);
        _driver.Publish(0);
        Assert.True(q.TryPop(out chain, out _));
        Assert.Equal(2, VirtioMockDriver.Walk(ref chain).Count);
        Assert.Equal(VirtqError.ChainLoop, chain.Error);

        _driver.SetDescriptor(1, table.Value, 32, VirtioMockDriver.Indirect | VirtioMockDriver.Next, 2);
        _driver.SetDescriptor(2, table.Value, 24, VirtioMockDriver.Indirect);
        _driver.SetDescriptor(3, Base + MemSize - 16, 32, VirtioMockDriver.Indirect);
        _driver.Publish(1);
        _driver.Publish(2);
        _driver.Publish(3);
        VirtqError[] expected = [VirtqError.IndirectWithNext, VirtqError.IndirectBadLength, VirtqError.RingOutOfRange];
        foreach (var e in expected)
        {
            Assert.True(q.TryPop(out chain, out _));
            Assert.Empty(VirtioMockDriver.Walk(ref chain));
            Assert.Equal(e, chain.Error);
        }

        var plain = _driver.CreateQueue(indirect: false, nextAvail: q.NextAvail);
        _driver.Publish(0);
        Assert.True(plain.TryPop(out chain, out _));
        Assert.Empty(VirtioMockDriver.Walk(ref chain));
        Assert.Equal(VirtqError.IndirectNotNegotiated, chain.Error);
    }

    [Fact]
    public void A_readable_buffer_after_a_writable_one_is_refused()
    {
        var q = _driver.CreateQueue();
        _driver.AddChain((Buf(0), 10, true), (Buf(1), 10, false));
        Assert.True(q.TryPop(out var chain, out _));
        Assert.Single(VirtioMockDriver.Walk(ref chain));
        Assert.Equal(VirtqError.ReadableAfterWritable, chain.Error);
    }
}
