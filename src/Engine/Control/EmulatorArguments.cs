using System.Globalization;

namespace Emunet.Engine.Control;

/// <summary>
/// The QEMU arguments that attach a guest to an instance's device, from the device string the control API reports
/// (<see cref="InstanceDto.Device"/>): <c>stream:unix:PATH</c>, <c>stream:tcp:127.0.0.1:PORT</c> or <c>vhost-user:PATH</c>.
/// The tool prints them when an engine is ready, <c>launch</c> appends them, the module puts them on its instances.
/// </summary>
public static class EmulatorArguments
{
    /// <summary>The arguments, or none for a device string this version does not know.</summary>
    /// <param name="device">The device string.</param>
    /// <param name="netdevId">The <c>-netdev</c> id the arguments use.</param>
    /// <param name="memorySize">vhost-user only: the guest's RAM (QEMU's <c>-m</c>); the shared memory backend must be this size.</param>
    public static string[] For(string device, string netdevId = "n0", string memorySize = "<RAM>")
    {
        string nic = string.Create(CultureInfo.InvariantCulture, $"virtio-net-pci,netdev={netdevId}");
        if (device.StartsWith(StreamUnix, StringComparison.Ordinal))
            return ["-netdev", $"stream,id={netdevId},server=off,addr.type=unix,addr.path={device[StreamUnix.Length..]}", "-device", nic];
        if (device.StartsWith(StreamTcp, StringComparison.Ordinal))
        {
            // -netdev socket,connect= speaks the same framing and exists in QEMU 7.2 and in the Android Emulator's 2.12
            // fork, which has no -netdev stream (its own flag: -net-socket connect=HOST:PORT).
            string hostPort = device[StreamTcp.Length..];
            if (hostPort.LastIndexOf(':') < 0) return [];
            return ["-netdev", $"socket,id={netdevId},connect={hostPort}", "-device", nic];
        }
        if (device.StartsWith(StreamConnectTcp, StringComparison.Ordinal))
        {
            // The engine dials: the emulator listens. -netdev socket exists in QEMU 7.2 and in the Android Emulator's 2.12
            // fork (whose own flag is -net-socket listen=HOST:PORT); both reconnect to nothing, so the engine dials again.
            string hostPort = device[StreamConnectTcp.Length..];
            return ["-netdev", $"socket,id={netdevId},listen={hostPort}", "-device", nic];
        }
        if (device.StartsWith(StreamConnectUnix, StringComparison.Ordinal))
            return ["-netdev", $"stream,id={netdevId},server=on,addr.type=unix,addr.path={device[StreamConnectUnix.Length..]}", "-device", nic];
        if (device.StartsWith(VhostUser, StringComparison.Ordinal))
        {
            return
            [
                "-object", $"memory-backend-memfd,id=mem,size={memorySize},share=on", "-numa", "node,memdev=mem",
                "-chardev", $"socket,id=c0,path={device[VhostUser.Length..]}", "-netdev", $"vhost-user,id={netdevId},chardev=c0", "-device", nic,
            ];
        }
        return [];
    }

    /// <summary>
    /// The Android Emulator's own flag for a TCP link (its QEMU has <c>-netdev socket</c> but not <c>-netdev stream</c>):
    /// <c>-net-socket connect=HOST:PORT</c> when the engine listens, <c>-net-socket listen=HOST:PORT</c> when it dials
    /// (use <c>-wifi-socket</c> the same way for the Wi-Fi link). Null for a link the Android Emulator cannot use.
    /// </summary>
    public static string? AndroidFor(string device)
    {
        if (device.StartsWith(StreamTcp, StringComparison.Ordinal)) return "-net-socket connect=" + device[StreamTcp.Length..];
        if (device.StartsWith(StreamConnectTcp, StringComparison.Ordinal)) return "-net-socket listen=" + device[StreamConnectTcp.Length..];
        return null;
    }

    /// <summary>
    /// The QEMU arguments for every link of an instance, in order: netdev ids <c>n0</c>, <c>n1</c>, ... (one card each,
    /// the first link's first, so the guest's eth0 is the first link). vhost-user links share one memory backend.
    /// </summary>
    public static string[] ForLinks(IReadOnlyList<string> devices, string memorySize = "<RAM>")
    {
        var result = new List<string>();
        bool memory = false;
        for (int i = 0; i < devices.Count; i++)
        {
            string id = string.Create(CultureInfo.InvariantCulture, $"n{i}");
            var args = For(devices[i], id, memorySize);
            if (devices[i].StartsWith(VhostUser, StringComparison.Ordinal) && args.Length > 4)
            {
                // One shared-memory backend for the guest; each link its own chardev.
                if (memory) args = args[4..];
                memory = true;
                for (int a = 0; a < args.Length; a++)
                    args[a] = args[a].Replace("id=c0,", $"id=c{i},", StringComparison.Ordinal).Replace("chardev=c0", $"chardev=c{i}", StringComparison.Ordinal);
            }
            result.AddRange(args);
        }
        return result.ToArray();
    }

    /// <summary>
    /// The Android Emulator's flags for an instance's links: the first link as its radio link (<c>-net-socket</c>), the
    /// second as its Wi-Fi link (<c>-wifi-socket</c>). Null when the first is not a TCP link (the emulator has no
    /// other way in); a second link that is not TCP is left out.
    /// </summary>
    public static string? AndroidForLinks(IReadOnlyList<string> devices)
    {
        if (devices.Count == 0 || AndroidFor(devices[0]) is not { } radio) return null;
        if (devices.Count < 2 || AndroidFor(devices[1]) is not { } wifi) return radio;
        return radio + " " + wifi.Replace("-net-socket ", "-wifi-socket ", StringComparison.Ordinal);
    }

    private const string StreamUnix = "stream:unix:";
    private const string StreamConnectTcp = "stream:connect:tcp:";
    private const string StreamConnectUnix = "stream:connect:unix:";
    private const string StreamTcp = "stream:tcp:";
    private const string VhostUser = "vhost-user:";
}
