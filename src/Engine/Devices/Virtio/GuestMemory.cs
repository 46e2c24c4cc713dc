using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using Emunet.Engine.Interop;

namespace Emunet.Engine.Devices.Virtio;

/// <summary>An address in the guest's physical address space (what descriptors and ring addresses hold).</summary>
internal readonly record struct GuestAddress(ulong Value)
{
    /// <summary>This address plus <paramref name="offset"/>; false when the sum wraps.</summary>
    public bool TryAdd(ulong offset, out GuestAddress result)
    {
        ulong sum = Value + offset;
        result = new GuestAddress(sum);
        return sum >= Value;
    }

    public override string ToString() => $"0x{Value:x}";
}

/// <summary>One region of guest memory as the front-end describes it (vhost-user VhostUserMemoryRegion).</summary>
internal readonly record struct GuestRegion(ulong GuestPhysicalAddress, ulong Size, ulong FrontEndAddress, ulong MmapOffset);

/// <summary>
/// Theory of operation: the guest's RAM as the back-end sees it, a few regions mapped from the file descriptors the
/// front-end passed (vhost-user SET_MEM_TABLE: mmap the whole fd from 0 and use it from <c>mmap_offset</c>). Every
/// access names a <see cref="GuestAddress"/> and a length and is checked to lie wholly inside one region, so a guest
/// value can never make the engine read or write outside the mapping. This is the only type in the device that
/// touches raw pointers. Ring fields are read and written with volatile semantics (the guest changes them
/// concurrently); frame bytes are plain copies. Owner thread only.
/// </summary>
internal sealed unsafe class GuestMemory : IDisposable
{
    /// <summary>At most this many regions (VHOST_MEMORY_BASELINE_NREGIONS, the vhost-user limit without mem slots).</summary>
    public const int MaxRegions = LibcVhost.MaxFds;

    private readonly Mapped[] _regions;
    private readonly bool _owned;
    private int _last;

    private readonly struct Mapped(GuestRegion region, byte* host, nint mapBase, nint mapLength)
    {
        public readonly GuestRegion Region = region;
        public readonly byte* Host = host;       // guest_phys_addr maps here
        public readonly nint MapBase = mapBase;
        public readonly nint MapLength = mapLength;
    }

    private GuestMemory(Mapped[] regions, bool owned)
    {
        _regions = regions;
        _owned = owned;
    }

    public int RegionCount => _regions.Length;

    public GuestRegion this[int index] => _regions[index].Region;

    /// <summary>
    /// Maps <paramref name="regions"/> from <paramref name="fds"/> (one each, read-write, shared). Does not close the fds.
    /// Returns null with <paramref name="error"/> set when a region is malformed or a mapping fails; nothing stays mapped then.
    /// </summary>
    public static GuestMemory? Map(ReadOnlySpan<GuestRegion> regions, ReadOnlySpan<int> fds, out string? error)
    {
        error = null;
        if (regions.Length > MaxRegions || regions.Length != fds.Length)
        {
            error = $"{regions.Length} regions with {fds.Length} descriptors";
            return null;
        }
        var mapped = new Mapped[regions.Length];
        int done = 0;
        for (; done < regions.Length; done++)
        {
            var r = regions[done];
            // Reject sizes the process could not map and ranges that wrap either address space.
            ulong total = r.Size + r.MmapOffset;
            if (r.Size == 0 || total < r.Size || total > (ulong)long.MaxValue || r.GuestPhysicalAddress + r.Size < r.GuestPhysicalAddress
                || r.FrontEndAddress + r.Size < r.FrontEndAddress)
            {
                error = $"region {done} is malformed (size 0x{r.Size:x}, offset 0x{r.MmapOffset:x})";
                break;
            }
            // Touching a shared mapping past the end of its file raises SIGBUS: the file must cover the whole region.
            // (A front-end that shrinks the file later can still do that; QEMU does not, and it is trusted that far.)
            if (!LibcVhost.TryGetRegularFileSize(fds[done], out long fileSize) || (ulong)fileSize < total)
            {
                error = $"region {done} needs 0x{total:x} bytes but its descriptor is not a file that large";
                break;
            }
            nint p = LibcVhost.mmap(0, (nint)total, LibcVhost.PROT_READ | LibcVhost.PROT_WRITE, LibcVhost.MAP_SHARED, fds[done], 0);
            if (p == LibcVhost.MapFailed)
            {
                error = $"mmap of region {done} (0x{total:x} bytes) failed: errno {Marshal.GetLastPInvokeError()}";
                break;
            }
            mapped[done] = new Mapped(r, (byte*)p + (nint)r.MmapOffset, p, (nint)total);
        }
        if (error is null)
        {
            for (int i = 0; i < mapped.Length; i++)
                for (int j = i + 1; j < mapped.Length; j++)
                    if (Overlaps(mapped[i].Region, mapped[j].Region)) error ??= $"regions {i} and {j} overlap";
            if (error is null) return new GuestMemory(mapped, owned: true);
        }
        for (int i = 0; i < done; i++) LibcVhost.munmap(mapped[i].MapBase, mapped[i].MapLength);
        return null;
    }

    /// <summary>Anonymous private memory laid out as <paramref name="regions"/> (tests and mock drivers).</summary>
    public static GuestMemory Anonymous(ReadOnlySpan<GuestRegion> regions)
    {
        var mapped = new Mapped[regions.Length];
        for (int i = 0; i < regions.Length; i++)
        {
            var r = regions[i];
            nint p = LibcVhost.mmap(0, (nint)r.Size, LibcVhost.PROT_READ | LibcVhost.PROT_WRITE, LibcVhost.MAP_PRIVATE | LibcVhost.MAP_ANONYMOUS | LibcVhost.MAP_NORESERVE, -1, 0);
            if (p == LibcVhost.MapFailed) throw new InvalidOperationException($"mmap failed: errno {Marshal.GetLastPInvokeError()}");
            mapped[i] = new Mapped(r with { MmapOffset = 0 }, (byte*)p, p, (nint)r.Size);
        }
        return new GuestMemory(mapped, owned: true);
    }

    private static bool Overlaps(GuestRegion a, GuestRegion b) =>
        a.GuestPhysicalAddress < b.GuestPhysicalAddress + b.Size && b.GuestPhysicalAddress < a.GuestPhysicalAddress + a.Size;

    /// <summary>
    /// Translates an address in the front-end's own address space (vring addresses in SET_VRING_ADDR) to a guest address.
    /// </summary>
    public bool TryTranslateFrontEnd(ulong frontEndAddress, out GuestAddress address)
    {
        foreach (var m in _regions)
        {
            var r = m.Region;
            if (frontEndAddress >= r.FrontEndAddress && frontEndAddress - r.FrontEndAddress < r.Size)
            {
                address = new GuestAddress(r.GuestPhysicalAddress + (frontEndAddress - r.FrontEndAddress));
                return true;
            }
        }
        address = default;
        return false;
    }

    /// <summary>The host pointer for [address, address+length) when the range lies wholly inside one region; null otherwise.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private byte* Resolve(GuestAddress address, ulong length)
    {
        ulong a = address.Value;
        var regions = _regions;
        int last = _last;
        if ((uint)last < (uint)regions.Length)
        {
            ref readonly var m = ref regions[last];
            ulong off = a - m.Region.GuestPhysicalAddress;
            if (a >= m.Region.GuestPhysicalAddress && off <= m.Region.Size && length <= m.Region.Size - off) return m.Host + off;
        }
        for (int i = 0; i < regions.Length; i++)
        {
            ref readonly var m = ref regions[i];
            ulong off = a - m.Region.GuestPhysicalAddress;
            // off <= Size and length <= Size - off: no addition, so nothing can wrap.
            if (a >= m.Region.GuestPhysicalAddress && off <= m.Region.Size && length <= m.Region.Size - off)
            {
                _last = i;
                return m.Host + off;
            }
        }
        return null;
    }

    /// <summary>True when [address, address+length) lies inside one region.</summary>
    public bool IsValid(GuestAddress address, ulong length) => Resolve(address, length) != null;

    /// <summary>
    /// Borrows guest memory [address, address+length) as a span (valid until the memory table changes). False when the
    /// range is not wholly inside one region.
    /// </summary>
    public bool TryGetSpan(GuestAddress address, uint length, out Span<byte> span)
    {
        byte* p = Resolve(address, length);
        if (p == null || length > int.MaxValue)
        {
            span = default;
            return false;
        }
        span = new Span<byte>(p, (int)length);
        return true;
    }

    public bool TryRead(GuestAddress address, Span<byte> destination)
    {
        byte* p = Resolve(address, (ulong)destination.Length);
        if (p == null) return false;
        new ReadOnlySpan<byte>(p, destination.Length).CopyTo(destination);
        return true;
    }

    public bool TryWrite(GuestAddress address, ReadOnlySpan<byte> source)
    {
        byte* p = Resolve(address, (ulong)source.Length);
        if (p == null) return false;
        source.CopyTo(new Span<byte>(p, source.Length));
        return true;
    }

    // Ring fields are little-endian (VIRTIO 1.2 §2.7: le16/le32/le64); the engine runs on little-endian hosts only.
    public bool TryReadUInt16(GuestAddress address, out ushort value)
    {
        byte* p = Resolve(address, 2);
        if (p == null) { value = 0; return false; }
        value = Volatile.Read(ref *(ushort*)p);
        return true;
    }

    public bool TryReadUInt32(GuestAddress address, out uint value)
    {
        byte* p = Resolve(address, 4);
        if (p == null) { value = 0; return false; }
        value = Volatile.Read(ref *(uint*)p);
        return true;
    }

    public bool TryReadUInt64(GuestAddress address, out ulong value)
    {
        byte* p = Resolve(address, 8);
        if (p == null) { value = 0; return false; }
        value = Unsafe.ReadUnaligned<ulong>(p);
        return true;
    }

    public bool TryWriteUInt16(GuestAddress address, ushort value)
    {
        byte* p = Resolve(address, 2);
        if (p == null) return false;
        Volatile.Write(ref *(ushort*)p, value);
        return true;
    }

    public bool TryWriteUInt32(GuestAddress address, uint value)
    {
        byte* p = Resolve(address, 4);
        if (p == null) return false;
        Volatile.Write(ref *(uint*)p, value);
        return true;
    }

    public bool TryWriteUInt64(GuestAddress address, ulong value)
    {
        byte* p = Resolve(address, 8);
        if (p == null) return false;
        Unsafe.WriteUnaligned(p, value);
        return true;
    }

    public void Dispose()
    {
        if (!_owned) return;
        for (int i = 0; i < _regions.Length; i++)
        {
            if (_regions[i].MapBase != 0) LibcVhost.munmap(_regions[i].MapBase, _regions[i].MapLength);
            _regions[i] = default;
        }
    }
}
