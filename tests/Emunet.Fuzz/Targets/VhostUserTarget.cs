using System.Buffers.Binary;
using System.Net.Sockets;
using System.Runtime.InteropServices;
using Emunet.Engine.Devices;
using Emunet.Engine.Devices.VhostUser;
using Emunet.Engine.Diagnostics;
using Emunet.Engine.Interop;
using Emunet.Engine.Link;
using Emunet.Engine.Runtime;
using Microsoft.Extensions.Logging.Abstractions;

namespace Emunet.Fuzz.Targets;

/// <summary>
/// The <c>vhost-user</c> target: front-end messages into the vhost-user session (the class that handles one
/// request) and the virtio-net data path it feeds, over one end of a socketpair held by an <see cref="EmulatorLink"/>,
/// as the device wires them. Input:
/// <code>
/// [memory length: 2, little-endian][guest memory image]     the first bytes of the guest's RAM (a memfd)
/// then records: [action: 1][length: 2, little-endian][bytes sent on the socket as they are]
/// </code>
/// Action bits: <see cref="SendMemory"/> and <see cref="SendEventFd"/> attach those descriptors to the bytes;
/// <see cref="KickRx"/> / <see cref="KickTx"/> kick a queue afterwards; <see cref="FrameToGuest"/> makes the bytes a frame
/// the data path delivers into the receive queue instead of a message. When the session ends the connection, the next record comes on a new one.
/// </summary>
internal static class VhostUserTarget
{
    public const byte SendMemory = 1, SendEventFd = 2, SendSecondEventFd = 4, KickRx = 8, KickTx = 16, FrameToGuest = 32;
    public const int MemorySize = 0x100000;
    public const int MaxRecords = 64;

    public static void Run(ReadOnlySpan<byte> input)
    {
        if (input.Length < 2) return;
        int imageLength = Math.Min(BinaryPrimitives.ReadUInt16LittleEndian(input), input.Length - 2);
        using var rig = new VhostUserRig(input.Slice(2, imageLength));
        input = input[(2 + imageLength)..];
        for (int n = 0; n < MaxRecords && input.Length >= 3; n++)
        {
            byte action = input[0];
            int length = Math.Min(BinaryPrimitives.ReadUInt16LittleEndian(input[1..]), input.Length - 3);
            rig.Send(input.Slice(3, length), action);
            input = input[(3 + length)..];
        }
    }

    /// <summary>One record of a <c>vhost-user</c> input (the seed writer uses it).</summary>
    public static byte[] Record(byte action, ReadOnlySpan<byte> bytes)
    {
        var record = new byte[3 + bytes.Length];
        record[0] = action;
        BinaryPrimitives.WriteUInt16LittleEndian(record.AsSpan(1), (ushort)bytes.Length);
        bytes.CopyTo(record.AsSpan(3));
        return record;
    }

    /// <summary>
    /// The session and data path over a socketpair, driven on the calling thread: after each record the connection is
    /// reported readable, as the loop would, and the replies are read back and checked.
    /// </summary>
    private sealed class VhostUserRig : IEmulatorConnectionHandler, IVringHandler, IFrameDevice, IFrameHandler, IDisposable
    {
        private readonly EventLoop _loop = new();
        private readonly Counters _counters = new();
        private readonly EmulatorLink _link;
        private readonly VhostUserSession _session;
        private readonly VirtioNetQueues _queues;
        private readonly int _memfd;
        private readonly byte[] _replies = new byte[64 * 1024];
        private readonly FrontEnd _source = new();

        public VhostUserRig(ReadOnlySpan<byte> image)
        {
            _link = new EmulatorLink(_loop, _source, "vhost-user front-end", _counters, NullLogger.Instance, this);
            _session = new VhostUserSession(_loop, _link, _counters, NullLogger.Instance, Description, this);
            _queues = new VirtioNetQueues(_session, this, _counters) { Handler = this };
            _memfd = LibcVhost.memfd_create("emunet-fuzz-guest", LibcVhost.MFD_CLOEXEC);
            if (_memfd < 0 || LibcVhost.ftruncate(_memfd, MemorySize) != 0) throw new InvalidOperationException("memfd for guest memory failed");
            using (var file = new FileStream(new Microsoft.Win32.SafeHandles.SafeFileHandle(LibcVhost.dup(_memfd), ownsHandle: true), FileAccess.Write))
                file.Write(image[..Math.Min(image.Length, MemorySize)]);
            _link.Start();
        }

        public string Description => "vhost-user:fuzz";

        public void Send(ReadOnlySpan<byte> bytes, byte action)
        {
            if (_source.Socket is null) _link.Start(); // the session ended the last connection: the front-end reconnects
            Span<int> fds = stackalloc int[3];
            int count = 0;
            if ((action & SendMemory) != 0) fds[count++] = _memfd;
            if ((action & SendEventFd) != 0) fds[count++] = Libc.eventfd(0, Libc.EFD_NONBLOCK | Libc.EFD_CLOEXEC);
            if ((action & SendSecondEventFd) != 0) fds[count++] = Libc.eventfd(0, Libc.EFD_NONBLOCK | Libc.EFD_CLOEXEC);
            // A record without bytes cannot carry descriptors (SCM_RIGHTS needs data); the bytes of a frame for the
            // guest are that frame, not a message.
            if (!bytes.IsEmpty && (action & FrameToGuest) == 0) LibcVhost.SendWithFds((int)_source.Socket!.Handle, bytes, fds[..count]);
            for (int i = 0; i < count; i++) if (fds[i] != _memfd) Libc.close(fds[i]);
            _link.OnPoll(Libc.EPOLLIN);
            if ((action & KickRx) != 0) Kick(VhostUserProtocol.RxQueue);
            if ((action & KickTx) != 0) Kick(VhostUserProtocol.TxQueue);
            if ((action & FrameToGuest) != 0 && _link.IsConnected)
            {
                var lease = _queues.BeginTransmit(bytes.Length);
                if (!lease.IsEmpty)
                {
                    bytes.CopyTo(lease.Buffer);
                    lease.Commit(bytes.Length);
                }
            }
            _queues.OnEndOfBatch();
            CheckReplies();
        }

        private void Kick(int queue)
        {
            var vring = _session.Vrings[queue];
            if (vring.KickFd >= 0) LibcVhost.SignalEventFd(vring.KickFd);
            if (vring.Running) vring.OnPoll(Libc.EPOLLIN);
        }

        /// <summary>Every reply is a whole vhost-user message: version 1 with the REPLY flag and a small payload.</summary>
        private void CheckReplies()
        {
            if (_source.Socket is not { } frontEnd) return;
            int n = frontEnd.Receive(_replies, SocketFlags.None, out var error);
            if (error == SocketError.WouldBlock || n <= 0) return;
            var replies = _replies.AsSpan(0, n);
            while (!replies.IsEmpty)
            {
                if (replies.Length < VhostUserProtocol.HeaderSize) throw new FuzzInvariantException("A reply ends inside its header.");
                uint flags = BinaryPrimitives.ReadUInt32LittleEndian(replies[4..]);
                uint size = BinaryPrimitives.ReadUInt32LittleEndian(replies[8..]);
                if (flags != (VhostUserProtocol.Version | VhostUserProtocol.FlagReply) || size > 64 || replies.Length < VhostUserProtocol.HeaderSize + size)
                    throw new FuzzInvariantException($"A malformed reply (flags 0x{flags:x}, size {size}).");
                replies = replies[(VhostUserProtocol.HeaderSize + (int)size)..];
            }
        }

        // ---- the device's wiring (as VhostUserDevice does it) ----

        void IEmulatorConnectionHandler.OnAttached(Socket connection) { }
        void IEmulatorConnectionHandler.OnConnectionEvents(uint events) => _session.OnReadable();
        void IEmulatorConnectionHandler.OnDetached(string why)
        {
            _session.Reset();
            _queues.Reset();
        }
        void IVringHandler.OnRingReady(Vring vring) => _queues.OnRingReady(vring);
        bool IFrameDevice.IsConnected => _link.IsConnected;
        int IFrameDevice.TransmitSpace => _queues.TransmitSpace;
        TransmitLease IFrameDevice.BeginTransmit(int maxLength) => _queues.BeginTransmit(maxLength);
        void IFrameDevice.CommitTransmit(int token, int length) => _queues.CommitTransmit(token, length);

        // ---- frames from the guest ----

        public void OnFrame(ReadOnlySpan<byte> frame)
        {
            if (frame.Length > LinkLimits.MaxFrameLength) throw new FuzzInvariantException($"A {frame.Length}-byte frame came out of the transmit queue.");
        }
        public void OnDeviceConnected() { }
        public void OnDeviceDisconnected() { }
        public void OnTransmitReady() { }

        public void Dispose()
        {
            _link.Dispose();
            Libc.close(_memfd);
            _loop.Dispose();
        }
    }
    /// <summary>The front-end's side: each connection is a fresh socketpair, whose other end the link takes.</summary>
    private sealed class FrontEnd : IEmulatorSource
    {
        public Socket? Socket { get; private set; }

        public string Description => "socketpair";

        public void Start(EmulatorLink link)
        {
            int[] pair = new int[2];
            if (socketpair(1 /* AF_UNIX */, 1 /* SOCK_STREAM */ | 0x80000 /* SOCK_CLOEXEC */, 0, pair) != 0)
                throw new InvalidOperationException($"socketpair failed: errno {Marshal.GetLastPInvokeError()}");
            Socket = new Socket(new SafeSocketHandle(pair[0], ownsHandle: true)) { Blocking = false };
            link.Offer(new Socket(new SafeSocketHandle(pair[1], ownsHandle: true)));
        }

        public void OnConnectionClosed() => Dispose();

        public void Dispose()
        {
            Socket?.Dispose();
            Socket = null;
        }

        [DllImport("libc", SetLastError = true)]
        private static extern int socketpair(int domain, int type, int protocol, int[] sv);
    }
}
