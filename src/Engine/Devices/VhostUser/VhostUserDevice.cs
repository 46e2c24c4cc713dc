using Emunet.Engine.Link;
using Emunet.Engine.Diagnostics;
using System.Buffers.Binary;
using System.Net.Sockets;
using Emunet.Engine.Devices.Virtio;
using Emunet.Engine.Interop;
using Emunet.Engine.Runtime;
using Microsoft.Extensions.Logging;

namespace Emunet.Engine.Devices.VhostUser;

/// <summary>
/// Theory of operation: a vhost-user virtio-net back-end (QEMU <c>-netdev vhost-user</c>). Emunet listens on a Unix
/// socket (<see cref="EmulatorListener"/>, one front-end at a time through <see cref="EmulatorLink"/>); QEMU (the front-end) connects, negotiates features, passes the guest's RAM as file descriptors
/// (SET_MEM_TABLE, mapped by <see cref="GuestMemory"/>) and, per queue, its size, ring addresses, base index and two
/// eventfds: "kick" (the guest made buffers available) and "call" (the device used some; QEMU turns it into an
/// interrupt). Frames then move through guest memory directly, with no socket copy.
///
/// Queue 1 (transmit, guest to Emunet): on a kick the device takes available chains, skips the virtio_net_hdr and
/// copies the frame into one scratch buffer (the guest may rewrite its buffers at any time) and hands it to the stack;
/// each chain goes back to the used ring. Queue 0 (receive, Emunet to guest): the stack writes a frame into a
/// transmit buffer (<see cref="BeginTransmit"/>), <see cref="CommitTransmit"/> copies it into receive chains
/// behind a virtio_net_hdr whose num_buffers says how many chains it spans (VIRTIO_NET_F_MRG_RXBUF). When the guest
/// has no receive buffers, frames wait in a bounded buffer and <see cref="TransmitSpace"/> shrinks: the stack stops
/// reading host sockets until a kick on queue 0 brings buffers and <see cref="IFrameHandler.OnTransmitReady"/>.
/// "Call" is signalled once per loop batch per queue unless the guest suppressed interrupts (§2.7.7).
///
/// The front-end and the guest are untrusted: a malformed request is logged, counted and refused (a reply of failure
/// when the front-end waits for one); a bad ring stops that queue until the front-end restarts it; a bad chain drops
/// its frame. Nothing throws out of the loop. When QEMU goes away the memory is unmapped, the fds closed, the stack
/// reset, and the device listens for the next front-end.
/// </summary>
internal sealed class VhostUserDevice : IGuestDevice, IEndOfBatch, IEmulatorConnectionHandler
{
    public const int MaxFrameLength = LinkLimits.MaxFrameLength;
    /// <summary>VIRTIO 1.2 §5.1.6: struct virtio_net_hdr is 12 bytes with VERSION_1 or MRG_RXBUF, 10 otherwise.</summary>
    public const int NetHeaderLength = 12;
    private const int LegacyNetHeaderLength = 10;
    private const int NumBuffersOffset = 10;
    private const int PendingBufferSize = 2 * 1024 * 1024;
    /// <summary>Transmit chains taken per kick before other work runs (the device re-kicks itself for the rest).</summary>
    private const int TransmitBudget = 256;

    private readonly EventLoop _loop;
    private readonly Counters _counters;
    private readonly ILogger _logger;
    private readonly string _path;
    private readonly byte[] _message = GC.AllocateUninitializedArray<byte>(VhostUserProtocol.HeaderSize + VhostUserProtocol.MaxPayload);
    private readonly int[] _fds = new int[LibcVhost.MaxFds];
    private readonly byte[] _gather = GC.AllocateUninitializedArray<byte>(NetHeaderLength + MaxFrameLength, pinned: true);
    private readonly FrameQueue _pending = new(PendingBufferSize);
    private readonly ushort[] _rxHeads = new ushort[SplitQueue.MaxSize];
    private readonly uint[] _rxLengths = new uint[SplitQueue.MaxSize];
    private readonly Vring[] _vrings = new Vring[VhostUserProtocol.QueueCount];
    private readonly EmulatorLink _link;
    private int _messageLength;
    private int _fdCount;
    private ulong _features;
    private ulong _protocolFeatures;
    private GuestMemory? _memory;
    private bool _pushedBack;

    public VhostUserDevice(EventLoop loop, string path, Counters counters, ILogger logger)
    {
        _loop = loop;
        _path = Path.GetFullPath(path);
        _counters = counters;
        _logger = logger;
        _link = new EmulatorLink(loop, EmulatorListener.ForUnixPath(loop, _path, "--vhost-user", logger), "vhost-user front-end", counters, logger, this);
        for (int i = 0; i < _vrings.Length; i++) _vrings[i] = new Vring(this, i);
    }

    public IFrameHandler? Handler { get; set; }

    public FrameTap? Tap { get; set; }

    public string Description => $"vhost-user:{_path}";

    public bool IsConnected => _link.IsConnected;

    public int TransmitSpace => _link.IsConnected ? _pending.Space : 0;

    /// <summary>Requests handled, for tests and diagnostics.</summary>
    internal int MessagesHandled { get; private set; }

    private bool Negotiated(int bit) => (_features & (1ul << bit)) != 0;

    private int HeaderLength =>
        Negotiated(VhostUserProtocol.VirtioFVersion1) || Negotiated(VhostUserProtocol.VirtioNetFMrgRxbuf) ? NetHeaderLength : LegacyNetHeaderLength;

    public void Start()
    {
        _link.Start();
        _loop.AddEndOfBatch(this);
    }

    void IEmulatorConnectionHandler.OnAttached(Socket connection)
    {
        _messageLength = 0;
        _fdCount = 0;
        _logger.LogInformation("vhost-user front-end attached on {Endpoint}.", Description);
        Handler?.OnDeviceConnected();
    }

    // ---- Control channel -------------------------------------------------------------------------------------

    void IEmulatorConnectionHandler.OnConnectionEvents(uint events)
    {
        // Reads exactly one message at a time (header, then payload), so descriptors passed with a message arrive
        // with it: the kernel never merges data across an SCM_RIGHTS boundary into a read that stops before it.
        for (int round = 0; round < 64 && _link.Connection is { } connection; round++)
        {
            int fd = (int)connection.Handle;
            int need = _messageLength < VhostUserProtocol.HeaderSize
                ? VhostUserProtocol.HeaderSize - _messageLength
                : VhostUserProtocol.HeaderSize + (int)BinaryPrimitives.ReadUInt32LittleEndian(_message.AsSpan(8)) - _messageLength;
            if (need > 0)
            {
                nint n = LibcVhost.ReceiveWithFds(fd, _message.AsSpan(_messageLength, need), _fds, ref _fdCount, out bool truncated);
                if (n == -Libc.EAGAIN) return;
                if (n <= 0)
                {
                    Disconnect(n == 0 ? "the front-end closed the connection" : $"receive failed: errno {-n}");
                    return;
                }
                if (truncated)
                {
                    ProtocolError("a message carried more file descriptors than any request takes");
                    Disconnect("the front-end sent too many file descriptors");
                    return;
                }
                _messageLength += (int)n;
                if (_messageLength == VhostUserProtocol.HeaderSize)
                {
                    uint flags = BinaryPrimitives.ReadUInt32LittleEndian(_message.AsSpan(4));
                    uint size = BinaryPrimitives.ReadUInt32LittleEndian(_message.AsSpan(8));
                    if ((flags & VhostUserProtocol.FlagVersionMask) != VhostUserProtocol.Version || size > VhostUserProtocol.MaxPayload)
                    {
                        ProtocolError($"bad header (flags 0x{flags:x}, size {size})");
                        Disconnect("the front-end sent a message the protocol does not allow");
                        return;
                    }
                }
                if (_messageLength < VhostUserProtocol.HeaderSize) continue;
                need = VhostUserProtocol.HeaderSize + (int)BinaryPrimitives.ReadUInt32LittleEndian(_message.AsSpan(8)) - _messageLength;
                if (need > 0) continue;
            }
            int length = _messageLength;
            _messageLength = 0;
            HandleMessage(length);
            CloseUnusedFds();
        }
    }

    private void HandleMessage(int length)
    {
        var request = (VhostUserRequest)BinaryPrimitives.ReadUInt32LittleEndian(_message);
        uint flags = BinaryPrimitives.ReadUInt32LittleEndian(_message.AsSpan(4));
        var payload = _message.AsSpan(VhostUserProtocol.HeaderSize, length - VhostUserProtocol.HeaderSize);
        bool wantsAck = (flags & VhostUserProtocol.FlagNeedReply) != 0 && (_protocolFeatures & (1ul << VhostUserProtocol.ProtocolFReplyAck)) != 0;
        MessagesHandled++;
        if (_logger.IsEnabled(LogLevel.Debug)) _logger.LogDebug("vhost-user request {Request} ({Size} bytes, {Fds} fds).", request, payload.Length, _fdCount);
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
                    Disconnect("the front-end sent a malformed GET_VRING_BASE");
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
        if (payload.Length != 8) return Malformed(VhostUserRequest.SetFeatures, payload.Length);
        ulong value = BinaryPrimitives.ReadUInt64LittleEndian(payload);
        if ((value & ~VhostUserProtocol.OfferedFeatures) != 0)
        {
            ProtocolError($"SET_FEATURES acks 0x{value:x}, more than offered 0x{VhostUserProtocol.OfferedFeatures:x}");
            return false;
        }
        _features = value;
        if (_logger.IsEnabled(LogLevel.Debug)) _logger.LogDebug("Features 0x{Features:x}.", value);
        return true;
    }

    private bool SetProtocolFeatures(ReadOnlySpan<byte> payload)
    {
        if (payload.Length != 8) return Malformed(VhostUserRequest.SetProtocolFeatures, payload.Length);
        ulong value = BinaryPrimitives.ReadUInt64LittleEndian(payload);
        if ((value & ~VhostUserProtocol.OfferedProtocolFeatures) != 0)
        {
            ProtocolError($"SET_PROTOCOL_FEATURES acks 0x{value:x}, more than offered");
            return false;
        }
        _protocolFeatures = value;
        return true;
    }

    private bool SetMemTable(ReadOnlySpan<byte> payload)
    {
        if (payload.Length < 8) return Malformed(VhostUserRequest.SetMemTable, payload.Length);
        uint count = BinaryPrimitives.ReadUInt32LittleEndian(payload);
        if (count == 0 || count > GuestMemory.MaxRegions || payload.Length < 8 + (int)count * VhostUserProtocol.MemoryRegionSize)
            return Malformed(VhostUserRequest.SetMemTable, payload.Length);
        if (_fdCount != count)
        {
            ProtocolError($"SET_MEM_TABLE with {count} regions came with {_fdCount} file descriptors");
            return false;
        }
        Span<GuestRegion> regions = stackalloc GuestRegion[(int)count];
        for (int i = 0; i < (int)count; i++)
        {
            var r = payload.Slice(8 + i * VhostUserProtocol.MemoryRegionSize);
            regions[i] = new GuestRegion(BinaryPrimitives.ReadUInt64LittleEndian(r), BinaryPrimitives.ReadUInt64LittleEndian(r[8..]),
                BinaryPrimitives.ReadUInt64LittleEndian(r[16..]), BinaryPrimitives.ReadUInt64LittleEndian(r[24..]));
        }
        var memory = GuestMemory.Map(regions, _fds.AsSpan(0, (int)count), out string? error);
        CloseUnusedFds(); // mapped (or refused): the mappings keep the memory, the fds are not needed
        if (memory is null)
        {
            ProtocolError($"SET_MEM_TABLE refused: {error}");
            return false;
        }
        // A new table replaces the old one; running queues are rebuilt over it from their front-end addresses.
        var old = _memory;
        _memory = memory;
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
                v.Size = num;
                return true;
            case VhostUserRequest.SetVringBase:
                if (num > ushort.MaxValue) return Malformed(request, payload.Length);
                v.Base = (ushort)num;
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
        var v = _vrings[index];
        v.DescriptorAddress = BinaryPrimitives.ReadUInt64LittleEndian(payload[8..]);
        v.UsedAddress = BinaryPrimitives.ReadUInt64LittleEndian(payload[16..]);
        v.AvailAddress = BinaryPrimitives.ReadUInt64LittleEndian(payload[24..]);
        v.HasAddresses = true;
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
        if (noFd ? _fdCount != 0 : _fdCount != 1)
        {
            ProtocolError($"{request} with flag {(noFd ? "no-fd" : "fd")} came with {_fdCount} file descriptors");
            return false;
        }
        int fd = noFd ? -1 : _fds[0];
        _fdCount = 0; // taken
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
        if (_link.Connection is not { } connection) return;
        Span<byte> buffer = stackalloc byte[VhostUserProtocol.HeaderSize + 64];
        BinaryPrimitives.WriteUInt32LittleEndian(buffer, (uint)request);
        BinaryPrimitives.WriteUInt32LittleEndian(buffer[4..], VhostUserProtocol.Version | VhostUserProtocol.FlagReply);
        BinaryPrimitives.WriteUInt32LittleEndian(buffer[8..], (uint)payload.Length);
        payload.CopyTo(buffer[VhostUserProtocol.HeaderSize..]);
        int total = VhostUserProtocol.HeaderSize + payload.Length;
        // A reply is a few bytes on a socket the front-end is waiting to read; a short or failed send ends the session.
        int sent = connection.Send(buffer[..total], SocketFlags.None, out var error);
        if (error != SocketError.Success || sent != total) Disconnect($"sending a reply failed: {error}");
    }

    private void CloseUnusedFds()
    {
        for (int i = 0; i < _fdCount; i++) Libc.close(_fds[i]);
        _fdCount = 0;
    }

    private void ProtocolError(string what)
    {
        _counters.Drop(DropReason.DeviceProtocolError);
        _logger.LogWarning("vhost-user protocol error on {Endpoint}: {What}.", Description, what);
    }

    private void QueueError(int index, VirtqError error, string what)
    {
        _counters.Drop(DropReason.VirtqueueMalformed);
        if (_logger.IsEnabled(LogLevel.Warning)) _logger.LogWarning("Queue {Queue}: {What} ({Error}).", index, what, error);
    }

    /// <summary>Back to the state of a fresh connection: queues stopped, memory unmapped, features cleared.</summary>
    private void ResetDevice()
    {
        foreach (var v in _vrings) v.Reset();
        _memory?.Dispose();
        _memory = null;
        _features = 0;
        _protocolFeatures = 0;
    }

    // ---- Transmit queue: frames from the guest ------------------------------------------------------------------

    private void DrainTransmit(Vring v)
    {
        var q = v.Queue;
        if (q is null || !v.Running) return;
        int header = HeaderLength;
        int budget = TransmitBudget;
        bool used = false;
        while (budget-- > 0 && v.Running)
        {
            if (!q.TryPop(out var chain, out var ringError))
            {
                if (ringError != VirtqError.None) v.Break(ringError, "the available ring is broken");
                break;
            }
            ReceiveChain(ref chain, header);
            q.AddUsed(chain.Head, 0); // §2.7.8: the device wrote nothing into a transmit buffer
            used = true;
        }
        if (used)
        {
            q.PublishUsed();
            v.NeedsCall = true;
        }
        // Budget spent with chains left: kick ourselves so the loop serves host sockets first and then comes back.
        if (budget < 0 && v.Running && q.AvailableCount() > 0 && v.KickFd >= 0) LibcVhost.SignalEventFd(v.KickFd);
    }

    /// <summary>Delivers the frame one transmit chain holds (after its virtio_net_hdr) to the stack, or counts the drop.</summary>
    private void ReceiveChain(ref DescriptorChain chain, int header)
    {
        // The frame is always copied out of guest memory first, even from a single buffer: the guest can rewrite its
        // buffers while the stack parses, and the wire views re-read fields (an IPv4 header length checked once and
        // changed after would move a slice out of range). One copy of a frame costs less than that risk.
        // §5.1.6.2: the header and the frame may be split across buffers anywhere.
        int length = 0;
        while (chain.TryNext(out var d))
            if (!Gather(d, ref length, header)) return;
        if (chain.Error != VirtqError.None)
        {
            QueueError(VhostUserProtocol.TxQueue, chain.Error, "a bad transmit chain");
            return;
        }
        if (!CheckTransmitLength((uint)length, header)) return;
        var frame = _gather.AsSpan(header, length - header);
        Tap?.Invoke(frame, false);
        Handler?.OnFrame(frame);
    }

    /// <summary>Appends one transmit buffer to the scratch buffer at <paramref name="length"/>, or counts the drop.</summary>
    private bool Gather(Descriptor d, ref int length, int header)
    {
        if (d.Writable)
        {
            QueueError(VhostUserProtocol.TxQueue, VirtqError.None, "a transmit buffer is device-writable");
            return false;
        }
        if ((ulong)length + d.Length > (ulong)(header + MaxFrameLength))
        {
            _counters.Drop(DropReason.FrameTooLong);
            return false;
        }
        // Fits the scratch buffer (checked above) and lies in guest memory (checked by the chain walk).
        _memory!.TryRead(d.Address, _gather.AsSpan(length, (int)d.Length));
        length += (int)d.Length;
        return true;
    }

    private bool CheckTransmitLength(uint total, int header)
    {
        if (total < (uint)header + 14)
        {
            _counters.Drop(DropReason.FrameTooShort);
            return false;
        }
        if (total > (uint)(header + MaxFrameLength))
        {
            _counters.Drop(DropReason.FrameTooLong);
            return false;
        }
        return true;
    }

    // ---- Receive queue: frames to the guest ---------------------------------------------------------------------

    public TransmitLease BeginTransmit(int maxLength)
    {
        if (!_link.IsConnected || maxLength > MaxFrameLength || maxLength < 0) return default;
        var room = _pending.Reserve(maxLength, out int token);
        if (room.IsEmpty)
        {
            _pushedBack = true;
            return default;
        }
        return new TransmitLease(this, room, token);
    }

    public void CommitTransmit(int token, int length)
    {
        if (!_link.IsConnected || !_pending.TryCommit(token, length, out var frame)) return;
        Tap?.Invoke(frame, true);
        FlushReceive();
    }

    /// <summary>Copies waiting frames into the guest's receive buffers, in order, until either runs out.</summary>
    private void FlushReceive()
    {
        var v = _vrings[VhostUserProtocol.RxQueue];
        var q = v.Queue;
        if (q is null || !v.Running || _pending.IsEmpty) return;
        bool used = false;
        while (v.Running && _pending.TryPeek(out var frame))
        {
            var outcome = DeliverFrame(v, q, frame);
            if (outcome == Delivery.NoBuffers) break;
            used |= outcome == Delivery.Delivered || outcome == Delivery.Dropped;
            _pending.Pop();
        }
        if (used)
        {
            q.PublishUsed();
            v.NeedsCall = true;
        }
    }

    private enum Delivery { Delivered, NoBuffers, Dropped, Discarded }

    /// <summary>
    /// Writes the header and <paramref name="frame"/> into as many receive chains as it needs (one without MRG_RXBUF).
    /// Nothing is used when the chains run out mid-frame: the available index is rolled back and the frame waits.
    /// </summary>
    private Delivery DeliverFrame(Vring v, SplitQueue q, ReadOnlySpan<byte> frame)
    {
        var memory = _memory!;
        int header = HeaderLength;
        bool mergeable = Negotiated(VhostUserProtocol.VirtioNetFMrgRxbuf);
        int total = header + frame.Length; // <= 12 + MaxFrameLength
        ushort savedAvail = q.NextAvail;
        Span<byte> hdr = stackalloc byte[NetHeaderLength];
        hdr.Clear(); // flags 0, gso_type VIRTIO_NET_HDR_GSO_NONE (§5.1.6.4: no checksum or GSO offload offered)
        GuestAddress numBuffersLow = default, numBuffersHigh = default;
        int chains = 0;
        int written = 0;
        while (written < total)
        {
            if (!q.TryPop(out var chain, out var ringError))
            {
                q.NextAvail = savedAvail;
                if (ringError != VirtqError.None)
                {
                    v.Break(ringError, "the available ring is broken");
                    return Delivery.Discarded;
                }
                return Delivery.NoBuffers;
            }
            uint chainWritten = 0;
            while (written < total && chain.TryNext(out var d))
            {
                if (!d.Writable)
                {
                    q.NextAvail = savedAvail;
                    v.Break(VirtqError.None, "a receive buffer is device-readable"); // §5.1.6.3: receive buffers are device-writable
                    return Delivery.Discarded;
                }
                int n = (int)Math.Min(d.Length, (uint)(total - written));
                memory.TryGetSpan(d.Address, (uint)n, out var dst); // inside the checked descriptor range
                int o = 0;
                if (written < header)
                {
                    int h = Math.Min(n, header - written);
                    if (written <= NumBuffersOffset && NumBuffersOffset < written + h) numBuffersLow = new GuestAddress(d.Address.Value + (ulong)(NumBuffersOffset - written));
                    if (written <= NumBuffersOffset + 1 && NumBuffersOffset + 1 < written + h) numBuffersHigh = new GuestAddress(d.Address.Value + (ulong)(NumBuffersOffset + 1 - written));
                    hdr.Slice(written, h).CopyTo(dst);
                    o = h;
                }
                if (o < n) frame.Slice(written + o - header, n - o).CopyTo(dst[o..]);
                written += n;
                chainWritten += (uint)n;
            }
            if (chain.Error != VirtqError.None)
            {
                q.NextAvail = savedAvail;
                v.Break(chain.Error, "a bad receive chain");
                return Delivery.Discarded;
            }
            _rxHeads[chains] = chain.Head;
            _rxLengths[chains] = chainWritten;
            chains++; // at most q.Size: each pop takes a distinct available entry
            if (!mergeable && written < total)
            {
                // §5.1.6.3.1: without MRG_RXBUF each buffer must hold a whole frame; this one is too small.
                _counters.Drop(DropReason.VirtioBufferTooSmall);
                q.AddUsed(chain.Head, 0);
                return Delivery.Dropped;
            }
        }
        if (header == NetHeaderLength)
        {
            // §5.1.6.4: num_buffers (le16) is the number of buffers the frame spans.
            Span<byte> count = stackalloc byte[2];
            BinaryPrimitives.WriteUInt16LittleEndian(count, (ushort)chains); // chains <= 32768
            memory.TryWrite(numBuffersLow, count[..1]);
            memory.TryWrite(numBuffersHigh, count[1..]);
        }
        for (int i = 0; i < chains; i++) q.AddUsed(_rxHeads[i], _rxLengths[i]);
        return Delivery.Delivered;
    }

    private void OnReceiveBuffersPosted()
    {
        FlushReceive();
        if (_pushedBack && _pending.Count < PendingBufferSize / 2)
        {
            _pushedBack = false;
            Handler?.OnTransmitReady();
        }
    }

    public void OnEndOfBatch()
    {
        foreach (var v in _vrings)
        {
            if (!v.NeedsCall) continue;
            v.NeedsCall = false;
            if (v.CallFd >= 0 && v.Queue is not null && v.Queue.NeedsInterrupt()) LibcVhost.SignalEventFd(v.CallFd);
        }
    }

    // ---- Connection lifetime ------------------------------------------------------------------------------------

    private void Disconnect(string why) => _link.Disconnect(why);

    void IEmulatorConnectionHandler.OnDetached(string why)
    {
        _logger.LogInformation("vhost-user front-end detached from {Endpoint}: {Reason}.", Description, why);
        _messageLength = 0;
        CloseUnusedFds();
        ResetDevice();
        _pending.Clear();
        _pushedBack = false;
        Handler?.OnDeviceDisconnected();
    }

    /// <summary>Ends the session, stops listening and removes the socket file.</summary>
    public void Dispose() => _link.Dispose();

    /// <summary>One virtqueue as the front-end set it up: size, addresses, base, eventfds; running once kicked and enabled.</summary>
    private sealed class Vring(VhostUserDevice device, int index) : IPollable
    {
        public uint Size;
        public ulong DescriptorAddress, UsedAddress, AvailAddress;
        public bool HasAddresses;
        public ushort Base;
        public int KickFd = -1;
        public int CallFd = -1;
        public int ErrFd = -1;
        private int _kickToken = -1;
        private bool _started;
        private bool _enabled;
        private bool _broken;
        public bool NeedsCall;
        public SplitQueue? Queue;

        /// <summary>Kicked, enabled, its layout accepted and not broken.</summary>
        public bool Running => _started && Enabled && Queue is not null && !_broken;

        // vhost-user.rst "Ring states": without VHOST_USER_F_PROTOCOL_FEATURES a ring is enabled as soon as it starts.
        private bool Enabled => _enabled || !device.Negotiated(VhostUserProtocol.VhostUserFProtocolFeatures);

        public bool SetKick(int fd, bool noFd)
        {
            // A new kick restarts the ring where it stands; until it is accepted the ring is stopped.
            if (Queue is not null) Base = Queue.NextAvail;
            Queue = null;
            _started = false;
            RemoveKick();
            if (noFd)
            {
                // Polling mode (no kick fd): the device only reacts to eventfds, so it cannot serve this queue.
                device.ProtocolError($"queue {index} set to polling mode, which Emunet does not support");
                return false;
            }
            try { _kickToken = device._loop.Register(fd, Libc.EPOLLIN, this); }
            catch (InvalidOperationException)
            {
                device.ProtocolError($"the kick descriptor for queue {index} cannot be polled");
                Libc.close(fd);
                return false;
            }
            KickFd = fd;
            // vhost-user.rst: the ring starts when its kick descriptor arrives.
            _started = true;
            _broken = false;
            Build();
            Serve();
            return true;
        }

        public void SetCall(int fd)
        {
            if (CallFd >= 0) Libc.close(CallFd);
            CallFd = fd;
        }

        public void SetErr(int fd)
        {
            if (ErrFd >= 0) Libc.close(ErrFd);
            ErrFd = fd;
        }

        public void SetEnabled(bool on)
        {
            _enabled = on;
            if (Running) Serve();
        }

        private void Build()
        {
            Queue = null;
            var memory = device._memory;
            if (memory is null || !HasAddresses || Size == 0)
            {
                device.QueueError(index, VirtqError.RingOutOfRange, "started before its memory, size and addresses were set");
                _broken = true;
                return;
            }
            if (!memory.TryTranslateFrontEnd(DescriptorAddress, out var desc) || !memory.TryTranslateFrontEnd(AvailAddress, out var avail)
                || !memory.TryTranslateFrontEnd(UsedAddress, out var used))
            {
                device.QueueError(index, VirtqError.RingOutOfRange, "its ring addresses are outside guest memory");
                _broken = true;
                return;
            }
            Queue = SplitQueue.Create(memory, Size, desc, avail, used, Base, device.Negotiated(VhostUserProtocol.VirtioRingFIndirectDesc), out var error);
            if (Queue is null)
            {
                device.QueueError(index, error, "its layout was refused");
                _broken = true;
            }
        }

        /// <summary>After a new memory table: rebuild a started queue over it, keeping its position.</summary>
        public void Remap()
        {
            if (!_started) return;
            if (Queue is not null) Base = Queue.NextAvail;
            Build();
        }

        public void Break(VirtqError error, string what)
        {
            device.QueueError(index, error, what + "; the queue stops until the front-end restarts it");
            _broken = true;
        }

        /// <summary>GET_VRING_BASE: stops the ring and returns where the device stopped (vhost-user.rst).</summary>
        public ushort Stop()
        {
            if (Queue is not null) Base = Queue.NextAvail;
            RemoveKick();
            if (CallFd >= 0) { Libc.close(CallFd); CallFd = -1; }
            _started = false;
            Queue = null;
            NeedsCall = false;
            return Base;
        }

        public void Reset()
        {
            Stop();
            if (ErrFd >= 0) { Libc.close(ErrFd); ErrFd = -1; }
            Size = 0;
            Base = 0;
            HasAddresses = false;
            _enabled = false;
            _broken = false;
        }

        private void RemoveKick()
        {
            if (KickFd < 0) return;
            device._loop.Unregister(_kickToken, KickFd);
            Libc.close(KickFd);
            KickFd = -1;
            _kickToken = -1;
        }

        public void OnPoll(uint events)
        {
            if (KickFd < 0) return;
            LibcVhost.DrainEventFd(KickFd);
            Serve();
        }

        private void Serve()
        {
            if (!Running) return;
            if (index == VhostUserProtocol.TxQueue) device.DrainTransmit(this);
            else device.OnReceiveBuffersPosted();
        }
    }
}
