using Emunet.Engine.Wire;

namespace Emunet.Engine.Tests.Wire;

public class DnsMessageTests
{
    // Query id 0xbeef, RD, one question: "a." IN A.
    private static readonly byte[] Query =
    {
        0xbe, 0xef, 0x01, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
        0x01, 0x61, 0x00, 0x00, 0x01, 0x00, 0x01,
    };

    [Fact]
    public void Deconstruct()
    {
        Assert.True(DnsMessage.TryParse(Query, out var dns));
        Assert.Equal(0xbeef, dns.Id);
        Assert.False(dns.IsResponse);
        Assert.Equal(0, dns.Opcode);
        Assert.True(dns.RecursionDesired);
        Assert.False(dns.IsTruncated);
        Assert.Equal(1, dns.QuestionCount);
        Assert.Equal(0, dns.AnswerCount);
        Assert.Equal(0, dns.AuthorityCount);
        Assert.Equal(0, dns.AdditionalCount);
        Assert.Equal(7, dns.Body.Length);
    }

    [Fact]
    public void Construct()
    {
        var bytes = new byte[12];
        DnsMessage.WriteHeader(bytes, 0xbeef, 0x8180, 1, 2, 3, 4);
        Assert.True(DnsMessage.TryParse(bytes, out var dns));
        Assert.True(dns.IsResponse);
        Assert.Equal(0, dns.ResponseCode);
        Assert.Equal(1, dns.QuestionCount);
        Assert.Equal(2, dns.AnswerCount);
        Assert.Equal(3, dns.AuthorityCount);
        Assert.Equal(4, dns.AdditionalCount);
        Assert.Equal(Query.AsSpan(0, 2).ToArray(), bytes.AsSpan(0, 2).ToArray());
    }

    [Fact]
    public void Truncated()
    {
        Assert.False(DnsMessage.TryParse(Query.AsSpan(0, 11), out _));
        Assert.True(DnsMessage.TryParse(Query.AsSpan(0, 12), out var headerOnly));
        Assert.Equal(0, headerOnly.Body.Length);
    }

    [Fact]
    public void Overlong_body_is_relayed_as_is()
    {
        var longer = new byte[Query.Length + 100];
        Query.CopyTo(longer, 0);
        Assert.True(DnsMessage.TryParse(longer, out var dns));
        Assert.Equal(longer.Length - 12, dns.Body.Length);
    }
}
