using System.Runtime.InteropServices;

namespace Emunet.Engine.Interop;

/// <summary>The few libc calls .NET does not expose: epoll and eventfd for the engine loop, the open-file limit and a descriptor probe.</summary>
internal static unsafe partial class Libc
{
    public const int EPOLL_CLOEXEC = 0x80000;
    public const int EPOLL_CTL_ADD = 1;
    public const int EPOLL_CTL_DEL = 2;
    public const int EPOLL_CTL_MOD = 3;
    public const uint EPOLLIN = 0x001;
    public const uint EPOLLPRI = 0x002;
    public const uint EPOLLOUT = 0x004;
    public const uint EPOLLERR = 0x008;
    public const uint EPOLLHUP = 0x010;
    public const uint EPOLLRDHUP = 0x2000;
    public const int EFD_CLOEXEC = 0x80000;
    public const int EFD_NONBLOCK = 0x800;
    public const int EINTR = 4;
    public const int EAGAIN = 11;

    [LibraryImport("libc", SetLastError = true)]
    public static partial int epoll_create1(int flags);

    public const int RLIMIT_NOFILE = 7;

    /// <summary>struct rlimit { rlim_t rlim_cur, rlim_max; } (64-bit Linux).</summary>
    [LibraryImport("libc", SetLastError = true)]
    public static partial int getrlimit(int resource, ulong* limits);

    /// <summary>The soft limit on open file descriptors (RLIMIT_NOFILE), or null when it cannot be read or is unlimited.</summary>
    public static long? OpenFileLimit()
    {
        ulong* limits = stackalloc ulong[2];
        if (getrlimit(RLIMIT_NOFILE, limits) != 0 || limits[0] >= int.MaxValue) return null;
        return (long)limits[0];
    }

    public const int F_DUPFD_CLOEXEC = 1030;
    public const int EMFILE = 24;
    public const int ENFILE = 23;

    /// <summary>fcntl(fd, cmd, int): here F_DUPFD_CLOEXEC, which takes the lowest free descriptor as accept(2) would.</summary>
    [LibraryImport("libc", SetLastError = true)]
    public static partial int fcntl(int fd, int cmd, int arg);

    [LibraryImport("libc", SetLastError = true)]
    public static partial int epoll_ctl(int epfd, int op, int fd, byte* ev);

    [LibraryImport("libc", SetLastError = true)]
    public static partial int epoll_wait(int epfd, byte* events, int maxevents, int timeout);

    [LibraryImport("libc", SetLastError = true)]
    public static partial int eventfd(uint initval, int flags);

    [LibraryImport("libc", SetLastError = true)]
    public static partial nint read(int fd, byte* buf, nint count);

    [LibraryImport("libc", SetLastError = true)]
    public static partial nint write(int fd, byte* buf, nint count);

    [LibraryImport("libc", SetLastError = true)]
    public static partial int close(int fd);

    [LibraryImport("libc", SetLastError = true, StringMarshalling = StringMarshalling.Utf8)]
    private static partial int lstat(string path, byte* buf);

    private const uint S_IFMT = 0xf000;
    private const uint S_IFSOCK = 0xc000;

    /// <summary>True when <paramref name="path"/> is a Unix socket (not following symlinks).</summary>
    public static bool IsSocket(string path)
    {
        byte* buf = stackalloc byte[256];
        if (lstat(path, buf) != 0) return false;
        // st_mode: offset 24 in x86_64's struct stat, 16 in the generic (arm64) layout.
        uint mode = *(uint*)(buf + (RuntimeInformation.ProcessArchitecture == Architecture.X64 ? 24 : 16));
        return (mode & S_IFMT) == S_IFSOCK;
    }

    /// <summary>
    /// struct epoll_event is packed (12 bytes) on x86_64 and naturally aligned (16 bytes) elsewhere.
    /// </summary>
    public static readonly int EpollEventSize = RuntimeInformation.ProcessArchitecture == Architecture.X64 ? 12 : 16;

    public static void WriteEpollEvent(byte* p, uint events, ulong data)
    {
        *(uint*)p = events;
        *(ulong*)(p + (EpollEventSize == 12 ? 4 : 8)) = data;
    }

    public static void ReadEpollEvent(byte* p, out uint events, out ulong data)
    {
        events = *(uint*)p;
        data = *(ulong*)(p + (EpollEventSize == 12 ? 4 : 8));
    }
}
