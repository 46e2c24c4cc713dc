using System.Net;
using Emunet.Engine.Forwarding;

namespace Emunet.Tool.Tests;

public class ForwardSpecIPv6Tests
{
    [Theory]
    [InlineData("tcp:[::1]:8080:80", 8080, 80)]
    [InlineData("tcp:[::1]:8080", 8080, 8080)]
    [InlineData("tcp:[::1]:0:80", 0, 80)]
    [InlineData("hostfwd=tcp:[::1]:8080-:80", 8080, 80)]
    public void IPv6_host_addresses_go_in_brackets(string text, int hostPort, int guestPort)
    {
        var spec = ForwardSpec.Parse(text);
        Assert.Equal(IPAddress.IPv6Loopback, spec.HostAddress);
        Assert.Equal(hostPort, spec.HostPort);
        Assert.Equal(guestPort, spec.GuestPort);
        // The text form round-trips with the brackets.
        Assert.Equal(spec, ForwardSpec.Parse(spec.ToString()));
        Assert.StartsWith("tcp:[::1]:", spec.ToString());
    }

    [Theory]
    [InlineData("tcp:[::1:8080")]
    [InlineData("tcp:[::1]8080")]
    [InlineData("tcp:[127.0.0.1]:8080")]
    [InlineData("tcp:[fe80::1%2]:8080")]
    [InlineData("tcp:[::1]:1:2:3")]
    public void Malformed_IPv6_forwards_are_refused(string text)
    {
        Assert.False(ForwardSpec.TryParse(text, out _, out var error));
        Assert.Contains("not valid", error);
    }

    [Fact]
    public void IPv4_forms_are_unchanged()
    {
        Assert.Equal(IPAddress.Loopback, ForwardSpec.Parse("tcp:127.0.0.1:8080:80").HostAddress);
        Assert.Equal(IPAddress.Loopback, ForwardSpec.Parse("hostfwd=tcp:127.0.0.1:8080-:80").HostAddress);
    }
}
