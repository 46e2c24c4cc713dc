using System.Net;
using Emunet.Engine.Forwarding;

namespace Emunet.Tool.Tests;

public sealed class ForwardSpecTests
{
    [Theory]
    [InlineData("tcp:10977", ForwardProtocol.Tcp, "127.0.0.1", 10977, 10977)]
    [InlineData("TCP:10977", ForwardProtocol.Tcp, "127.0.0.1", 10977, 10977)]
    [InlineData("tcp:127.0.0.1:8080:80", ForwardProtocol.Tcp, "127.0.0.1", 8080, 80)]
    [InlineData("tcp:127.0.0.2:8080", ForwardProtocol.Tcp, "127.0.0.2", 8080, 8080)]
    [InlineData("udp:5353:53", ForwardProtocol.Udp, "127.0.0.1", 5353, 53)]
    [InlineData("tcp:0:22", ForwardProtocol.Tcp, "127.0.0.1", 0, 22)]
    [InlineData("tcp:127.0.0.1:0:22", ForwardProtocol.Tcp, "127.0.0.1", 0, 22)]
    [InlineData("tcp:*:8080:80", ForwardProtocol.Tcp, "0.0.0.0", 8080, 80)]
    [InlineData("hostfwd=tcp:127.0.0.1:8080-:80", ForwardProtocol.Tcp, "127.0.0.1", 8080, 80)]
    [InlineData("hostfwd=udp::5353-:53", ForwardProtocol.Udp, "127.0.0.1", 5353, 53)]
    [InlineData("hostfwd=tcp::2222-:", ForwardProtocol.Tcp, "127.0.0.1", 2222, 2222)]
    [InlineData("  tcp:8080:80  ", ForwardProtocol.Tcp, "127.0.0.1", 8080, 80)]
    public void Parses_every_form(string text, ForwardProtocol protocol, string address, int hostPort, int guestPort)
    {
        var spec = ForwardSpec.Parse(text);
        Assert.Equal(new ForwardSpec(protocol, IPAddress.Parse(address), hostPort, guestPort), spec);
        Assert.Equal(spec, ForwardSpec.Parse(spec.ToString()));
    }

    [Theory]
    [InlineData("")]
    [InlineData("   ")]
    [InlineData("8080")]
    [InlineData("sctp:80")]
    [InlineData("tcp:")]
    [InlineData("tcp:0")]
    [InlineData("tcp:127.0.0.1:0")]
    [InlineData("tcp:65536")]
    [InlineData("tcp:8080:0")]
    [InlineData("tcp:8080:70000")]
    [InlineData("tcp:-1:80")]
    [InlineData("tcp:+80")]
    [InlineData("tcp:eighty")]
    [InlineData("tcp:::1:80:80")]
    [InlineData("tcp:1.2.3:80:80")]
    [InlineData("tcp:a:b:c:d")]
    [InlineData("hostfwd=tcp:8080-80")]
    [InlineData("hostfwd=tcp::99999-:80")]
    public void Refuses_what_is_not_a_forward_and_names_the_forms(string text)
    {
        Assert.False(ForwardSpec.TryParse(text, out var spec, out string? error));
        Assert.Null(spec);
        Assert.Contains("tcp:10977", error);
    }

    [Theory]
    [InlineData("tcp::2222-10.0.2.15:22", ForwardProtocol.Tcp, 2222, "10.0.2.15", 22)]
    [InlineData("hostfwd=tcp:127.0.0.1:8080-10.0.2.16:80", ForwardProtocol.Tcp, 8080, "10.0.2.16", 80)]
    [InlineData("udp:127.0.0.1:5353:10.0.2.16:53", ForwardProtocol.Udp, 5353, "10.0.2.16", 53)]
    [InlineData("tcp:127.0.0.1:0:10.0.2.16:80", ForwardProtocol.Tcp, 0, "10.0.2.16", 80)]
    public void A_forward_may_name_the_guest_of_another_link(string text, ForwardProtocol protocol, int hostPort, string guest, int guestPort)
    {
        var spec = ForwardSpec.Parse(text);
        Assert.Equal(new ForwardSpec(protocol, IPAddress.Loopback, hostPort, guestPort) { GuestAddress = Emunet.Engine.Wire.IPv4Address.Parse(guest) }, spec);
        Assert.Equal($"{(protocol == ForwardProtocol.Udp ? "udp" : "tcp")}:127.0.0.1:{hostPort}:{guest}:{guestPort}", spec.ToString());
        Assert.Equal(spec, ForwardSpec.Parse(spec.ToString()));
    }

    [Theory]
    [InlineData("tcp:127.0.0.1:8080:10.0.2:80")]
    [InlineData("hostfwd=tcp::8080-guest:80")]
    [InlineData("tcp:127.0.0.1:8080:10.0.2.16:0")]
    public void Refuses_a_guest_address_that_is_not_one(string text) =>
        Assert.False(ForwardSpec.TryParse(text, out _, out _));

    [Fact]
    public void Canonical_text_names_every_part() =>
        Assert.Equal("udp:127.0.0.1:5353:53", ForwardSpec.Parse("udp:5353:53").ToString());

    [Fact]
    public void Create_defaults_to_loopback_and_the_same_guest_port()
    {
        Assert.Equal(new ForwardSpec(ForwardProtocol.Tcp, IPAddress.Loopback, 8080, 8080), ForwardSpec.Create(ForwardProtocol.Tcp, 8080));
        Assert.Throws<ArgumentOutOfRangeException>(() => ForwardSpec.Create(ForwardProtocol.Tcp, 0));
        Assert.Throws<ArgumentOutOfRangeException>(() => ForwardSpec.Create(ForwardProtocol.Tcp, 70000, 80));
    }
}

public sealed class ForwardSpecListTests
{
    private static string Text(IEnumerable<ForwardSpec> specs) => string.Join(" ", specs);

    [Theory]
    [InlineData("tcp:8000-8002", "tcp:127.0.0.1:8000:8000 tcp:127.0.0.1:8001:8001 tcp:127.0.0.1:8002:8002")]
    [InlineData("tcp:8000-8001:9000-9001", "tcp:127.0.0.1:8000:9000 tcp:127.0.0.1:8001:9001")]
    [InlineData("udp:127.0.0.2:5000-5001", "udp:127.0.0.2:5000:5000 udp:127.0.0.2:5001:5001")]
    [InlineData("tcp:*:7000-7001:80-81", "tcp:0.0.0.0:7000:80 tcp:0.0.0.0:7001:81")]
    [InlineData("tcp:80,443,udp:53", "tcp:127.0.0.1:80:80 tcp:127.0.0.1:443:443 udp:127.0.0.1:53:53")]
    [InlineData("tcp:8080:80, 8443:443", "tcp:127.0.0.1:8080:80 tcp:127.0.0.1:8443:443")]
    [InlineData("hostfwd=tcp::2222-:22,tcp:8000-8001", "tcp:127.0.0.1:2222:22 tcp:127.0.0.1:8000:8000 tcp:127.0.0.1:8001:8001")]
    [InlineData("tcp::2222-10.0.2.15:22", "tcp:127.0.0.1:2222:10.0.2.15:22")]
    [InlineData("tcp:0:22", "tcp:127.0.0.1:0:22")]
    public void Reads_lists_and_ranges(string text, string expected) =>
        Assert.Equal(expected, Text(ForwardSpec.ParseMany(text)));

    [Theory]
    [InlineData("tcp:8010-8000", "ends before it starts")]
    [InlineData("tcp:8000-8010:9000-9005", "differ in length")]
    [InlineData("tcp:8000-8010:9000", "guest range")]
    [InlineData("80,tcp:81", "no protocol")]
    [InlineData("tcp:80,,81", "empty item")]
    [InlineData("tcp:1-5000", "more than 4096")]
    [InlineData("tcp:0-10", "between 1 and 65535")]
    [InlineData("tcp:65535-65536", "between 1 and 65535")]
    [InlineData("tcp:80,sctp:9", "not tcp or udp")]
    public void Refuses_bad_lists_and_ranges_and_says_why(string text, string why)
    {
        Assert.False(ForwardSpec.TryParseMany(text, out var specs, out string? error));
        Assert.Empty(specs);
        Assert.Contains(why, error);
        Assert.Contains("tcp:8000-8010", error);
    }

    [Theory]
    [InlineData("tcp:10977")]
    [InlineData("hostfwd=udp::5353-:53")]
    [InlineData("tcp:127.0.0.1:8080:80")]
    public void A_single_spec_reads_as_Parse_reads_it(string text) =>
        Assert.Equal([ForwardSpec.Parse(text)], ForwardSpec.ParseMany(text));
}
