using System.Buffers.Binary;

namespace Emunet.Engine.Wire;

/// <summary>
/// A checked view over a DHCPv6 client/server message (RFC 8415 §8) and its options (§21.1).
/// <code>
///  0                   1                   2                   3
/// +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
/// |    msg-type   |               transaction-id                  |
/// |                            options ...                        |
/// option: |          option-code          |           option-len          | option-data ...
/// </code>
/// </summary>
internal readonly ref struct Dhcpv6Message
{
    public const int HeaderLength = 4;
    public const int OptionHeaderLength = 4;
    public const ushort ClientPort = 546;
    public const ushort ServerPort = 547;

    public const byte TypeSolicit = 1;
    public const byte TypeAdvertise = 2;
    public const byte TypeRequest = 3;
    public const byte TypeReply = 7;
    public const byte TypeInformationRequest = 11;

    public const ushort OptionClientId = 1;
    public const ushort OptionServerId = 2;
    public const ushort OptionIaNa = 3;
    public const ushort OptionOptionRequest = 6;
    public const ushort OptionElapsedTime = 8;
    public const ushort OptionStatusCode = 13;
    /// <summary>RFC 3646 §3.</summary>
    public const ushort OptionDnsServers = 23;
    public const ushort OptionInformationRefreshTime = 32;

    public const ushort StatusNoAddrsAvail = 2;

    /// <summary>All DHCP relay agents and servers, ff02::1:2 (RFC 8415 §7.1).</summary>
    public static readonly IPv6Address AllServersAndRelays = new(0xff02_0000_0000_0000UL, 0x0000_0000_0001_0002UL);

    public ReadOnlySpan<byte> Bytes { get; }

    private Dhcpv6Message(ReadOnlySpan<byte> bytes) => Bytes = bytes;

    /// <summary>Checks the 4-byte header and that the options tile the message exactly; after that no accessor fails.</summary>
    public static bool TryParse(ReadOnlySpan<byte> bytes, out Dhcpv6Message message)
    {
        message = default;
        if (bytes.Length < HeaderLength) return false;
        var reader = new OptionReader(bytes[HeaderLength..]);
        while (reader.TryNext(out _, out _)) { }
        if (reader.Malformed) return false;
        message = new Dhcpv6Message(bytes);
        return true;
    }

    public byte MessageType => Bytes[0];
    /// <summary>The 24-bit transaction id.</summary>
    public uint TransactionId => (uint)(Bytes[1] << 16 | Bytes[2] << 8 | Bytes[3]);
    public ReadOnlySpan<byte> Options => Bytes[HeaderLength..];

    /// <summary>The data of the first option <paramref name="code"/>; false when absent.</summary>
    public bool TryGetOption(ushort code, out ReadOnlySpan<byte> data)
    {
        var reader = new OptionReader(Options);
        while (reader.TryNext(out var c, out data))
            if (c == code) return true;
        data = default;
        return false;
    }

    /// <summary>Writes msg-type and transaction id; returns 4.</summary>
    public static int WriteHeader(Span<byte> buffer, byte type, uint transactionId)
    {
        buffer[0] = type;
        buffer[1] = (byte)(transactionId >> 16);
        buffer[2] = (byte)(transactionId >> 8);
        buffer[3] = (byte)transactionId;
        return HeaderLength;
    }

    /// <summary>Writes one option with <paramref name="data"/>; returns its length.</summary>
    public static int WriteOption(Span<byte> buffer, ushort code, ReadOnlySpan<byte> data)
    {
        BinaryPrimitives.WriteUInt16BigEndian(buffer, code);
        BinaryPrimitives.WriteUInt16BigEndian(buffer[2..], checked((ushort)data.Length));
        data.CopyTo(buffer[OptionHeaderLength..]);
        return OptionHeaderLength + data.Length;
    }

    /// <summary>Writes the option header for <paramref name="dataLength"/> bytes the caller writes after it; returns 4.</summary>
    public static int WriteOptionHeader(Span<byte> buffer, ushort code, int dataLength)
    {
        BinaryPrimitives.WriteUInt16BigEndian(buffer, code);
        BinaryPrimitives.WriteUInt16BigEndian(buffer[2..], checked((ushort)dataLength));
        return OptionHeaderLength;
    }

    /// <summary>Iterates options over untrusted bytes; each step consumes at least 4 bytes.</summary>
    public ref struct OptionReader
    {
        private ReadOnlySpan<byte> _rest;

        public OptionReader(ReadOnlySpan<byte> options) => _rest = options;

        /// <summary>An option header or its data ran past the end.</summary>
        public bool Malformed { get; private set; }

        public bool TryNext(out ushort code, out ReadOnlySpan<byte> data)
        {
            code = 0;
            data = default;
            if (_rest.IsEmpty) return false;
            if (_rest.Length < OptionHeaderLength) { Malformed = true; _rest = default; return false; }
            code = BinaryPrimitives.ReadUInt16BigEndian(_rest);
            int length = BinaryPrimitives.ReadUInt16BigEndian(_rest[2..]);
            if (length > _rest.Length - OptionHeaderLength) { Malformed = true; _rest = default; return false; }
            data = _rest.Slice(OptionHeaderLength, length);
            _rest = _rest[(OptionHeaderLength + length)..];
            return true;
        }
    }
}
