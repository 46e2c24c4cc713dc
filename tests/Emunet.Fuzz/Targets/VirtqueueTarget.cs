using System.Buffers.Binary;
using Emunet.Engine.Devices.Virtio;
using Emunet.Engine.Interop;

namespace Emunet.Fuzz.Targets;

/// <summary>
/// The <c>virtqueue</c> target: the split-queue chain walk over guest memory the input lays out. Guest memory is a
/// memfd mapped as two regions, as a vhost-user front-end shares it: <see cref="Low"/> (the rings and buffers) and
/// a small <see cref="High"/> region past a hole. Input:
/// <code>
/// [size: 1]         queue size 2^(n % 9)
/// [flags: 1]        bit 0: INDIRECT_DESC negotiated; bit 1: ring addresses follow instead of the defaults
/// [next avail: 2]   the vring base, little-endian
/// ([desc: 8][avail: 8][used: 8] when flags bit 1, little-endian)
/// [descriptor table: 16 * size] at <see cref="DescTable"/>, then [available ring: 4 + 2 * size] at <see cref="AvailRing"/>,
/// then the rest at <see cref="Buffers"/> (buffers and indirect tables)
/// </code>
/// Every chain is popped and walked to its end; each buffer it yields must lie in guest memory.
/// </summary>
internal static class VirtqueueTarget
{
    public const ulong Low = 0, LowSize = 0x10000;
    public const ulong High = 0x20000, HighSize = 0x1000;
    public const ulong DescTable = 0x1000, AvailRing = 0x2000, UsedRing = 0x3000, Buffers = 0x4000;
    public const byte FlagIndirect = 1, FlagAddresses = 2;

    public static void Run(ReadOnlySpan<byte> input)
    {
        if (input.Length < 4) return;
        uint size = 1u << (input[0] % 9);
        byte flags = input[1];
        ushort nextAvail = BinaryPrimitives.ReadUInt16LittleEndian(input[2..]);
        input = input[4..];
        ulong desc = DescTable, avail = AvailRing, used = UsedRing;
        if ((flags & FlagAddresses) != 0)
        {
            if (input.Length < 24) return;
            desc = BinaryPrimitives.ReadUInt64LittleEndian(input);
            avail = BinaryPrimitives.ReadUInt64LittleEndian(input[8..]);
            used = BinaryPrimitives.ReadUInt64LittleEndian(input[16..]);
            input = input[24..];
        }

        int memfd = LibcVhost.memfd_create("emunet-fuzz", LibcVhost.MFD_CLOEXEC);
        if (memfd < 0 || LibcVhost.ftruncate(memfd, (long)(LowSize + HighSize)) != 0)
            throw new InvalidOperationException("memfd for guest memory failed");
        try
        {
            using var memory = GuestMemory.Map(
                [new GuestRegion(Low, LowSize, 0x7f0000000000, 0), new GuestRegion(High, HighSize, 0x7f0000100000, LowSize)],
                [memfd, memfd], out string? error) ?? throw new InvalidOperationException($"guest memory: {error}");
            Place(memory, DescTable, ref input, 16 * (int)size);
            Place(memory, AvailRing, ref input, 4 + 2 * (int)size);
            Place(memory, Buffers, ref input, (int)(LowSize - Buffers));
            var queue = SplitQueue.Create(memory, size, new GuestAddress(desc), new GuestAddress(avail), new GuestAddress(used),
                nextAvail, (flags & FlagIndirect) != 0, out _);
            if (queue is not null) Drain(memory, queue);
        }
        finally
        {
            Libc.close(memfd);
        }
    }

    private static void Place(GuestMemory memory, ulong at, ref ReadOnlySpan<byte> input, int length)
    {
        var part = input[..Math.Min(length, input.Length)];
        if (!memory.TryWrite(new GuestAddress(at), part)) throw new InvalidOperationException("the layout does not fit guest memory");
        input = input[part.Length..];
    }

    /// <summary>Pops every available chain and walks it as the device's receive and transmit paths do.</summary>
    private static void Drain(GuestMemory memory, SplitQueue queue)
    {
        // §2.7.6: at most Size chains are outstanding, and each pop takes one.
        for (int pops = 0; pops <= queue.Size; pops++)
        {
            if (!queue.TryPop(out var chain, out var error)) return;
            if (error != VirtqError.None) throw new FuzzInvariantException($"TryPop returned a chain with error {error}.");
            ulong total = 0;
            uint written = 0;
            long steps = 0;
            while (chain.TryNext(out var d))
            {
                // The budget: one table of Size plus one indirect table.
                if (++steps > queue.Size + DescriptorChain.MaxIndirectCount) throw new FuzzInvariantException("A chain walk did not end.");
                if (!memory.TryGetSpan(d.Address, d.Length, out var buffer))
                    throw new FuzzInvariantException($"The chain yielded {d.Length} bytes at {d.Address}, outside guest memory.");
                total += d.Length;
                if (d.Writable)
                {
                    buffer[..Math.Min(buffer.Length, 64)].Fill(0xa5);
                    written += d.Length;
                }
                else if (!buffer.IsEmpty) _ = buffer[0] ^ buffer[^1];
            }
            if (chain.Error == VirtqError.None && total != chain.TotalLength)
                throw new FuzzInvariantException($"The chain reports {chain.TotalLength} bytes, its buffers hold {total}.");
            queue.AddUsed(chain.Head, written);
        }
        queue.PublishUsed();
        queue.NeedsInterrupt();
        queue.AvailableCount();
    }
}
