using System.Buffers.Binary;

namespace Emunet.Engine.Wire;

/// <summary>
/// A view over a DNS message header (RFC 1035 §4.1.1): enough for the relay to validate and match a query and
/// its answer. The question and record sections are relayed untouched.
/// <code>
///                                 1  1  1  1  1  1
///   0  1  2  3  4  5  6  7  8  9  0  1  2  3  4  5
/// +--+--+--+--+--+--+--+--+--+--+--+--+--+--+--+--+
/// |                      ID                       |
/// |QR|   Opcode  |AA|TC|RD|RA|   Z    |   RCODE   |
/// |                    QDCOUNT                    |
/// |                    ANCOUNT                    |
/// |                    NSCOUNT                    |
/// |                    ARCOUNT                    |
/// +--+--+--+--+--+--+--+--+--+--+--+--+--+--+--+--+
/// </code>
/// </summary>
internal readonly ref struct DnsMessage
{
    public static class Offsets
    {
        public const int Id = 0;
        public const int Flags = 2;
        public const int QuestionCount = 4;
        public const int AnswerCount = 6;
        public const int AuthorityCount = 8;
        public const int AdditionalCount = 10;
        public const int Body = 12;
    }

    public const int HeaderLength = 12;
    /// <summary>RFC 1035 §2.3.4: the largest message carried over UDP without EDNS.</summary>
    public const int ClassicUdpLimit = 512;

    public ReadOnlySpan<byte> Bytes { get; }

    private DnsMessage(ReadOnlySpan<byte> bytes) => Bytes = bytes;

    public static bool TryParse(ReadOnlySpan<byte> bytes, out DnsMessage message)
    {
        message = new DnsMessage(bytes);
        return bytes.Length >= HeaderLength;
    }

    public ushort Id => BinaryPrimitives.ReadUInt16BigEndian(Bytes[Offsets.Id..]);
    public ushort Flags => BinaryPrimitives.ReadUInt16BigEndian(Bytes[Offsets.Flags..]);
    public bool IsResponse => (Flags & 0x8000) != 0;
    public int Opcode => (Flags >> 11) & 0xf;
    public bool IsTruncated => (Flags & 0x0200) != 0;
    public bool RecursionDesired => (Flags & 0x0100) != 0;
    public int ResponseCode => Flags & 0xf;
    public ushort QuestionCount => BinaryPrimitives.ReadUInt16BigEndian(Bytes[Offsets.QuestionCount..]);
    public ushort AnswerCount => BinaryPrimitives.ReadUInt16BigEndian(Bytes[Offsets.AnswerCount..]);
    public ushort AuthorityCount => BinaryPrimitives.ReadUInt16BigEndian(Bytes[Offsets.AuthorityCount..]);
    public ushort AdditionalCount => BinaryPrimitives.ReadUInt16BigEndian(Bytes[Offsets.AdditionalCount..]);
    public ReadOnlySpan<byte> Body => Bytes[Offsets.Body..];

    /// <summary>RFC 1035 §2.3.4: a name is at most 255 bytes on the wire, a label at most 63.</summary>
    public const int MaxNameLength = 255;

    /// <summary>
    /// The first question's bytes (QNAME, QTYPE, QCLASS; RFC 1035 §4.1.2), walked with bounds: labels of at most 63
    /// bytes, a name of at most 255, no compression pointer (a query has nothing to point back to). False when the
    /// section is missing or malformed.
    /// </summary>
    public bool TryGetQuestion(out ReadOnlySpan<byte> question)
    {
        question = default;
        if (QuestionCount == 0) return false;
        var body = Body;
        int i = 0;
        while (true)
        {
            if (i >= body.Length || i >= MaxNameLength) return false;
            int label = body[i];
            if (label == 0) { i++; break; }
            if (label > 63) return false; // 0b11xxxxxx is a pointer, 0b01/0b10 are reserved (RFC 6891 §5)
            i += 1 + label;
        }
        if (i > MaxNameLength || body.Length - i < 4) return false;
        question = body[..(i + 4)];
        return true;
    }

    /// <summary>
    /// A query the relay passes on (RFC 1035 §4.1.1): not a response, opcode QUERY, exactly one well-formed question,
    /// no answers.
    /// </summary>
    public bool IsRelayableQuery => !IsResponse && Opcode == 0 && QuestionCount == 1 && AnswerCount == 0 && TryGetQuestion(out _);

    /// <summary>Writes a 12-byte header.</summary>
    public static void WriteHeader(Span<byte> buffer, ushort id, ushort flags, ushort questions, ushort answers = 0,
        ushort authorities = 0, ushort additionals = 0)
    {
        BinaryPrimitives.WriteUInt16BigEndian(buffer[Offsets.Id..], id);
        BinaryPrimitives.WriteUInt16BigEndian(buffer[Offsets.Flags..], flags);
        BinaryPrimitives.WriteUInt16BigEndian(buffer[Offsets.QuestionCount..], questions);
        BinaryPrimitives.WriteUInt16BigEndian(buffer[Offsets.AnswerCount..], answers);
        BinaryPrimitives.WriteUInt16BigEndian(buffer[Offsets.AuthorityCount..], authorities);
        BinaryPrimitives.WriteUInt16BigEndian(buffer[Offsets.AdditionalCount..], additionals);
    }
}
