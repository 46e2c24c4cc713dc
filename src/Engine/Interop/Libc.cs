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

    public const int EINPROGRESS = 115;
    private const ushort AF_INET = 2, AF_INET6 = 10;

    [LibraryImport("libc", SetLastError = true)]
    private static partial int connect(int fd, byte* addr, int addrlen);

    /// <summary>
    /// connect(2) on a non-blocking socket, the address built on the stack: 0 when connected at once, else the errno
    /// (<see cref="EINPROGRESS"/> while pending). Socket.Connect reports the pending case, the usual one, by throwing
    /// a SocketException: about 0.8 KB and several microseconds per guest connection.
    /// </summary>
    public static int ConnectNonBlocking(int fd, System.Net.IPAddress address, int port)
    {
        byte* sa = stackalloc byte[28]; // sockaddr_in6, the larger of the two
        new Span<byte>(sa, 28).Clear();
        sa[2] = (byte)(port >> 8); // sin_port / sin6_port, network order
        sa[3] = (byte)port;
        int length;
        if (address.AddressFamily == System.Net.Sockets.AddressFamily.InterNetwork)
        {
            *(ushort*)sa = AF_INET;
            address.TryWriteBytes(new Span<byte>(sa + 4, 4), out _);
            length = 16;
        }
        else
        {
            *(ushort*)sa = AF_INET6;
            address.TryWriteBytes(new Span<byte>(sa + 8, 16), out _);
            *(uint*)(sa + 24) = (uint)address.ScopeId;
            length = 28;
        }
        return connect(fd, sa, length) == 0 ? 0 : Marshal.GetLastPInvokeError();
    }

    [LibraryImport("libc", SetLastError = true)]
    private static partial int getsockname(int fd, byte* addr, int* addrlen);

    /// <summary>
    /// The local address of an IPv4 or IPv6 socket (getsockname(2)), or null. For sockets connected by
    /// <see cref="ConnectNonBlocking"/>, whose Socket object never learns that it was bound.
    /// </summary>
    public static System.Net.IPEndPoint? LocalEndPoint(int fd)
    {
        byte* sa = stackalloc byte[28];
        int length = 28;
        if (getsockname(fd, sa, &length) != 0) return null;
        int port = sa[2] << 8 | sa[3];
        return *(ushort*)sa switch
        {
            AF_INET when length >= 16 => new System.Net.IPEndPoint(new System.Net.IPAddress(new ReadOnlySpan<byte>(sa + 4, 4)), port),
            AF_INET6 when length >= 28 => new System.Net.IPEndPoint(new System.Net.IPAddress(new ReadOnlySpan<byte>(sa + 8, 16), *(uint*)(sa + 24)), port),
            _ => null,
        };
    }

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
