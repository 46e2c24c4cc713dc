using System.Text;

namespace Emunet.GuestRig;

/// <summary>Writes a cpio "newc" archive (the initramfs format, see the kernel's early-userspace docs).</summary>
public static class Cpio
{
    /// <summary>An archive holding regular files (name relative to /, content, mode).</summary>
    public static byte[] Build(IEnumerable<(string Name, byte[] Content, int Mode)> files)
    {
        using var ms = new MemoryStream();
        int ino = 1000;
        foreach (var (name, content, mode) in files) Entry(ms, name, content, 0x8000 | mode, ino++);
        Entry(ms, "TRAILER!!!", Array.Empty<byte>(), 0, 0);
        Pad(ms, 512);
        return ms.ToArray();
    }

    private static void Entry(MemoryStream ms, string name, byte[] content, int mode, int ino)
    {
        var nameBytes = Encoding.UTF8.GetBytes(name + "\0");
        var header = $"070701{ino:X8}{mode:X8}{0:X8}{0:X8}{1:X8}{0:X8}{content.Length:X8}{0:X8}{0:X8}{0:X8}{0:X8}{nameBytes.Length:X8}{0:X8}";
        ms.Write(Encoding.ASCII.GetBytes(header));
        ms.Write(nameBytes);
        Pad(ms, 4);
        ms.Write(content);
        Pad(ms, 4);
    }

    private static void Pad(MemoryStream ms, int to)
    {
        while (ms.Length % to != 0) ms.WriteByte(0);
    }
}
