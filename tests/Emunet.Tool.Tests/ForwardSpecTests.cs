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
    [InlineData("tcp::2222-10.0.2.15:22", ForwardProtocol.Tcp, "127.0.0.1", 2222, 22)]
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
