namespace Emunet.Tool;

/// <summary>
/// What <c>emunet</c> exits with. Stable: scripts match on these numbers. <c>emunet launch</c> exits with the emulator's
/// own code once the emulator has run; the codes here then mean Emunet failed before it could start it.
/// </summary>
public enum ExitCode
{
    /// <summary>Done.</summary>
    Success = 0,
    /// <summary>An unexpected failure (the message says what).</summary>
    Failure = 1,
    /// <summary>The command line or a value in it is not valid.</summary>
    UsageError = 2,
    /// <summary>No instance runs, or none by the name given.</summary>
    NoInstance = 3,
    /// <summary>Several instances run and --instance was not given.</summary>
    AmbiguousInstance = 4,
    /// <summary>The forward (or other object) named does not exist.</summary>
    NotFound = 5,
    /// <summary>The host port is taken, or binding it was refused.</summary>
    PortInUse = 6,
    /// <summary>The engine could not start (device socket, control socket, instance name taken).</summary>
    StartFailed = 7,
    /// <summary>The instance did not answer, or answered outside the protocol.</summary>
    Unreachable = 8,
    /// <summary>The capture file could not be written.</summary>
    CaptureFailed = 9,
    /// <summary>It exists or runs already: the instance has a forward on that protocol, address and port, or a capture runs.</summary>
    Conflict = 10,
    /// <summary>The instance acknowledged the stop but was still there when the wait ended.</summary>
    StopTimeout = 11,
    /// <summary>forward add --wait: the guest did not accept on the forwarded port within --timeout.</summary>
    GuestNotReady = 12,
}
