using System.Runtime.InteropServices;

namespace Emunet.Engine.Interop;

/// <summary>
/// The libc calls the vhost-user device needs: recvmsg/sendmsg with SCM_RIGHTS (the front-end passes memory and
/// eventfd file descriptors), mmap/munmap of the guest's shared memory, memfd for tests, and eventfd reads/writes.
/// Layouts are the LP64 Linux ones (x86_64 and arm64 agree on msghdr, iovec and cmsghdr).
/// </summary>
internal static unsafe partial class LibcVhost
{
    public const int SOL_SOCKET = 1;
    public const int SCM_RIGHTS = 1;
    public const int MSG_DONTWAIT = 0x40;
    public const int MSG_CTRUNC = 0x8;
    public const int MSG_NOSIGNAL = 0x4000;
    public const int MSG_CMSG_CLOEXEC = 0x40000000;
    public const int PROT_READ = 1;
    public const int PROT_WRITE = 2;
    public const int MAP_SHARED = 1;
    public const int MAP_PRIVATE = 2;
    public const int MAP_ANONYMOUS = 0x20;
    public const int MAP_NORESERVE = 0x4000;
    public const int MFD_CLOEXEC = 1;
    public const int EBADF = 9;
    public static readonly nint MapFailed = -1;

    /// <summary>The most descriptors one vhost-user message carries (VHOST_MEMORY_BASELINE_NREGIONS).</summary>
    public const int MaxFds = 8;

    [StructLayout(LayoutKind.Sequential)]
    private struct IoVec
    {
        public byte* Base;
        public nint Length;
    }

    [StructLayout(LayoutKind.Sequential)]
    private struct MsgHdr
    {
        public void* Name;
        public uint NameLength;
        public IoVec* Iov;
        public nint IovLength;
        public void* Control;
        public nint ControlLength;
        public int Flags;
    }

    private const int CmsgHeaderSize = 16; // size_t len, int level, int type
    private const int ControlSize = CmsgHeaderSize + MaxFds * 4; // CMSG_SPACE(8 * sizeof(int)), already 8-aligned

    [LibraryImport("libc", SetLastError = true)]
    private static partial nint recvmsg(int fd, MsgHdr* msg, int flags);

    [LibraryImport("libc", SetLastError = true)]
    private static partial nint sendmsg(int fd, MsgHdr* msg, int flags);

    [LibraryImport("libc", SetLastError = true)]
    public static partial nint mmap(nint addr, nint length, int prot, int flags, int fd, long offset);

    [LibraryImport("libc", SetLastError = true)]
    public static partial int munmap(nint addr, nint length);

    [LibraryImport("libc", SetLastError = true, StringMarshalling = StringMarshalling.Utf8)]
    public static partial int memfd_create(string name, uint flags);

    [LibraryImport("libc", SetLastError = true)]
    public static partial int ftruncate(int fd, long length);

    [LibraryImport("libc", SetLastError = true)]
    public static partial int dup(int fd);

    /// <summary>
    /// Receives up to <paramref name="buffer"/>.Length bytes and any SCM_RIGHTS descriptors that come with them (at most
    /// <see cref="MaxFds"/>, appended to <paramref name="fds"/> from <paramref name="fdCount"/>; descriptors beyond the
    /// room are closed). Returns bytes read, 0 at end of stream, or -errno. <paramref name="truncated"/> is set when the
    /// kernel dropped descriptors (MSG_CTRUNC).
    /// </summary>
    public static nint ReceiveWithFds(int socket, Span<byte> buffer, Span<int> fds, ref int fdCount, out bool truncated)
    {
        byte* control = stackalloc byte[ControlSize];
        truncated = false;
        fixed (byte* b = buffer)
        {
            var iov = new IoVec { Base = b, Length = buffer.Length };
            var msg = new MsgHdr { Iov = &iov, IovLength = 1, Control = control, ControlLength = ControlSize };
            nint n = recvmsg(socket, &msg, MSG_DONTWAIT | MSG_CMSG_CLOEXEC);
            if (n < 0) return -Marshal.GetLastPInvokeError();
            truncated = (msg.Flags & MSG_CTRUNC) != 0;
            // Walk the control messages the kernel wrote (msg.ControlLength is what it filled in).
            nint offset = 0;
            while (offset + CmsgHeaderSize <= msg.ControlLength)
            {
                nint len = *(nint*)(control + offset);
                int level = *(int*)(control + offset + 8);
                int type = *(int*)(control + offset + 12);
                if (len < CmsgHeaderSize || offset + len > msg.ControlLength) break;
                if (level == SOL_SOCKET && type == SCM_RIGHTS)
                {
                    int count = (int)((len - CmsgHeaderSize) / 4);
                    for (int i = 0; i < count; i++)
                    {
                        int fd = *(int*)(control + offset + CmsgHeaderSize + i * 4);
                        if (fdCount < fds.Length) fds[fdCount++] = fd;
                        else { Libc.close(fd); truncated = true; }
                    }
                }
                offset += (len + 7) & ~7;
            }
            return n;
        }
    }

    /// <summary>Sends <paramref name="data"/> with <paramref name="fds"/> attached (SCM_RIGHTS). Returns bytes sent or -errno.</summary>
    public static nint SendWithFds(int socket, ReadOnlySpan<byte> data, ReadOnlySpan<int> fds)
    {
        if (fds.Length > MaxFds) return -22; // EINVAL
        byte* control = stackalloc byte[ControlSize];
        fixed (byte* b = data)
        {
            var iov = new IoVec { Base = b, Length = data.Length };
            var msg = new MsgHdr { Iov = &iov, IovLength = 1 };
            if (fds.Length > 0)
            {
                int len = CmsgHeaderSize + fds.Length * 4;
                *(nint*)control = len;
                *(int*)(control + 8) = SOL_SOCKET;
                *(int*)(control + 12) = SCM_RIGHTS;
                for (int i = 0; i < fds.Length; i++) *(int*)(control + CmsgHeaderSize + i * 4) = fds[i];
                msg.Control = control;
                msg.ControlLength = (len + 7) & ~7;
            }
            nint n = sendmsg(socket, &msg, MSG_NOSIGNAL);
            return n < 0 ? -Marshal.GetLastPInvokeError() : n;
        }
    }

    [LibraryImport("libc", SetLastError = true)]
    private static partial int fstat(int fd, byte* buf);

    private const uint S_IFMT = 0xf000;
    private const uint S_IFREG = 0x8000;

    /// <summary>
    /// The size of the regular file (or memfd) behind <paramref name="fd"/>; false when fstat fails or it is not a regular file.
    /// </summary>
    public static bool TryGetRegularFileSize(int fd, out long size)
    {
        byte* buf = stackalloc byte[256];
        size = 0;
        if (fstat(fd, buf) != 0) return false;
        // st_mode: offset 24 in x86_64's struct stat, 16 in the generic (arm64) layout; st_size is at 48 in both.
        uint mode = *(uint*)(buf + (RuntimeInformation.ProcessArchitecture == Architecture.X64 ? 24 : 16));
        size = *(long*)(buf + 48);
        return (mode & S_IFMT) == S_IFREG;
    }

    /// <summary>Reads and clears an eventfd counter; false when it was zero (EAGAIN) or the read failed.</summary>
    public static bool DrainEventFd(int fd)
    {
        ulong value;
        return Libc.read(fd, (byte*)&value, 8) == 8;
    }

    /// <summary>Adds one to an eventfd counter (signals the other side).</summary>
    public static bool SignalEventFd(int fd)
    {
        ulong one = 1;
        return Libc.write(fd, (byte*)&one, 8) == 8;
    }
}
