using Emunet.Engine.Devices.Virtio;

namespace Emunet.Engine.Tests.Devices;

/// <summary>
/// The driver side of one split virtqueue, laid out in plain memory the way a guest kernel would (VIRTIO 1.2 §2.7):
/// descriptor table, available ring, used ring. Writes through <see cref="GuestMemory"/> like any other user of it.
/// </summary>
internal sealed class VirtioMockDriver
{
    public const ushort Next = 1, Write = 2, Indirect = 4;

    private readonly GuestMemory _memory;
    private ushort _nextDescriptor;
    private ushort _availIdx;

    public VirtioMockDriver(GuestMemory memory, ulong desc, ulong avail, ulong used, ushort size)
    {
        _memory = memory;
        Desc = new GuestAddress(desc);
        Avail = new GuestAddress(avail);
        Used = new GuestAddress(used);
        Size = size;
        for (ulong i = 0; i < 16ul * size; i += 8) memory.TryWriteUInt64(new GuestAddress(desc + i), 0);
        for (ulong i = 0; i < 6ul + 2ul * size; i += 2) memory.TryWriteUInt16(new GuestAddress(avail + i), 0);
        for (ulong i = 0; i < 6ul + 8ul * size; i += 2) memory.TryWriteUInt16(new GuestAddress(used + i), 0);
    }

    public GuestAddress Desc { get; }
    public GuestAddress Avail { get; }
    public GuestAddress Used { get; }
    public ushort Size { get; }

    public SplitQueue CreateQueue(bool indirect = true, ushort nextAvail = 0)
    {
        var q = SplitQueue.Create(_memory, Size, Desc, Avail, Used, nextAvail, indirect, out var error);
        Assert.Equal(VirtqError.None, error);
        return q!;
    }

    public static void WriteDescriptor(GuestMemory memory, GuestAddress table, int index, ulong addr, uint len, ushort flags, ushort next)
    {
        var at = table.Value + 16ul * (uint)index;
        Assert.True(memory.TryWriteUInt64(new GuestAddress(at), addr));
        Assert.True(memory.TryWriteUInt32(new GuestAddress(at + 8), len));
        Assert.True(memory.TryWriteUInt16(new GuestAddress(at + 12), flags));
        Assert.True(memory.TryWriteUInt16(new GuestAddress(at + 14), next));
    }

    public void SetDescriptor(int index, ulong addr, uint len, ushort flags, ushort next = 0) =>
        WriteDescriptor(_memory, Desc, index, addr, len, flags, next);

    /// <summary>Lays the buffers out as one chain in free descriptors and makes it available; returns its head.</summary>
    public ushort AddChain(params (ulong Addr, uint Len, bool Writable)[] buffers)
    {
        ushort head = _nextDescriptor;
        for (int i = 0; i < buffers.Length; i++)
        {
            ushort index = (ushort)((head + i) % Size);
            bool last = i == buffers.Length - 1;
            SetDescriptor(index, buffers[i].Addr, buffers[i].Len, (ushort)((last ? 0 : Next) | (buffers[i].Writable ? Write : 0)), (ushort)((index + 1) % Size));
        }
        _nextDescriptor = (ushort)((head + buffers.Length) % Size);
        Publish(head);
        return head;
    }

    /// <summary>Puts <paramref name="head"/> in the next available slot and bumps avail->idx.</summary>
    public void Publish(ushort head)
    {
        Assert.True(_memory.TryWriteUInt16(new GuestAddress(Avail.Value + 4 + 2ul * (uint)(_availIdx % Size)), head));
        _availIdx++;
        SetAvailIndex(_availIdx);
    }

    public void SetAvailIndex(ushort value)
    {
        _availIdx = value;
        Assert.True(_memory.TryWriteUInt16(new GuestAddress(Avail.Value + 2), value));
    }

    public void SetAvailFlags(ushort flags) => Assert.True(_memory.TryWriteUInt16(Avail, flags));

    public ushort UsedIndex
    {
        get
        {
            Assert.True(_memory.TryReadUInt16(new GuestAddress(Used.Value + 2), out ushort v));
            return v;
        }
    }

    public (uint Id, uint Length) UsedElement(int slot)
    {
        var at = Used.Value + 4 + 8ul * (uint)(slot % Size);
        Assert.True(_memory.TryReadUInt32(new GuestAddress(at), out uint id));
        Assert.True(_memory.TryReadUInt32(new GuestAddress(at + 4), out uint len));
        return (id, len);
    }

    public static List<Descriptor> Walk(ref DescriptorChain chain)
    {
        var list = new List<Descriptor>();
        while (chain.TryNext(out var d)) list.Add(d);
        return list;
    }
}
