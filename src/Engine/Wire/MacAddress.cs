using System.Buffers.Binary;

namespace Emunet.Engine.Wire;

/// <summary>An Ethernet MAC address held in the low 48 bits of a ulong.</summary>
public readonly record struct MacAddress(ulong Value)
{
    public static readonly MacAddress Broadcast = new(0xffff_ffff_ffffUL);
    public static readonly MacAddress Zero = new(0);

    public static MacAddress Read(ReadOnlySpan<byte> b) =>
        new(((ulong)BinaryPrimitives.ReadUInt16BigEndian(b) << 32) | BinaryPrimitives.ReadUInt32BigEndian(b[2..]));

    public void Write(Span<byte> b)
    {
        BinaryPrimitives.WriteUInt16BigEndian(b, (ushort)(Value >> 32));
        BinaryPrimitives.WriteUInt32BigEndian(b[2..], (uint)Value);
    }

    public bool IsBroadcast => Value == Broadcast.Value;
    public bool IsMulticast => ((Value >> 40) & 1) != 0;

    public static MacAddress Parse(string text)
    {
        var parts = text.Split(':', '-');
        if (parts.Length != 6) throw new FormatException($"'{text}' is not a MAC address (expected six hex bytes such as 52:55:0a:00:02:02).");
        ulong v = 0;
        foreach (var p in parts) v = (v << 8) | Convert.ToByte(p, 16);
        return new MacAddress(v);
    }

    public override string ToString()
    {
        Span<byte> b = stackalloc byte[6];
        Write(b);
        return $"{b[0]:x2}:{b[1]:x2}:{b[2]:x2}:{b[3]:x2}:{b[4]:x2}:{b[5]:x2}";
    }
}
