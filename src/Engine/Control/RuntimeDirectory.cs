using System.Net.Sockets;
using System.Text;

namespace Emunet.Engine.Control;

/// <summary>
/// Where instances put their control sockets: <c>$EMUNET_RUNTIME_DIR</c> if set, else <c>$XDG_RUNTIME_DIR/emunet/</c>,
/// else <c>~/.emunet/run/</c>. The folder is made 0700 and each socket is 0600, so only the user reaches its engines.
/// An instance named N listens on <c>N.sock</c>; its background log (Start-EmuNet) is <c>N.log</c>.
/// </summary>
public static class RuntimeDirectory
{
    /// <summary>Overrides the folder (tests, several users of one account).</summary>
    public const string OverrideVariable = "EMUNET_RUNTIME_DIR";
    public const string SocketSuffix = ".sock";
    public const int MaxNameLength = 64;
    /// <summary>sun_path is 108 bytes on Linux, including the terminating NUL.</summary>
    public const int MaxSocketPathBytes = 107;

    private const UnixFileMode FolderMode = UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.UserExecute;

    /// <summary>The folder, without creating it.</summary>
    public static string GetPath()
    {
        string? overridden = Environment.GetEnvironmentVariable(OverrideVariable);
        if (!string.IsNullOrEmpty(overridden)) return Path.GetFullPath(overridden);
        string? xdg = Environment.GetEnvironmentVariable("XDG_RUNTIME_DIR");
        if (!string.IsNullOrEmpty(xdg) && Directory.Exists(xdg)) return Path.Combine(xdg, "emunet");
        string home = Environment.GetFolderPath(Environment.SpecialFolder.UserProfile);
        return Path.Combine(home, ".emunet", "run");
    }

    /// <summary>The folder, created 0700 if missing.</summary>
    public static string Ensure()
    {
        string path = GetPath();
        if (!Directory.Exists(path)) CreatePrivateFolder(path);
        return path;
    }

    /// <summary>Creates <paramref name="path"/> (and missing parents) readable only by the user.</summary>
    public static void CreatePrivateFolder(string path)
    {
        if (OperatingSystem.IsWindows()) Directory.CreateDirectory(path);
        else Directory.CreateDirectory(path, FolderMode);
    }

    public static bool IsValidName(string? name)
    {
        if (string.IsNullOrEmpty(name) || name.Length > MaxNameLength || name[0] == '.' || name[0] == '-') return false;
        foreach (char c in name)
            if (!(char.IsAsciiLetterOrDigit(c) || c is '-' or '_' or '.')) return false;
        return true;
    }

    /// <exception cref="ArgumentException">The name is not usable as a file name.</exception>
    public static void ValidateName(string name)
    {
        if (!IsValidName(name))
            throw new ArgumentException($"The instance name '{name}' is not valid: use 1 to {MaxNameLength} letters, digits, '-', '_' or '.', not starting with '.' or '-'.", nameof(name));
    }

    /// <summary>The control socket path of instance <paramref name="name"/>.</summary>
    public static string SocketPathFor(string name)
    {
        ValidateName(name);
        string path = Path.Combine(GetPath(), name + SocketSuffix);
        if (Encoding.UTF8.GetByteCount(path) > MaxSocketPathBytes)
            throw new ArgumentException($"The control socket path '{path}' is longer than the {MaxSocketPathBytes} bytes a Unix socket allows. Use a shorter name or set {OverrideVariable} to a shorter folder.", nameof(name));
        return path;
    }

    /// <summary>
    /// The default guest-device socket of instance <paramref name="name"/> (emunet launch, Start-EmuNet):
    /// <c>net/NAME.sock</c>, a subfolder so it is never taken for a control socket. The subfolder is created 0700.
    /// </summary>
    public static string DeviceSocketPathFor(string name)
    {
        ValidateName(name);
        string folder = Path.Combine(Ensure(), "net");
        if (!Directory.Exists(folder)) CreatePrivateFolder(folder);
        return Path.Combine(folder, name + SocketSuffix);
    }

    public static string LogPathFor(string name)
    {
        ValidateName(name);
        return Path.Combine(GetPath(), name + ".log");
    }

    /// <summary>True when something accepts connections on the socket at <paramref name="socketPath"/>.</summary>
    public static bool IsLive(string socketPath)
    {
        if (!File.Exists(socketPath)) return false;
        using var s = new Socket(AddressFamily.Unix, SocketType.Stream, ProtocolType.Unspecified);
        try
        {
            s.Connect(new UnixDomainSocketEndPoint(socketPath));
            return true;
        }
        catch (SocketException) { return false; }
    }

    /// <summary>
    /// Names of the instances whose sockets answer, sorted. A socket file nobody answers on (its engine died) is deleted.
    /// </summary>
    public static IReadOnlyList<string> ListInstances(bool removeStale = true)
    {
        string dir = GetPath();
        var names = new List<string>();
        if (!Directory.Exists(dir)) return names;
        foreach (string file in Directory.EnumerateFiles(dir, "*" + SocketSuffix))
        {
            string name = Path.GetFileName(file)[..^SocketSuffix.Length];
            if (!IsValidName(name)) continue;
            if (IsLive(file)) names.Add(name);
            else if (removeStale)
            {
                try { File.Delete(file); } catch (IOException) { } catch (UnauthorizedAccessException) { }
            }
        }
        names.Sort(StringComparer.Ordinal);
        return names;
    }

    /// <summary>
    /// The instance a command talks to: <paramref name="name"/> if given (it must be running), else the only one
    /// running. Errors say what runs and how to choose.
    /// </summary>
    /// <exception cref="ControlException">Codes <see cref="ControlErrorCodes.InstanceNotFound"/>,
    /// <see cref="ControlErrorCodes.NoInstance"/>, <see cref="ControlErrorCodes.AmbiguousInstance"/>.</exception>
    public static string ResolveInstance(string? name)
    {
        if (!string.IsNullOrEmpty(name))
        {
            if (!IsValidName(name)) throw new ControlException(ControlErrorCodes.InstanceNotFound, $"'{name}' is not a valid instance name.");
            if (IsLive(SocketPathFor(name))) return name;
            var running = ListInstances();
            throw new ControlException(ControlErrorCodes.InstanceNotFound,
                running.Count == 0
                    ? $"No Emunet instance named '{name}' is running (none is). Start one with 'emunet run --name {name} --socket PATH'."
                    : $"No Emunet instance named '{name}' is running. Running: {string.Join(", ", running)}.");
        }
        var live = ListInstances();
        return live.Count switch
        {
            1 => live[0],
            0 => throw new ControlException(ControlErrorCodes.NoInstance,
                $"No Emunet instance is running (looked in {GetPath()}). Start one with 'emunet run --socket PATH'."),
            _ => throw new ControlException(ControlErrorCodes.AmbiguousInstance,
                $"Several Emunet instances are running: {string.Join(", ", live)}. Choose one with --instance NAME (-Instance in PowerShell)."),
        };
    }
}
