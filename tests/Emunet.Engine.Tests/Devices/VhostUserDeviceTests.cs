using Emunet.Engine.Link;
using Emunet.Engine.Diagnostics;
using System.Buffers.Binary;
using System.Collections.Concurrent;
using System.Net.Sockets;
using Emunet.Engine.Devices;
using Emunet.Engine.Devices.VhostUser;
using Emunet.Engine.Devices.Virtio;
using Emunet.Engine.Interop;
using Emunet.Engine.Runtime;
using Microsoft.Extensions.Logging.Abstractions;

namespace Emunet.Engine.Tests.Devices;

/// <summary>
/// The vhost-user device against a mock front-end speaking the protocol over its Unix socket (memory passed as a memfd,
/// eventfds for kick and call) and a mock driver laying out the rings in that memory: frames both ways, back-pressure,
/// and hostile requests and rings.
/// </summary>
public sealed partial class VhostUserDeviceTests : IDisposable
{
    private const ulong FrontEndBase = 0x7f0000000000;
    private const ulong MemSize = 4 << 20;
    private const ushort QueueSize = 64;
    /// <summary>What most tests negotiate: no offloads and no EVENT_IDX (VhostUserOffloadTests.cs covers those).</summary>
    private const ulong Features = VhostUserProtocol.OfferedFeatures & ~(
        (1ul << VhostUserProtocol.VirtioRingFEventIdx) | (1ul << VhostUserProtocol.VirtioNetFCsum) | (1ul << VhostUserProtocol.VirtioNetFGuestCsum)
        | (1ul << VhostUserProtocol.VirtioNetFHostTso4) | (1ul << VhostUserProtocol.VirtioNetFGuestTso4));

    private readonly string _dir = Directory.CreateTempSubdirectory("emunet-vu-").FullName;
    private readonly EventLoop _loop = new();
    private readonly Counters _counters = new();
    private readonly RecordingHandler _handler = new();
    private readonly VhostUserDevice _device;
    private readonly Thread _thread;
    private readonly int _memfd;
    private readonly GuestMemory _memory;
    private readonly VirtioMockDriver _rx;
    private readonly VirtioMockDriver _tx;
    private readonly int[] _kick = new int[2];
    private readonly int[] _call = new int[2];
    private Socket? _frontEnd;

    public VhostUserDeviceTests()
    {
        _device = new VhostUserDevice(_loop, Path.Combine(_dir, "vu.sock"), _counters, NullLogger.Instance) { Handler = _handler };
        _device.Start();
        _thread = new Thread(_loop.Run) { IsBackground = true };
        _thread.Start();
        _memfd = LibcVhost.memfd_create("emunet-test", LibcVhost.MFD_CLOEXEC);
        Assert.True(_memfd >= 0);
        Assert.Equal(0, LibcVhost.ftruncate(_memfd, (long)MemSize));
        _memory = GuestMemory.Map([new GuestRegion(0, MemSize, FrontEndBase, 0)], [_memfd], out var error)!;
        Assert.Null(error);
        _rx = new VirtioMockDriver(_memory, 0x1000, 0x2000, 0x3000, QueueSize);
        _tx = new VirtioMockDriver(_memory, 0x5000, 0x6000, 0x7000, QueueSize);
        for (int i = 0; i < 2; i++)
        {
            _kick[i] = Libc.eventfd(0, Libc.EFD_NONBLOCK | Libc.EFD_CLOEXEC);
            _call[i] = Libc.eventfd(0, Libc.EFD_NONBLOCK | Libc.EFD_CLOEXEC);
        }
    }

    public void Dispose()
    {
        _frontEnd?.Dispose();
        _loop.Stop();
        _thread.Join();
        _device.Dispose();
        _loop.Dispose();
        _memory.Dispose();
        Libc.close(_memfd);
        foreach (int fd in _kick.Concat(_call)) Libc.close(fd);
        Directory.Delete(_dir, true);
    }

    private static ulong Buf(int n) => 0x10000 + (ulong)n * 0x1000;

    // ---- the mock front-end --------------------------------------------------------------------------------------

    private Socket Connect()
    {
        var s = new Socket(AddressFamily.Unix, SocketType.Stream, ProtocolType.Unspecified);
        s.Connect(new UnixDomainSocketEndPoint(Path.Combine(_dir, "vu.sock")));
        s.ReceiveTimeout = 5000;
        return s;
    }

    private void Send(VhostUserRequest request, ReadOnlySpan<byte> payload, ReadOnlySpan<int> fds = default, bool needReply = false, uint? size = null)
    {
        var message = new byte[VhostUserProtocol.HeaderSize + payload.Length];
        BinaryPrimitives.WriteUInt32LittleEndian(message, (uint)request);
        BinaryPrimitives.WriteUInt32LittleEndian(message.AsSpan(4), VhostUserProtocol.Version | (needReply ? VhostUserProtocol.FlagNeedReply : 0));
        BinaryPrimitives.WriteUInt32LittleEndian(message.AsSpan(8), size ?? (uint)payload.Length);
        payload.CopyTo(message.AsSpan(VhostUserProtocol.HeaderSize));
        Assert.Equal(message.Length, (int)LibcVhost.SendWithFds((int)_frontEnd!.Handle, message, fds));
    }

    private byte[] ReadReply(VhostUserRequest request)
    {
        var header = new byte[VhostUserProtocol.HeaderSize];
        ReadExactly(header);
        Assert.Equal((uint)request, BinaryPrimitives.ReadUInt32LittleEndian(header));
        Assert.Equal(VhostUserProtocol.Version | VhostUserProtocol.FlagReply, BinaryPrimitives.ReadUInt32LittleEndian(header.AsSpan(4)));
        var payload = new byte[BinaryPrimitives.ReadUInt32LittleEndian(header.AsSpan(8))];
        ReadExactly(payload);
        return payload;
    }

    private void ReadExactly(byte[] buffer)
    {
        for (int at = 0; at < buffer.Length;)
        {
            int n = _frontEnd!.Receive(buffer, at, buffer.Length - at, SocketFlags.None);
            Assert.True(n > 0, "the device closed the connection");
            at += n;
        }
    }

    /// <summary>Sends with need_reply and returns the REPLY_ACK status (0 is success).</summary>
    private ulong Ack(VhostUserRequest request, ReadOnlySpan<byte> payload, ReadOnlySpan<int> fds = default)
    {
        Send(request, payload, fds, needReply: true);
        return BinaryPrimitives.ReadUInt64LittleEndian(ReadReply(request));
    }

    private static byte[] U64(ulong v)
    {
        var b = new byte[8];
        BinaryPrimitives.WriteUInt64LittleEndian(b, v);
        return b;
    }

    private static byte[] State(uint index, uint num)
    {
        var b = new byte[8];
        BinaryPrimitives.WriteUInt32LittleEndian(b, index);
        BinaryPrimitives.WriteUInt32LittleEndian(b.AsSpan(4), num);
        return b;
    }

    private static byte[] MemTable(params GuestRegion[] regions)
    {
        var b = new byte[8 + 32 * regions.Length];
        BinaryPrimitives.WriteUInt32LittleEndian(b, (uint)regions.Length);
        for (int i = 0; i < regions.Length; i++)
        {
            var r = b.AsSpan(8 + 32 * i);
            BinaryPrimitives.WriteUInt64LittleEndian(r, regions[i].GuestPhysicalAddress);
            BinaryPrimitives.WriteUInt64LittleEndian(r[8..], regions[i].Size);
            BinaryPrimitives.WriteUInt64LittleEndian(r[16..], regions[i].FrontEndAddress);
            BinaryPrimitives.WriteUInt64LittleEndian(r[24..], regions[i].MmapOffset);
        }
        return b;
    }

    private static byte[] VringAddr(uint index, VirtioMockDriver d)
    {
        var b = new byte[40];
        BinaryPrimitives.WriteUInt32LittleEndian(b, index);
        BinaryPrimitives.WriteUInt64LittleEndian(b.AsSpan(8), FrontEndBase + d.Desc.Value);
        BinaryPrimitives.WriteUInt64LittleEndian(b.AsSpan(16), FrontEndBase + d.Used.Value);
        BinaryPrimitives.WriteUInt64LittleEndian(b.AsSpan(24), FrontEndBase + d.Avail.Value);
        return b;
    }

    /// <summary>What QEMU does when the guest's driver starts: negotiate, pass memory, set up and start both queues.</summary>
    private void Handshake(ulong features = Features)
    {
        _frontEnd = Connect();
        Assert.True(_handler.Connected.Wait(5000));
        Send(VhostUserRequest.GetFeatures, []);
        Assert.Equal(VhostUserProtocol.OfferedFeatures, BinaryPrimitives.ReadUInt64LittleEndian(ReadReply(VhostUserRequest.GetFeatures)));
        Send(VhostUserRequest.GetProtocolFeatures, []);
        Assert.Equal(VhostUserProtocol.OfferedProtocolFeatures, BinaryPrimitives.ReadUInt64LittleEndian(ReadReply(VhostUserRequest.GetProtocolFeatures)));
        Send(VhostUserRequest.SetProtocolFeatures, U64(VhostUserProtocol.OfferedProtocolFeatures));
        Assert.Equal(0ul, Ack(VhostUserRequest.SetOwner, []));
        Assert.Equal(0ul, Ack(VhostUserRequest.SetFeatures, U64(features)));
        Assert.Equal(0ul, Ack(VhostUserRequest.SetMemTable, MemTable(new GuestRegion(0, MemSize, FrontEndBase, 0)), [_memfd]));
        var drivers = new[] { _rx, _tx };
        for (uint q = 0; q < 2; q++)
        {
            Assert.Equal(0ul, Ack(VhostUserRequest.SetVringNum, State(q, QueueSize)));
            Assert.Equal(0ul, Ack(VhostUserRequest.SetVringBase, State(q, 0)));
            Assert.Equal(0ul, Ack(VhostUserRequest.SetVringAddr, VringAddr(q, drivers[q])));
            Assert.Equal(0ul, Ack(VhostUserRequest.SetVringKick, U64(q), [_kick[q]]));
            Assert.Equal(0ul, Ack(VhostUserRequest.SetVringCall, U64(q), [_call[q]]));
            Assert.Equal(0ul, Ack(VhostUserRequest.SetVringEnable, State(q, 1)));
        }
    }

    private static bool WaitSignal(int eventFd)
    {
        var until = DateTime.UtcNow.AddSeconds(5);
        while (DateTime.UtcNow < until)
        {
            if (LibcVhost.DrainEventFd(eventFd)) return true;
            Thread.Sleep(1);
        }
        return false;
    }

    private static byte[] Frame(int length, byte seed)
    {
        var f = new byte[length];
        for (int i = 0; i < f.Length; i++) f[i] = (byte)(seed + i * 7);
        return f;
    }

    private void WriteGuest(ulong address, ReadOnlySpan<byte> data) => Assert.True(_memory.TryWrite(new GuestAddress(address), data));

    private byte[] ReadGuest(ulong address, int length)
    {
        var b = new byte[length];
        Assert.True(_memory.TryRead(new GuestAddress(address), b));
        return b;
    }

    /// <summary>The stack's side: borrows the transmit buffer on the owner thread, fills it and commits.</summary>
    private Task<(bool Taken, int SpaceAfter)> SendToGuest(byte[] frame) => _loop.InvokeAsync(() =>
    {
        var lease = _device.BeginTransmit(frame.Length);
        if (lease.IsEmpty) return (false, _device.TransmitSpace);
        frame.CopyTo(lease.Buffer);
        lease.Commit(frame.Length);
        return (true, _device.TransmitSpace);
    });

    private Task<long> Drops(DropReason reason) => _loop.InvokeAsync(() => _counters.Drops(reason));

    // ---- tests ---------------------------------------------------------------------------------------------------

    [Fact]
    public void Guest_frames_arrive_in_place_and_gathered_and_chains_are_returned_with_a_call()
    {
        Handshake();
        var one = Frame(60, 1);
        var two = Frame(1514, 2);
        WriteGuest(Buf(0), new byte[12]);
        WriteGuest(Buf(0) + 12, one);
        _tx.AddChain((Buf(0), 12 + 60, false)); // header and frame in one buffer
        WriteGuest(Buf(1), new byte[12]);
        WriteGuest(Buf(2), two.AsSpan(0, 1000));
        WriteGuest(Buf(3), two.AsSpan(1000));
        _tx.AddChain((Buf(1), 12, false), (Buf(2), 1000, false), (Buf(3), 514, false)); // scattered
        LibcVhost.SignalEventFd(_kick[1]);

        Assert.True(_handler.WaitFrames(2));
        Assert.True(_handler.Frames.TryDequeue(out var a));
        Assert.True(_handler.Frames.TryDequeue(out var b));
        Assert.Equal(one, a);
        Assert.Equal(two, b);
        Assert.True(WaitSignal(_call[1]));
        Assert.Equal(2, _tx.UsedIndex);
        Assert.Equal((0u, 0u), _tx.UsedElement(0));
        Assert.Equal((1u, 0u), _tx.UsedElement(1));
    }

    [Fact]
    public void The_stack_sees_a_copy_the_guest_cannot_change_while_it_is_parsed()
    {
        Handshake();
        var frame = Frame(60, 30);
        WriteGuest(Buf(0), new byte[12]);
        WriteGuest(Buf(0) + 12, frame);
        _tx.AddChain((Buf(0), 72, false)); // one buffer: header and frame together
        _handler.DuringFrame = () => WriteGuest(Buf(0) + 12, Enumerable.Repeat((byte)0xff, 60).ToArray());
        LibcVhost.SignalEventFd(_kick[1]);
        Assert.True(_handler.WaitFrames(1));
        Assert.True(_handler.Frames.TryDequeue(out var seen));
        Assert.Equal(frame, seen);
    }

    [Fact]
    public async Task A_frame_split_anywhere_is_gathered_and_too_short_or_too_long_ones_are_dropped()
    {
        Handshake();
        var frame = Frame(101, 20);
        var bytes = new byte[12].Concat(frame).ToArray();
        WriteGuest(Buf(0), bytes.AsSpan(0, 5));
        WriteGuest(Buf(1), bytes.AsSpan(5, 8)); // the header ends inside this buffer
        WriteGuest(Buf(2), bytes.AsSpan(13, 1));
        WriteGuest(Buf(3), bytes.AsSpan(14));
        _tx.AddChain((Buf(0), 5, false), (Buf(1), 8, false), (Buf(2), 1, false), (Buf(3), 99, false));
        _tx.AddChain((Buf(4), 12 + 13, false)); // shorter than an Ethernet header
        _tx.AddChain((0x100000, 40000, false), (0x200000, (uint)(VhostUserDevice.MaxFrameLength + 12 - 40000 + 1), false)); // one byte too long
        WriteGuest(Buf(5), new byte[12]);
        WriteGuest(Buf(5) + 12, Frame(60, 21));
        _tx.AddChain((Buf(5), 72, false));
        LibcVhost.SignalEventFd(_kick[1]);
        Assert.True(_handler.WaitFrames(2));
        Assert.True(_handler.Frames.TryDequeue(out var a));
        Assert.Equal(frame, a);
        Assert.True(_handler.Frames.TryDequeue(out var b));
        Assert.Equal(Frame(60, 21), b);
        Assert.Equal(1, await Drops(DropReason.FrameTooShort));
        Assert.Equal(1, await Drops(DropReason.FrameTooLong));
        Assert.True(WaitSignal(_call[1]));
        Assert.Equal(4, _tx.UsedIndex); // dropped frames' chains go back too
    }

    [Fact]
    public async Task Frames_to_the_guest_span_receive_buffers_with_num_buffers_and_wait_when_there_are_none()
    {
        Handshake();
        var frame = Frame(2500, 3);
        var (taken, _) = await SendToGuest(frame); // no receive buffers yet: the frame waits
        Assert.True(taken);
        Assert.Equal(0, _rx.UsedIndex);

        for (int i = 0; i < 4; i++) _rx.AddChain((Buf(10 + i), 1000, true));
        LibcVhost.SignalEventFd(_kick[0]);
        Assert.True(WaitSignal(_call[0]));
        Assert.Equal(3, _rx.UsedIndex);
        Assert.Equal((0u, 1000u), _rx.UsedElement(0));
        Assert.Equal((1u, 1000u), _rx.UsedElement(1));
        Assert.Equal((2u, 512u), _rx.UsedElement(2)); // 12 + 2500 = 2512
        var header = ReadGuest(Buf(10), 12);
        Assert.Equal(new byte[10], header[..10]); // no offloads: flags 0, GSO_NONE
        Assert.Equal(3, BinaryPrimitives.ReadUInt16LittleEndian(header.AsSpan(10))); // §5.1.6.4 num_buffers
        var got = ReadGuest(Buf(10) + 12, 988).Concat(ReadGuest(Buf(11), 1000)).Concat(ReadGuest(Buf(12), 512)).ToArray();
        Assert.Equal(frame, got);

        // The next frame goes straight into the remaining buffer; with interrupts suppressed there is no call.
        _rx.SetAvailFlags(SplitQueue.AvailFlagNoInterrupt);
        var small = Frame(100, 4);
        Assert.True((await SendToGuest(small)).Taken);
        Assert.Equal(4, _rx.UsedIndex);
        Assert.Equal((3u, 112u), _rx.UsedElement(3));
        Assert.Equal(small, ReadGuest(Buf(13) + 12, 100));
        await _loop.InvokeAsync(() => 0); // one more loop batch has run
        Assert.False(LibcVhost.DrainEventFd(_call[0]));
    }

    [Fact]
    public async Task Without_mergeable_buffers_a_frame_needs_one_buffer_and_a_too_small_one_is_counted()
    {
        Handshake(Features & ~(1ul << VhostUserProtocol.VirtioNetFMrgRxbuf));
        _rx.AddChain((Buf(10), 500, true)); // too small for the first frame
        _rx.AddChain((Buf(11), 300, true), (Buf(12), 1000, true)); // one chain of two buffers: enough
        var big = Frame(1000, 13);
        Assert.True((await SendToGuest(big)).Taken);
        Assert.True((await SendToGuest(big)).Taken);
        Assert.True(WaitSignal(_call[0]));
        Assert.Equal(2, _rx.UsedIndex);
        Assert.Equal((0u, 0u), _rx.UsedElement(0)); // returned unused, its frame dropped
        Assert.Equal(1, await Drops(DropReason.VirtioBufferTooSmall));
        Assert.Equal((1u, 1012u), _rx.UsedElement(1));
        Assert.Equal(1, BinaryPrimitives.ReadUInt16LittleEndian(ReadGuest(Buf(11) + 10, 2))); // VERSION_1 header: num_buffers 1
        Assert.Equal(big, ReadGuest(Buf(11) + 12, 288).Concat(ReadGuest(Buf(12), 712)).ToArray());
    }

    [Fact]
    public async Task A_full_transmit_buffer_pushes_back_until_the_guest_posts_buffers()
    {
        Handshake();
        var frame = Frame(65000, 5);
        int accepted = 0;
        while ((await SendToGuest(frame)).Taken) accepted++;
        Assert.InRange(accepted, 20, 40); // bounded: 2 MiB of frames
        Assert.True(await _loop.InvokeAsync(() => _device.TransmitSpace) < 65004);
        Assert.Equal(0, _handler.TransmitReady);

        // 32 buffers of 64 KiB: the engine can drain more than half its queue, then asks the stack for more.
        for (int i = 0; i < 32; i++) _rx.AddChain((0x100000 + (ulong)i * 0x10000, 0x10000, true));
        LibcVhost.SignalEventFd(_kick[0]);
        Assert.True(WaitSignal(_call[0]));
        Assert.True(_handler.TransmitReadyEvent.Wait(5000));
        Assert.True(_rx.UsedIndex >= accepted / 2);
        Assert.Equal((0u, 65012u), _rx.UsedElement(0)); // one buffer holds header and frame
        Assert.Equal(1, BinaryPrimitives.ReadUInt16LittleEndian(ReadGuest(0x100000 + 10, 2)));
        Assert.Equal(frame, ReadGuest(0x100000 + 12, 65000));
    }

    [Fact]
    public async Task Malformed_requests_are_refused_and_counted_without_ending_the_session()
    {
        Handshake();
        Assert.NotEqual(0ul, Ack(VhostUserRequest.SetFeatures, [1, 2, 3, 4])); // truncated payload
        Assert.NotEqual(0ul, Ack(VhostUserRequest.SetFeatures, U64(Features | (1ul << VhostUserProtocol.VirtioNetFHostEcn)))); // VIRTIO_NET_F_HOST_ECN was not offered
        Assert.NotEqual(0ul, Ack(VhostUserRequest.SetVringNum, State(0, 100))); // §2.7: not a power of 2
        Assert.NotEqual(0ul, Ack(VhostUserRequest.SetVringNum, State(7, 64))); // no such queue
        Assert.NotEqual(0ul, Ack(VhostUserRequest.SetVringAddr, new byte[39]));
        Assert.NotEqual(0ul, Ack(VhostUserRequest.SetMemTable, MemTable(new GuestRegion(0, MemSize, FrontEndBase, 0)))); // region without its fd
        Assert.NotEqual(0ul, Ack(VhostUserRequest.SetMemTable, MemTable(new GuestRegion(0, MemSize, FrontEndBase, 0)), [_memfd, _memfd])); // two fds
        Assert.NotEqual(0ul, Ack(VhostUserRequest.SetMemTable, MemTable(new GuestRegion(0, 0, FrontEndBase, 0)), [_memfd])); // empty region
        Assert.NotEqual(0ul, Ack(VhostUserRequest.SetMemTable, MemTable(new GuestRegion(0, MemSize, FrontEndBase, 0), new GuestRegion(0x1000, MemSize, 0, 0)), [_memfd, _memfd])); // overlap
        Assert.NotEqual(0ul, Ack(VhostUserRequest.SetMemTable, MemTable(new GuestRegion(0, MemSize * 2, FrontEndBase, 0)), [_memfd])); // larger than its file
        Assert.NotEqual(0ul, Ack(VhostUserRequest.SetMemTable, MemTable(new GuestRegion(0, MemSize, FrontEndBase, 0)), [_kick[0]])); // not a file
        Assert.NotEqual(0ul, Ack(VhostUserRequest.SetVringKick, U64(1))); // an fd promised, none sent
        Assert.NotEqual(0ul, Ack(VhostUserRequest.SetVringKick, U64(0), [_memfd])); // a kick fd epoll cannot watch
        Assert.NotEqual(0ul, Ack(VhostUserRequest.SetVringKick, U64(1 | VhostUserProtocol.VringNoFd))); // polling mode
        Assert.NotEqual(0ul, Ack(VhostUserRequest.SetVringCall, U64(1 | VhostUserProtocol.VringNoFd), [_call[1]])); // no-fd flag with an fd
        Assert.NotEqual(0ul, Ack((VhostUserRequest)99, U64(0))); // unknown request
        Assert.Equal(16, await Drops(DropReason.DeviceProtocolError));

        // Still serving once the front-end sets the queues up again.
        Assert.Equal(0ul, Ack(VhostUserRequest.SetVringKick, U64(0), [_kick[0]]));
        Assert.Equal(0ul, Ack(VhostUserRequest.SetVringKick, U64(1), [_kick[1]]));
        WriteGuest(Buf(0), new byte[12]);
        WriteGuest(Buf(0) + 12, Frame(60, 6));
        _tx.AddChain((Buf(0), 72, false));
        LibcVhost.SignalEventFd(_kick[1]);
        Assert.True(_handler.WaitFrames(1));
    }

    [Fact]
    public async Task An_oversized_message_ends_the_session_and_the_device_listens_again()
    {
        Handshake();
        Send(VhostUserRequest.SetFeatures, U64(0), size: 1 << 20); // header claims a megabyte
        Assert.True(_handler.Disconnected.Wait(5000));
        // The device closed its end (a reset, as the claimed payload was left unread).
        int n = _frontEnd!.Receive(new byte[1], 0, 1, SocketFlags.None, out var error);
        Assert.True(n == 0 && error is SocketError.Success or SocketError.ConnectionReset, $"receive {n} {error}");
        Assert.False(await _loop.InvokeAsync(() => _device.IsConnected));
        Assert.True((await _loop.InvokeAsync(() => _device.TransmitSpace)) == 0);

        _handler.Connected.Reset();
        _frontEnd.Dispose();
        Handshake(); // a new front-end gets a fresh device
        WriteGuest(Buf(0), new byte[12]);
        WriteGuest(Buf(0) + 12, Frame(60, 7));
        _tx.AddChain((Buf(0), 72, false));
        LibcVhost.SignalEventFd(_kick[1]);
        Assert.True(_handler.WaitFrames(1));
    }

    [Fact]
    public async Task A_front_end_that_goes_away_resets_the_device_and_the_stack()
    {
        Handshake();
        Assert.True(await _loop.InvokeAsync(() => _device.IsConnected));
        Assert.True((await SendToGuest(Frame(100, 8))).Taken); // waits: no receive buffers
        _frontEnd!.Dispose();
        Assert.True(_handler.Disconnected.Wait(5000));
        Assert.False(await _loop.InvokeAsync(() => _device.IsConnected));
        Assert.False((await SendToGuest(Frame(100, 9))).Taken);
    }

    [Fact]
    public void Get_vring_base_stops_the_ring_where_the_device_stopped()
    {
        Handshake();
        for (int i = 0; i < 3; i++)
        {
            WriteGuest(Buf(i), new byte[12]);
            WriteGuest(Buf(i) + 12, Frame(60, (byte)i));
            _tx.AddChain((Buf(i), 72, false));
        }
        LibcVhost.SignalEventFd(_kick[1]);
        Assert.True(_handler.WaitFrames(3));
        Send(VhostUserRequest.GetVringBase, State(1, 0));
        Assert.Equal(State(1, 3), ReadReply(VhostUserRequest.GetVringBase));

        // Stopped: a kick on the old eventfd does nothing.
        WriteGuest(Buf(5), new byte[12]);
        WriteGuest(Buf(5) + 12, Frame(60, 9));
        _tx.AddChain((Buf(5), 72, false));
        LibcVhost.SignalEventFd(_kick[1]);
        Send(VhostUserRequest.GetFeatures, []);
        ReadReply(VhostUserRequest.GetFeatures); // the device has handled everything sent before
        Assert.False(_handler.WaitFrames(1, TimeSpan.FromMilliseconds(200)));

        // Restarted from the base it reported (as after a guest driver reset): the waiting chain is served.
        Assert.Equal(0ul, Ack(VhostUserRequest.SetVringBase, State(1, 3)));
        Assert.Equal(0ul, Ack(VhostUserRequest.SetVringAddr, VringAddr(1, _tx)));
        Assert.Equal(0ul, Ack(VhostUserRequest.SetVringKick, U64(1), [_kick[1]]));
        Assert.Equal(0ul, Ack(VhostUserRequest.SetVringCall, U64(1), [_call[1]]));
        Assert.True(_handler.WaitFrames(1));
        Assert.Equal(4, _tx.UsedIndex);
    }

    [Fact]
    public async Task Hostile_rings_drop_frames_or_stop_the_queue_and_are_counted()
    {
        Handshake();
        // A descriptor loop: the chain goes back unused and its frame is dropped.
        _tx.SetDescriptor(0, Buf(0), 72, VirtioMockDriver.Next, 1);
        _tx.SetDescriptor(1, Buf(1), 72, VirtioMockDriver.Next, 0);
        _tx.Publish(0);
        // A buffer outside guest memory.
        _tx.SetDescriptor(2, MemSize - 10, 72, 0);
        _tx.Publish(2);
        // A device-writable transmit buffer.
        _tx.SetDescriptor(3, Buf(3), 72, VirtioMockDriver.Write);
        _tx.Publish(3);
        // A good one after them.
        WriteGuest(Buf(4), new byte[12]);
        WriteGuest(Buf(4) + 12, Frame(60, 10));
        _tx.SetDescriptor(4, Buf(4), 72, 0);
        _tx.Publish(4);
        LibcVhost.SignalEventFd(_kick[1]);
        Assert.True(_handler.WaitFrames(1));
        Assert.True(WaitSignal(_call[1]));
        Assert.Equal(4, _tx.UsedIndex);
        Assert.Equal(3, await Drops(DropReason.VirtqueueMalformed));

        // A head index beyond the queue: the ring is broken, the queue stops until the front-end restarts it.
        _tx.Publish(QueueSize + 3);
        WriteGuest(Buf(5), new byte[12]);
        WriteGuest(Buf(5) + 12, Frame(60, 11));
        _tx.SetDescriptor(5, Buf(5), 72, 0);
        _tx.Publish(5);
        LibcVhost.SignalEventFd(_kick[1]);
        var until = DateTime.UtcNow.AddSeconds(5);
        while (await Drops(DropReason.VirtqueueMalformed) < 4 && DateTime.UtcNow < until) await Task.Delay(5);
        Assert.Equal(4, await Drops(DropReason.VirtqueueMalformed));
        Assert.Equal(4, _tx.UsedIndex);
        Assert.Empty(_handler.Frames.Skip(1));

        // A receive chain that is device-readable stops the receive queue too; nothing is written to the guest.
        _rx.AddChain((Buf(20), 2000, false));
        Assert.True((await SendToGuest(Frame(100, 12))).Taken);
        Assert.Equal(5, await Drops(DropReason.VirtqueueMalformed));
        Assert.Equal(0, _rx.UsedIndex);
    }

    private sealed class RecordingHandler : IFrameHandler
    {
        public readonly ConcurrentQueue<byte[]> Frames = new();
        public readonly ManualResetEventSlim Connected = new();
        public readonly ManualResetEventSlim Disconnected = new();
        public readonly ManualResetEventSlim TransmitReadyEvent = new();
        public int TransmitReady;
        private readonly SemaphoreSlim _frames = new(0);

        /// <summary>Runs while the stack holds the frame (a guest rewriting its buffer meanwhile).</summary>
        public Action? DuringFrame;

        public void OnFrame(ReadOnlySpan<byte> frame)
        {
            DuringFrame?.Invoke();
            Frames.Enqueue(frame.ToArray());
            _frames.Release();
        }

        public bool WaitFrames(int n, TimeSpan? timeout = null)
        {
            for (int i = 0; i < n; i++)
                if (!_frames.Wait(timeout ?? TimeSpan.FromSeconds(5))) return false;
            return true;
        }

        public void OnDeviceConnected() => Connected.Set();
        public void OnDeviceDisconnected() => Disconnected.Set();

        public void OnTransmitReady()
        {
            Interlocked.Increment(ref TransmitReady);
            TransmitReadyEvent.Set();
        }
    }
}
