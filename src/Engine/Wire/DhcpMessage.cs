using System.Buffers.Binary;

namespace Emunet.Engine.Wire;

/// <summary>
/// A checked view over a DHCP message: the BOOTP header (RFC 2131 §2, RFC 951) followed by the magic cookie and
/// options (RFC 2132). Option overloading into sname/file (option 52) is not used by the server and is ignored.
/// <code>
///  0                   1                   2                   3
///  0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
/// +---------------+---------------+---------------+---------------+
/// |     op (1)    |   htype (1)   |   hlen (1)    |   hops (1)    |
/// +---------------+---------------+---------------+---------------+
/// |                            xid (4)                            |
/// +-------------------------------+-------------------------------+
/// |           secs (2)            |           flags (2)           |
/// +-------------------------------+-------------------------------+
/// |                          ciaddr  (4)                          |
/// |                          yiaddr  (4)                          |
/// |                          siaddr  (4)                          |
/// |                          giaddr  (4)                          |
/// +---------------------------------------------------------------+
/// |                          chaddr  (16)                         |
/// |                          sname   (64)                         |
/// |                          file    (128)                        |
/// +---------------------------------------------------------------+
/// |            magic cookie 99.130.83.99, then options            |
/// +---------------------------------------------------------------+
/// </code>
/// </summary>
internal readonly ref struct DhcpMessage
{
    public static class Offsets
    {
        public const int Op = 0;
        public const int HardwareType = 1;
        public const int HardwareLength = 2;
        public const int Hops = 3;
        public const int TransactionId = 4;
        public const int Seconds = 8;
        public const int Flags = 10;
        public const int ClientAddress = 12;
        public const int YourAddress = 16;
        public const int ServerAddress = 20;
        public const int RelayAddress = 24;
        public const int ClientHardwareAddress = 28;
        public const int ServerName = 44;
        public const int File = 108;
        public const int MagicCookie = 236;
        public const int Options = 240;
    }

    public const int MinLength = Offsets.Options;
    /// <summary>RFC 1542 §3.4 / RFC 951: BOOTP messages are at least 300 bytes; some clients drop shorter ones.</summary>
    public const int MinReplyLength = 300;
    public const uint MagicCookie = 0x63825363;
    public const byte OpRequest = 1;
    public const byte OpReply = 2;
    /// <summary>RFC 2131 §2: the leftmost bit of flags asks for a broadcast reply.</summary>
    public const ushort FlagBroadcast = 0x8000;

    public static class OptionCode
    {
        public const byte Pad = 0;
        public const byte SubnetMask = 1;
        public const byte Router = 3;
        public const byte DnsServer = 6;
        public const byte HostName = 12;
        public const byte InterfaceMtu = 26;
        public const byte BroadcastAddress = 28;
        public const byte RequestedAddress = 50;
        public const byte LeaseTime = 51;
        public const byte MessageType = 53;
        public const byte ServerIdentifier = 54;
        public const byte ParameterRequestList = 55;
        public const byte RenewalTime = 58;
        public const byte RebindingTime = 59;
        public const byte ClientIdentifier = 61;
        public const byte End = 255;
    }

    /// <summary>RFC 2132 §9.6.</summary>
    public enum MessageType : byte
    {
        None = 0, Discover = 1, Offer = 2, Request = 3, Decline = 4, Ack = 5, Nak = 6, Release = 7, Inform = 8,
    }

    public ReadOnlySpan<byte> Bytes { get; }

    private DhcpMessage(ReadOnlySpan<byte> bytes) => Bytes = bytes;

    /// <summary>
    /// Checks the fixed header, the magic cookie and that every option's length stays inside the message. On success
    /// no accessor can fail and option iteration ends cleanly.
    /// </summary>
    public static bool TryParse(ReadOnlySpan<byte> bytes, out DhcpMessage message)
    {
        message = default;
        if (bytes.Length < MinLength) return false;
        if (BinaryPrimitives.ReadUInt32BigEndian(bytes[Offsets.MagicCookie..]) != MagicCookie) return false;
        // Walk the options once; each step consumes at least one byte, so the walk ends.
        var options = bytes[Offsets.Options..];
        int i = 0;
        while (i < options.Length)
        {
            byte code = options[i];
            if (code == OptionCode.End) break;
            if (code == OptionCode.Pad) { i++; continue; }
            if (i + 1 >= options.Length) return false;
            int length = options[i + 1];
            if (i + 2 + length > options.Length) return false;
            i += 2 + length;
        }
        message = new DhcpMessage(bytes);
        return true;
    }

    public byte Op => Bytes[Offsets.Op];
    public byte HardwareType => Bytes[Offsets.HardwareType];
    public byte HardwareLength => Bytes[Offsets.HardwareLength];
    public uint TransactionId => BinaryPrimitives.ReadUInt32BigEndian(Bytes[Offsets.TransactionId..]);
    public ushort Flags => BinaryPrimitives.ReadUInt16BigEndian(Bytes[Offsets.Flags..]);
    public bool BroadcastRequested => (Flags & FlagBroadcast) != 0;
    public IPv4Address ClientAddress => IPv4Address.Read(Bytes[Offsets.ClientAddress..]);
    public IPv4Address YourAddress => IPv4Address.Read(Bytes[Offsets.YourAddress..]);
    public IPv4Address ServerAddress => IPv4Address.Read(Bytes[Offsets.ServerAddress..]);
    public IPv4Address RelayAddress => IPv4Address.Read(Bytes[Offsets.RelayAddress..]);
    /// <summary>The first six bytes of chaddr (meaningful when htype is 1 and hlen 6).</summary>
    public MacAddress ClientHardwareAddress => MacAddress.Read(Bytes[Offsets.ClientHardwareAddress..]);

    public OptionEnumerator Options => new(Bytes[Offsets.Options..]);

    /// <summary>The data of the first option with <paramref name="code"/>.</summary>
    public bool TryGetOption(byte code, out ReadOnlySpan<byte> data)
    {
        foreach (var option in Options)
        {
            if (option.Code == code) { data = option.Data; return true; }
        }
        data = default;
        return false;
    }

    /// <summary>Option 53, or <see cref="MessageType.None"/> when absent or malformed (plain BOOTP).</summary>
    public MessageType Type =>
        TryGetOption(OptionCode.MessageType, out var d) && d.Length == 1 ? (MessageType)d[0] : MessageType.None;

    /// <summary>An address-valued option (RFC 2132: exactly four bytes).</summary>
    public bool TryGetAddressOption(byte code, out IPv4Address address)
    {
        if (TryGetOption(code, out var d) && d.Length == 4) { address = IPv4Address.Read(d); return true; }
        address = IPv4Address.Any;
        return false;
    }

    public readonly ref struct Option
    {
        public Option(byte code, ReadOnlySpan<byte> data) { Code = code; Data = data; }
        public byte Code { get; }
        public ReadOnlySpan<byte> Data { get; }
    }

    /// <summary>Iterates options up to End or the end of the message; skips Pad. Stops on a truncated option.</summary>
    public ref struct OptionEnumerator
    {
        private readonly ReadOnlySpan<byte> _options;
        private int _next;
        private Option _current;

        internal OptionEnumerator(ReadOnlySpan<byte> options) { _options = options; _next = 0; _current = default; }

        public readonly OptionEnumerator GetEnumerator() => this;
        public readonly Option Current => _current;

        public bool MoveNext()
        {
            while (_next < _options.Length)
            {
                byte code = _options[_next];
                if (code == OptionCode.End) { _next = _options.Length; return false; }
                if (code == OptionCode.Pad) { _next++; continue; }
                if (_next + 1 >= _options.Length) { _next = _options.Length; return false; }
                int length = _options[_next + 1];
                if (_next + 2 + length > _options.Length) { _next = _options.Length; return false; }
                _current = new Option(code, _options.Slice(_next + 2, length));
                _next += 2 + length;
                return true;
            }
            return false;
        }
    }

    /// <summary>
    /// Writes the fixed header and the magic cookie into <paramref name="buffer"/> (all other header bytes zero).
    /// Returns a writer positioned at the first option.
    /// </summary>
    public static OptionWriter WriteHeader(Span<byte> buffer, byte op, uint transactionId, ushort flags,
        IPv4Address clientAddress, IPv4Address yourAddress, IPv4Address serverAddress, IPv4Address relayAddress,
        MacAddress clientHardwareAddress)
    {
        buffer[..MinLength].Clear();
        buffer[Offsets.Op] = op;
        buffer[Offsets.HardwareType] = 1;
        buffer[Offsets.HardwareLength] = 6;
        BinaryPrimitives.WriteUInt32BigEndian(buffer[Offsets.TransactionId..], transactionId);
        BinaryPrimitives.WriteUInt16BigEndian(buffer[Offsets.Flags..], flags);
        clientAddress.Write(buffer[Offsets.ClientAddress..]);
        yourAddress.Write(buffer[Offsets.YourAddress..]);
        serverAddress.Write(buffer[Offsets.ServerAddress..]);
        relayAddress.Write(buffer[Offsets.RelayAddress..]);
        clientHardwareAddress.Write(buffer[Offsets.ClientHardwareAddress..]);
        BinaryPrimitives.WriteUInt32BigEndian(buffer[Offsets.MagicCookie..], MagicCookie);
        return new OptionWriter(buffer, Offsets.Options);
    }

    /// <summary>Appends options after the header. Throws if the buffer is too small (a programming error, not input).</summary>
    public ref struct OptionWriter
    {
        private readonly Span<byte> _buffer;
        private int _position;

        internal OptionWriter(Span<byte> buffer, int position) { _buffer = buffer; _position = position; }

        public readonly int Position => _position;

        public void Add(byte code, scoped ReadOnlySpan<byte> data)
        {
            if (data.Length > 255) throw new ArgumentOutOfRangeException(nameof(data));
            _buffer[_position] = code;
            _buffer[_position + 1] = (byte)data.Length;
            data.CopyTo(_buffer[(_position + 2)..]);
            _position += 2 + data.Length;
        }

        public void AddByte(byte code, byte value)
        {
            Span<byte> b = stackalloc byte[1];
            b[0] = value;
            Add(code, b);
        }

        public void AddUInt16(byte code, ushort value)
        {
            Span<byte> b = stackalloc byte[2];
            BinaryPrimitives.WriteUInt16BigEndian(b, value);
            Add(code, b);
        }

        public void AddUInt32(byte code, uint value)
        {
            Span<byte> b = stackalloc byte[4];
            BinaryPrimitives.WriteUInt32BigEndian(b, value);
            Add(code, b);
        }

        public void AddAddress(byte code, IPv4Address address) => AddUInt32(code, address.Value);

        /// <summary>Writes End, pads with zeros to <paramref name="minLength"/>, and returns the message length.</summary>
        public int End(int minLength = MinReplyLength)
        {
            _buffer[_position++] = OptionCode.End;
            if (_position < minLength)
            {
                _buffer[_position..minLength].Clear();
                _position = minLength;
            }
            return _position;
        }
    }
}
