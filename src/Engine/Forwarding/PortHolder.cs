using System.Globalization;
using System.Net;

namespace Emunet.Engine.Forwarding;

/// <summary>
/// Who holds a host port: the "in use" message every forward gives, naming the process when /proc tells (best
/// effort: another user's processes may be unreadable). The same lookup serves TCP listeners and bound UDP sockets.
/// </summary>
internal static class PortHolder
{
    private const string TcpListenState = "0A";

    /// <summary>The "in use" message for <paramref name="protocol"/> <paramref name="address"/>:<paramref name="port"/>.</summary>
    public static string InUseMessage(ForwardProtocol protocol, IPAddress address, int port)
    {
        string proto = protocol == ForwardProtocol.Tcp ? "tcp" : "udp";
        // IPEndPoint writes an IPv6 address in brackets ([::1]:8080), so the port stays apart from it.
        string text = $"Cannot listen on {proto} {new IPEndPoint(address, port)}: the address is already in use";
        try
        {
            var holder = Find(protocol, address, port);
            if (holder is { } h) return $"{text} by process {h.Pid} ({h.Comm}). Stop it, or choose another port (0 for any free one).";
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException or FormatException)
        {
        }
        return $"{text} (the process holding it could not be determined). Choose another port, or 0 for any free one.";
    }

    /// <summary>Finds the socket's inode in /proc/net/{tcp,udp}{,6}, then the process with a descriptor on it.</summary>
    private static (int Pid, string Comm)? Find(ForwardProtocol protocol, IPAddress address, int port)
    {
        var inodes = new HashSet<string>(StringComparer.Ordinal);
        string[] tables = protocol == ForwardProtocol.Tcp ? ["/proc/net/tcp", "/proc/net/tcp6"] : ["/proc/net/udp", "/proc/net/udp6"];
        foreach (var table in tables)
        {
            if (!File.Exists(table)) continue;
            foreach (var line in File.ReadLines(table).Skip(1))
            {
                // sl local_address rem_address st tx_queue:rx_queue tr:tm->when retrnsmt uid timeout inode
                var f = line.Split(' ', StringSplitOptions.RemoveEmptyEntries);
                if (f.Length < 10) continue;
                // A TCP port is held by its listener; a UDP port by any socket bound to it.
                if (protocol == ForwardProtocol.Tcp && f[3] != TcpListenState) continue;
                int colon = f[1].LastIndexOf(':');
                if (colon < 0 || int.Parse(f[1][(colon + 1)..], NumberStyles.HexNumber, CultureInfo.InvariantCulture) != port) continue;
                if (!Covers(f[1][..colon], address)) continue;
                inodes.Add(f[9]);
            }
        }
        if (inodes.Count == 0) return null;
        foreach (var dir in Directory.EnumerateDirectories("/proc"))
        {
            string pidText = Path.GetFileName(dir);
            if (!int.TryParse(pidText, NumberStyles.None, CultureInfo.InvariantCulture, out int pid)) continue;
            IEnumerable<string> fds;
            try { fds = Directory.GetFiles(Path.Combine(dir, "fd")); }
            catch (Exception e) when (e is IOException or UnauthorizedAccessException) { continue; }
            foreach (var fd in fds)
            {
                string? target;
                try { target = new FileInfo(fd).LinkTarget; }
                catch (Exception e) when (e is IOException or UnauthorizedAccessException) { continue; }
                if (target is null || !target.StartsWith("socket:[", StringComparison.Ordinal)) continue;
                if (!inodes.Contains(target[8..^1])) continue;
                string comm;
                try { comm = File.ReadAllText(Path.Combine(dir, "comm")).Trim(); }
                catch (Exception e) when (e is IOException or UnauthorizedAccessException) { comm = "?"; }
                return (pid, comm);
            }
        }
        return null;
    }

    /// <summary>True when a socket bound to the hex address of /proc/net/* conflicts with <paramref name="wanted"/>.</summary>
    private static bool Covers(string hex, IPAddress wanted)
    {
        bool anyAddress = hex.Trim('0').Length == 0;
        if (anyAddress || wanted.Equals(IPAddress.Any)) return true;
        if (hex.Length == 8)
        {
            // /proc/net/* prints the address as the host-order value of the network-order word.
            uint raw = uint.Parse(hex, NumberStyles.HexNumber, CultureInfo.InvariantCulture);
            var bytes = BitConverter.GetBytes(raw);
            if (!BitConverter.IsLittleEndian) Array.Reverse(bytes);
            return new IPAddress(bytes).Equals(wanted);
        }
        // IPv6 socket: an IPv4-mapped address (::ffff:a.b.c.d) ends with the IPv4 word.
        return hex.Length == 32 && hex.StartsWith("0000000000000000FFFF0000", StringComparison.OrdinalIgnoreCase)
            && Covers(hex[24..], wanted);
    }
}
