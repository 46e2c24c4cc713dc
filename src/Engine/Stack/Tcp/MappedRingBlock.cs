using Emunet.Engine.Interop;

namespace Emunet.Engine.Stack.Tcp;

/// <summary>
/// A ring's memory above <see cref="RingArrayPool.MaxPooledSize"/>: a private anonymous mapping of its own, unmapped
/// the moment the ring lets it go (a growth, a closed connection). A bulk connection's 1 MiB ring then stays in the
/// resident set only while a connection holds it: a managed array of that size sits on the large-object heap until a
/// generation-2 collection, and its pages stay committed after that (measured: the stream link's peak resident set
/// under the benchmark held about twice the bytes its rings had at once). Pages are touched, and so resident, only as
/// data reaches them. A block never given back is unmapped by its finalizer. Owner thread only.
/// </summary>
internal sealed unsafe class MappedRingBlock
{
    private nint _address;

    private MappedRingBlock(nint address, int length)
    {
        _address = address;
        Length = length;
    }

    /// <summary>Bytes mapped.</summary>
    public int Length { get; }

    /// <summary>The mapping; empty once unmapped.</summary>
    public Span<byte> Span => _address == 0 ? Span<byte>.Empty : new Span<byte>((void*)_address, Length);

    /// <summary>Maps <paramref name="length"/> bytes, or returns null when the kernel refuses (the ring then does not grow).</summary>
    public static MappedRingBlock? TryMap(int length)
    {
        nint address = LibcVhost.mmap(0, length, LibcVhost.PROT_READ | LibcVhost.PROT_WRITE, LibcVhost.MAP_PRIVATE | LibcVhost.MAP_ANONYMOUS, -1, 0);
        return address == LibcVhost.MapFailed || address == 0 ? null : new MappedRingBlock(address, length);
    }

    /// <summary>Unmaps the block: its pages go back to the kernel at once. Idempotent.</summary>
    public void Unmap()
    {
        nint address = _address;
        if (address == 0) return;
        _address = 0;
        LibcVhost.munmap(address, Length);
        GC.SuppressFinalize(this);
    }

    ~MappedRingBlock()
    {
        if (_address != 0) LibcVhost.munmap(_address, Length);
    }
}
