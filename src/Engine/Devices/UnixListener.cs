using System.Net.Sockets;
using Emunet.Engine.Interop;

namespace Emunet.Engine.Devices;

/// <summary>The Unix socket a device listens on for its emulator, shared by the stream and vhost-user devices.</summary>
internal static class UnixListener
{
    /// <summary>
    /// Listens on <paramref name="path"/> (an absolute path), mode 0600, non-blocking. A stale socket left by an engine
    /// that did not shut down is replaced; a live one, a directory or any other file is refused with an
    /// <see cref="EngineStartException"/> naming <paramref name="option"/> (e.g. <c>--socket</c>) as the fix.
    /// </summary>
    public static Socket Bind(string path, string option)
    {
        if (File.Exists(path) || Directory.Exists(path))
        {
            if (Directory.Exists(path)) throw new EngineStartException($"The socket path '{path}' is a directory; give a file path such as /tmp/emunet.sock.");
            if (!Libc.IsSocket(path)) throw new EngineStartException($"'{path}' exists and is not a socket; Emunet will not replace it. Choose another {option} path.");
            using (var probe = new Socket(AddressFamily.Unix, SocketType.Stream, ProtocolType.Unspecified))
            {
                try
                {
                    probe.Connect(new UnixDomainSocketEndPoint(path));
                    throw new EngineStartException($"Another program is already serving '{path}'; stop it or choose another {option} path.");
                }
                catch (SocketException) { }
            }
            File.Delete(path); // stale socket of an engine that did not shut down
        }
        var dir = Path.GetDirectoryName(path);
        if (dir is not null && !Directory.Exists(dir)) throw new EngineStartException($"The folder of the socket path '{path}' does not exist.");
        var u = new Socket(AddressFamily.Unix, SocketType.Stream, ProtocolType.Unspecified);
        try
        {
            u.Bind(new UnixDomainSocketEndPoint(path));
            File.SetUnixFileMode(path, UnixFileMode.UserRead | UnixFileMode.UserWrite);
            u.Listen(4);
        }
        catch (Exception e) when (e is SocketException or IOException or UnauthorizedAccessException)
        {
            u.Dispose();
            throw new EngineStartException($"Cannot listen on '{path}': {e.Message}.");
        }
        u.Blocking = false;
        return u;
    }
}
