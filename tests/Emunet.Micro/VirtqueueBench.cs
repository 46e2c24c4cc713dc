using BenchmarkDotNet.Attributes;
using Emunet.Engine.Devices.Virtio;

namespace Emunet.Micro;

/// <summary>
/// A split virtqueue's device side (VIRTIO 1.2 §2.7) over anonymous memory: the benchmark plays the driver (one
/// available entry per operation, descriptors laid out once) and measures what the device does per buffer: pop the
/// chain, walk its descriptors, add the used element and publish used->idx.
/// </summary>
[MemoryDiagnoser]
public class VirtqueueBench
{
    private const ushort QueueSize = 256;
    private const ulong Desc = 0x1000, Avail = 0x3000, Used = 0x4000, Buffers = 0x10000;
    private GuestMemory _memory = null!;
    private SplitQueue _queue = null!;
    private ushort _availIdx;

    /// <summary>Descriptors per chain: 1 (a mergeable receive buffer), 2 (header + frame, as Linux transmits).</summary>
    [Params(1, 2)]
    public int ChainLength { get; set; }

    [GlobalSetup]
    public void Setup()
    {
        _memory = GuestMemory.Anonymous([new GuestRegion(0, 16 << 20, 0, 0)]);
        // Every head i owns descriptors i*ChainLength..: fixed chains, so the benchmark only moves ring indexes.
        int chains = QueueSize / ChainLength;
        for (int c = 0; c < chains; c++)
            for (int d = 0; d < ChainLength; d++)
            {
                int index = c * ChainLength + d;
                ulong at = Desc + 16ul * (uint)index;
                bool last = d == ChainLength - 1;
                _memory.TryWriteUInt64(new GuestAddress(at), Buffers + 2048ul * (uint)index);
                _memory.TryWriteUInt32(new GuestAddress(at + 8), d == 0 && ChainLength > 1 ? 12u : 1514u);
                _memory.TryWriteUInt16(new GuestAddress(at + 12), (ushort)(last ? 0 : 1)); // VIRTQ_DESC_F_NEXT
                _memory.TryWriteUInt16(new GuestAddress(at + 14), (ushort)(last ? 0 : index + 1));
            }
        _queue = SplitQueue.Create(_memory, QueueSize, new GuestAddress(Desc), new GuestAddress(Avail), new GuestAddress(Used), 0, true, out var error)
            ?? throw new InvalidOperationException($"queue layout refused: {error}");
    }

    [GlobalCleanup]
    public void Cleanup() => _memory.Dispose();

    /// <summary>Driver makes one chain available; device pops it, walks it, returns it used and publishes.</summary>
    [Benchmark]
    public uint PopWalkPush()
    {
        int chains = QueueSize / ChainLength;
        ushort head = (ushort)(_availIdx % chains * ChainLength);
        _memory.TryWriteUInt16(new GuestAddress(Avail + 4 + 2ul * (uint)(_availIdx & (QueueSize - 1))), head);
        _memory.TryWriteUInt16(new GuestAddress(Avail + 2), ++_availIdx);

        if (!_queue.TryPop(out var chain, out _)) return 0;
        uint total = 0;
        while (chain.TryNext(out var d)) total += d.Length;
        _queue.AddUsed(head, total);
        _queue.PublishUsed();
        return total;
    }
}
