using System.Buffers.Binary;
using Emunet.Engine.Devices.Virtio;
using Emunet.Engine.Diagnostics;
using Emunet.Engine.Runtime;
using Microsoft.Extensions.Logging;

namespace Emunet.Engine.Devices.VhostUser;

/// <summary>
/// Theory of operation: the vhost-user session with one front-end (QEMU docs/interop/vhost-user.rst). Requests come
/// whole, with their file descriptors, from the <see cref="VhostUserChannel"/>: the guest's RAM for SET_MEM_TABLE
/// (mapped by <see cref="GuestMemory"/>), an eventfd for SET_VRING_KICK/CALL/ERR. The session answers the GET_*
/// requests, applies the SET_* ones to the negotiated features, the memory map and the two <see cref="Vring"/>s, and
/// replies with a REPLY_ACK status when the front-end asked for one. It holds what the front-end negotiated; the data
/// path reads it (<see cref="Memory"/>, <see cref="Negotiated"/>, <see cref="Vrings"/>).
///
/// The front-end is untrusted: a malformed or unsupported request is logged, counted as
/// <see cref="DropReason.DeviceProtocolError"/> and refused (a failure status when it waits for one); a message the
/// framing cannot survive (a bad header, an oversized payload, too many descriptors) ends the connection. Nothing
/// throws out of the loop. Owner thread only.
/// </summary>
internal sealed class VhostUserSession
{
    private readonly EmulatorLink _link;
    private readonly Counters _counters;
    private readonly ILogger _logger;
    private readonly string _endpoint;
    private readonly VhostUserChannel _channel = new();
    private readonly Vring[] _vrings = new Vring[VhostUserProtocol.QueueCount];
    private ulong _features;
    private ulong _protocolFeatures;

    /// <summary>
    /// A session over the connection <paramref name="link"/> holds (ended when the framing is lost), naming the device
    /// <paramref name="endpoint"/> in log lines; <paramref name="rings"/> serves the rings once they run.
    /// </summary>
    public VhostUserSession(EventLoop loop, EmulatorLink link, Counters counters, ILogger logger, string endpoint, IVringHandler rings)
    {
        Loop = loop;
        _link = link;
        _counters = counters;
        _logger = logger;
        _endpoint = endpoint;
        for (int i = 0; i < _vrings.Length; i++) _vrings[i] = new Vring(this, i, rings);
    }

    public EventLoop Loop { get; }

    /// <summary>The guest's RAM as the last SET_MEM_TABLE mapped it; null before that and after a reset.</summary>
    public GuestMemory? Memory { get; private set; }

    /// <summary>The device's queues, indexed by queue number.</summary>
    public ReadOnlySpan<Vring> Vrings => _vrings;

    /// <summary>Requests handled, for tests and diagnostics.</summary>
    public int MessagesHandled { get; private set; }

    /// <summary>The feature bits the front-end acknowledged (SET_FEATURES); 0 before.</summary>
    public ulong Features => _features;

    /// <summary>The offloads and notification features in <paramref name="features"/>, for the log.</summary>
    internal static string DescribeOffloads(ulong features)
    {
        static string Bit(ulong f, int bit, string name) => (f & (1ul << bit)) != 0 ? name : "";
        var names = string.Join(' ', new[]
        {
            Bit(features, VhostUserProtocol.VirtioNetFCsum, "csum"), Bit(features, VhostUserProtocol.VirtioNetFGuestCsum, "guest_csum"),
            Bit(features, VhostUserProtocol.VirtioNetFHostTso4, "host_tso4"), Bit(features, VhostUserProtocol.VirtioNetFGuestTso4, "guest_tso4"),
            Bit(features, VhostUserProtocol.VirtioNetFMrgRxbuf, "mrg_rxbuf"), Bit(features, VhostUserProtocol.VirtioRingFEventIdx, "event_idx"),
        }.Where(n => n.Length > 0));
        return names.Length == 0 ? "no offloads" : names;
    }

    /// <summary>True when the front-end acknowledged feature <paramref name="bit"/> (SET_FEATURES).</summary>
    public bool Negotiated(int bit) => (_features & (1ul << bit)) != 0;

    /// <summary>Reads and handles the messages waiting on the connection.</summary>
    public void OnReadable()
    {
        // Bounded: a front-end that keeps writing cannot hold the loop; epoll reports the rest.
        for (int round = 0; round < 64 && _link.Connection is { } connection; round++)
        {
            switch (_channel.Read((int)connection.Handle, out int errno))
            {
                case ChannelRead.WouldBlock:
                    return;
                case ChannelRead.Incomplete:
                    continue;
                case ChannelRead.Closed:
                    _link.Disconnect(errno == 0 ? "the front-end closed the connection" : $"receive failed: errno {errno}");
                    return;
                case ChannelRead.TooManyFds:
                    ProtocolError("a message carried more file descriptors than any request takes");
                    _link.Disconnect("the front-end sent too many file descriptors");
                    return;
                case ChannelRead.BadHeader:
                    ProtocolError($"bad header (flags 0x{_channel.Flags:x}, size {_channel.Size})");
                    _link.Disconnect("the front-end sent a message the protocol does not allow");
                    return;
                case ChannelRead.Message:
                    HandleMessage();
                    _channel.CloseFds();
                    break;
            }
        }
    }

    private void HandleMessage()
    {
        var request = _channel.Request;
        var payload = _channel.Payload;
        bool wantsAck = (_channel.Flags & VhostUserProtocol.FlagNeedReply) != 0 && (_protocolFeatures & (1ul << VhostUserProtocol.ProtocolFReplyAck)) != 0;
        MessagesHandled++;
        if (_logger.IsEnabled(LogLevel.Debug)) _logger.LogDebug("vhost-user request {Request} ({Size} bytes, {Fds} fds).", request, payload.Length, _channel.Fds.Length);
        bool ok;
        switch (request)
        {
            case VhostUserRequest.GetFeatures:
                ReplyU64(request, VhostUserProtocol.OfferedFeatures);
                return;
            case VhostUserRequest.GetProtocolFeatures:
                ReplyU64(request, VhostUserProtocol.OfferedProtocolFeatures);
                return;
            case VhostUserRequest.GetQueueNum:
                ReplyU64(request, VhostUserProtocol.QueueCount);
                return;
            case VhostUserRequest.GetVringBase:
                if (payload.Length != 8 || BinaryPrimitives.ReadUInt32LittleEndian(payload) >= VhostUserProtocol.QueueCount)
                {
                    ProtocolError($"GET_VRING_BASE with a {payload.Length}-byte payload or a bad index");
                    _link.Disconnect("the front-end sent a malformed GET_VRING_BASE");
                    return;
                }
                {
                    uint index = BinaryPrimitives.ReadUInt32LittleEndian(payload);
                    ushort vringBase = _vrings[index].Stop();
                    Span<byte> state = stackalloc byte[8];
                    BinaryPrimitives.WriteUInt32LittleEndian(state, index);
                    BinaryPrimitives.WriteUInt32LittleEndian(state[4..], vringBase);
                    Reply(request, state);
                }
                return;
            case VhostUserRequest.SetFeatures: ok = SetFeatures(payload); break;
            case VhostUserRequest.SetProtocolFeatures: ok = SetProtocolFeatures(payload); break;
            case VhostUserRequest.SetOwner: ok = payload.Length == 0 || Malformed(request, payload.Length); break;
            case VhostUserRequest.ResetOwner:
                ResetDevice();
                ok = true;
                break;
            case VhostUserRequest.SetMemTable: ok = SetMemTable(payload); break;
            case VhostUserRequest.SetVringNum: ok = SetVringState(request, payload); break;
            case VhostUserRequest.SetVringBase: ok = SetVringState(request, payload); break;
            case VhostUserRequest.SetVringEnable: ok = SetVringState(request, payload); break;
            case VhostUserRequest.SetVringAddr: ok = SetVringAddr(payload); break;
            case VhostUserRequest.SetVringKick:
            case VhostUserRequest.SetVringCall:
            case VhostUserRequest.SetVringErr:
                ok = SetVringFd(request, payload);
                break;
            default:
                // vhost-user.rst: a back-end that does not understand a request it did not advertise may fail it.
                ProtocolError($"unsupported request {(uint)request}");
                ok = false;
                break;
        }
        if (wantsAck) ReplyU64(request, ok ? 0ul : 1ul);
    }

    private bool Malformed(VhostUserRequest request, int length)
    {
        ProtocolError($"{request} with a {length}-byte payload");
        return false;
    }

    private bool SetFeatures(ReadOnlySpan<byte> payload)
    {
        if (!TryReadAck(VhostUserRequest.SetFeatures, "SET_FEATURES", payload, VhostUserProtocol.OfferedFeatures, out ulong value)) return false;
        _features = value;
        _logger.LogInformation("vhost-user features 0x{Features:x} negotiated ({Offloads}).", value, DescribeOffloads(value));
        return true;
    }

    private bool SetProtocolFeatures(ReadOnlySpan<byte> payload)
    {
        if (!TryReadAck(VhostUserRequest.SetProtocolFeatures, "SET_PROTOCOL_FEATURES", payload, VhostUserProtocol.OfferedProtocolFeatures, out ulong value)) return false;
        _protocolFeatures = value;
        return true;
    }

    /// <summary>The u64 of SET_FEATURES or SET_PROTOCOL_FEATURES; vhost-user.rst: it acks only bits the back-end offered.</summary>
    private bool TryReadAck(VhostUserRequest request, string name, ReadOnlySpan<byte> payload, ulong offered, out ulong value)
    {
        value = 0;
        if (payload.Length != 8) return Malformed(request, payload.Length);
        value = BinaryPrimitives.ReadUInt64LittleEndian(payload);
        if ((value & ~offered) == 0) return true;
        ProtocolError($"{name} acks 0x{value:x}, more than offered 0x{offered:x}");
        return false;
    }

    private bool SetMemTable(ReadOnlySpan<byte> payload)
    {
        if (payload.Length < 8) return Malformed(VhostUserRequest.SetMemTable, payload.Length);
        uint count = BinaryPrimitives.ReadUInt32LittleEndian(payload);
        if (count == 0 || count > GuestMemory.MaxRegions || payload.Length < 8 + (int)count * VhostUserProtocol.MemoryRegionSize)
            return Malformed(VhostUserRequest.SetMemTable, payload.Length);
        if (_channel.Fds.Length != count)
        {
            ProtocolError($"SET_MEM_TABLE with {count} regions came with {_channel.Fds.Length} file descriptors");
            return false;
        }
        Span<GuestRegion> regions = stackalloc GuestRegion[(int)count];
        for (int i = 0; i < (int)count; i++)
        {
            var r = payload.Slice(8 + i * VhostUserProtocol.MemoryRegionSize);
            regions[i] = new GuestRegion(BinaryPrimitives.ReadUInt64LittleEndian(r), BinaryPrimitives.ReadUInt64LittleEndian(r[8..]),
                BinaryPrimitives.ReadUInt64LittleEndian(r[16..]), BinaryPrimitives.ReadUInt64LittleEndian(r[24..]));
        }
        var memory = GuestMemory.Map(regions, _channel.Fds, out string? error);
        _channel.CloseFds(); // mapped (or refused): the mappings keep the memory, the fds are not needed
        if (memory is null)
        {
            ProtocolError($"SET_MEM_TABLE refused: {error}");
            return false;
        }
        // A new table replaces the old one; running queues are rebuilt over it from their front-end addresses.
        var old = Memory;
        Memory = memory;
        foreach (var v in _vrings) v.Remap();
        old?.Dispose();
        if (_logger.IsEnabled(LogLevel.Information))
        {
            ulong total = 0;
            for (int i = 0; i < memory.RegionCount; i++) total += memory[i].Size;
            _logger.LogInformation("Guest memory mapped: {Regions} region(s), {MiB} MiB.", memory.RegionCount, total >> 20);
        }
        return true;
    }

    private bool SetVringState(VhostUserRequest request, ReadOnlySpan<byte> payload)
    {
        if (payload.Length != 8) return Malformed(request, payload.Length);
        uint index = BinaryPrimitives.ReadUInt32LittleEndian(payload);
        uint num = BinaryPrimitives.ReadUInt32LittleEndian(payload[4..]);
        if (index >= VhostUserProtocol.QueueCount)
        {
            ProtocolError($"{request} for queue {index}; the device has {VhostUserProtocol.QueueCount}");
            return false;
        }
        var v = _vrings[index];
        switch (request)
        {
            case VhostUserRequest.SetVringNum:
                if (num == 0 || num > SplitQueue.MaxSize || (num & (num - 1)) != 0) // VIRTIO 1.2 §2.7: power of 2, at most 32768
                {
                    ProtocolError($"SET_VRING_NUM {num} for queue {index} is not a power of 2 up to {SplitQueue.MaxSize}");
                    return false;
                }
                v.SetSize(num);
                return true;
            case VhostUserRequest.SetVringBase:
                if (num > ushort.MaxValue) return Malformed(request, payload.Length);
                v.SetBase((ushort)num);
                return true;
            default:
                v.SetEnabled(num != 0);
                return true;
        }
    }

    private bool SetVringAddr(ReadOnlySpan<byte> payload)
    {
        // struct vhost_vring_addr { u32 index; u32 flags; u64 desc; u64 used; u64 avail; u64 log; }
        if (payload.Length != 40) return Malformed(VhostUserRequest.SetVringAddr, payload.Length);
        uint index = BinaryPrimitives.ReadUInt32LittleEndian(payload);
        if (index >= VhostUserProtocol.QueueCount)
        {
            ProtocolError($"SET_VRING_ADDR for queue {index}");
            return false;
        }
        _vrings[index].SetAddresses(BinaryPrimitives.ReadUInt64LittleEndian(payload[8..]), BinaryPrimitives.ReadUInt64LittleEndian(payload[16..]),
            BinaryPrimitives.ReadUInt64LittleEndian(payload[24..]));
        return true;
    }

    private bool SetVringFd(VhostUserRequest request, ReadOnlySpan<byte> payload)
    {
        if (payload.Length != 8) return Malformed(request, payload.Length);
        ulong value = BinaryPrimitives.ReadUInt64LittleEndian(payload);
        ulong index = value & VhostUserProtocol.VringIndexMask;
        bool noFd = (value & VhostUserProtocol.VringNoFd) != 0;
        if (index >= VhostUserProtocol.QueueCount || (value & ~(VhostUserProtocol.VringIndexMask | VhostUserProtocol.VringNoFd)) != 0)
        {
            ProtocolError($"{request} payload 0x{value:x} names no queue of this device");
            return false;
        }
        if (_channel.Fds.Length != (noFd ? 0 : 1))
        {
            ProtocolError($"{request} with flag {(noFd ? "no-fd" : "fd")} came with {_channel.Fds.Length} file descriptors");
            return false;
        }
        int fd = noFd ? -1 : _channel.TakeFds()[0];
        var v = _vrings[(int)index];
        switch (request)
        {
            case VhostUserRequest.SetVringKick: return v.SetKick(fd, noFd);
            case VhostUserRequest.SetVringCall: v.SetCall(fd); return true;
            default: v.SetErr(fd); return true;
        }
    }

    private void ReplyU64(VhostUserRequest request, ulong value)
    {
        Span<byte> payload = stackalloc byte[8];
        BinaryPrimitives.WriteUInt64LittleEndian(payload, value);
        Reply(request, payload);
    }

    private void Reply(VhostUserRequest request, ReadOnlySpan<byte> payload)
    {
        if (_link.Connection is { } connection && !VhostUserChannel.Reply(connection, request, payload, out var error))
            _link.Disconnect($"sending a reply failed: {error}");
    }

    /// <summary>Counts and logs a request the session refuses.</summary>
    public void ProtocolError(string what)
    {
        _counters.Drop(DropReason.DeviceProtocolError);
        _logger.LogWarning("vhost-user protocol error on {Endpoint}: {What}.", _endpoint, what);
    }

    /// <summary>Counts and logs a bad ring, chain or buffer of queue <paramref name="index"/>.</summary>
    public void QueueError(int index, VirtqError error, string what)
    {
        _counters.Drop(DropReason.VirtqueueMalformed);
        if (_logger.IsEnabled(LogLevel.Warning)) _logger.LogWarning("Queue {Queue}: {What} ({Error}).", index, what, error);
    }

    /// <summary>The connection ended: a partial message and its descriptors are dropped, and the device reset.</summary>
    public void Reset()
    {
        _channel.Reset();
        ResetDevice();
    }

    /// <summary>Back to the state of a fresh connection: queues stopped, memory unmapped, features cleared.</summary>
    private void ResetDevice()
    {
        foreach (var v in _vrings) v.Reset();
        Memory?.Dispose();
        Memory = null;
        _features = 0;
        _protocolFeatures = 0;
    }
}
