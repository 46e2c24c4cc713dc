using System.Net.Sockets;
using System.Runtime.InteropServices;
using Emunet.Engine.Interop;

namespace Emunet.Engine.Runtime;

/// <summary>
/// Theory of operation: descriptors kept free at the top of the process's open-file limit (RLIMIT_NOFILE), so that
/// flows and forwards never spend the last ones. Whatever still needs a descriptor then finds one: the control socket
/// (a CLI is answered), the emulator's connection once flows end, and the .NET runtime itself, which aborts ("Out of
/// memory.") when a descriptor it needs is refused. Linux hands out the lowest free number (POSIX.1-2017 §2.14), so the
/// number of a descriptor just obtained says how close the process is to the limit: one at or above
/// <see cref="Threshold"/> (limit − <see cref="Size"/>) is "at the headroom", and who obtained it for a flow or a
/// forward closes it and refuses. Listeners look before they accept (<see cref="NextIsAtHeadroom"/>: a duplicate of
/// their own descriptor takes the number accept(2) would take, and is closed at once).
/// The limit is read once, when the engine starts (the .NET runtime has raised the soft limit to the hard one by then).
/// </summary>
internal sealed class DescriptorHeadroom
{
    /// <summary>Descriptors kept free under a limit of <see cref="SmallLimit"/> or more.</summary>
    public const int DefaultSize = 64;
    /// <summary>Below this limit the headroom is a quarter of it (64 of 256 would leave little for flows).</summary>
    public const int SmallLimit = 256;

    private readonly bool _probe;

    private DescriptorHeadroom(long limit, bool probe = true)
    {
        Limit = limit;
        Size = SizeFor(limit);
        _probe = probe;
    }

    /// <summary>
    /// The same limit with <see cref="NextIsAtHeadroom"/> always false: what a listener sees when another thread takes
    /// the descriptor its probe found free (tests; the accepted socket is then the one in the headroom).
    /// </summary>
    internal DescriptorHeadroom WithoutProbe() => new(Limit, probe: false);

    /// <summary>No limit known (getrlimit failed or RLIM_INFINITY): nothing is ever at the headroom.</summary>
    public static DescriptorHeadroom Unlimited { get; } = new(long.MaxValue);

    /// <summary>The headroom of the limit <paramref name="limit"/> (tests give their own).</summary>
    public static DescriptorHeadroom ForLimit(long limit) => limit <= 0 || limit >= int.MaxValue ? Unlimited : new(limit);

    /// <summary>The process's headroom, from its soft RLIMIT_NOFILE as it is now.</summary>
    public static DescriptorHeadroom FromProcess() => Libc.OpenFileLimit() is long limit ? ForLimit(limit) : Unlimited;

    /// <summary>The open-file limit (<see cref="long.MaxValue"/> when unlimited).</summary>
    public long Limit { get; }

    /// <summary>Descriptors kept free: <see cref="DefaultSize"/>, or a quarter of a limit below <see cref="SmallLimit"/>.</summary>
    public int Size { get; }

    public bool IsLimited => Limit != long.MaxValue;

    /// <summary>The first descriptor number in the headroom: limit − size.</summary>
    public long Threshold => IsLimited ? Limit - Size : long.MaxValue;

    public static int SizeFor(long limit) => limit >= SmallLimit ? DefaultSize : (int)Math.Max(0, limit / 4);

    /// <summary>True when descriptor number <paramref name="fd"/> is in the headroom.</summary>
    public bool IsAtHeadroom(long fd) => fd >= Threshold;

    /// <summary>True when <paramref name="socket"/>'s descriptor is in the headroom.</summary>
    public bool IsAtHeadroom(Socket socket) => IsLimited && IsAtHeadroom((long)socket.Handle);

    /// <summary>
    /// Whether a listener whose last accepted descriptor was <paramref name="lastAccepted"/> (-1: none yet) must probe
    /// (<see cref="NextIsAtHeadroom"/>) before its next accept. The next descriptor is the lowest free one (POSIX), so
    /// while the last was below half the <see cref="Threshold"/>, the next reaches the headroom only if half the limit
    /// was opened in between: the probe (two syscalls per client) is skipped, and the look after the accept
    /// (<see cref="IsAtHeadroom(Socket)"/>) still catches that case.
    /// </summary>
    public bool MustProbe(long lastAccepted) => IsLimited && _probe && (lastAccepted < 0 || lastAccepted >= Threshold / 2);

    /// <summary>
    /// True when the next descriptor the process obtains (an accept on <paramref name="fd"/>) would be in the headroom,
    /// or when none is left at all. Probes with a duplicate of <paramref name="fd"/>, closed at once.
    /// </summary>
    public bool NextIsAtHeadroom(int fd)
    {
        if (!IsLimited || !_probe) return false;
        int probe = Libc.fcntl(fd, Libc.F_DUPFD_CLOEXEC, 0);
        if (probe < 0)
        {
            int errno = Marshal.GetLastPInvokeError();
            return errno is Libc.EMFILE or Libc.ENFILE;
        }
        Libc.close(probe);
        return IsAtHeadroom(probe);
    }

    /// <summary>The sentence log lines and errors end with: the limit, what is kept, and the fix.</summary>
    public string Advice => IsLimited
        ? $"the open-file limit is {Limit} and Emunet keeps the last {Size} descriptors free; raise the limit (ulimit -n) before starting the engine, or close connections or forwards"
        : "raise the open-file limit (ulimit -n), or close connections or forwards";
}
