using Emunet.Engine.Wire;

namespace Emunet.Engine.Tests.Wire;

/// <summary>PacketDotNet has no DHCPv6; the fixtures are RFC 8415 §8 and §21 laid out by hand (as busybox udhcpc6 sends).</summary>
public class Dhcpv6MessageTests
{
    // Information-request, transaction 0x123456: client id (DUID-LL, 52:54:00:12:34:56), ORO (23), elapsed time 0.
    private static readonly byte[] InformationRequest = Convert.FromHexString(
        "0b123456" + "0001000a000300015254001234 56".Replace(" ", "") + "000600020017" + "000800020000");

    [Fact]
    public void Deconstruct()
    {
        Assert.True(Dhcpv6Message.TryParse(InformationRequest, out var message));
        Assert.Equal(Dhcpv6Message.TypeInformationRequest, message.MessageType);
        Assert.Equal(0x123456u, message.TransactionId);
        Assert.True(message.TryGetOption(Dhcpv6Message.OptionClientId, out var client));
        Assert.Equal(Convert.FromHexString("00030001525400123456"), client.ToArray());
        Assert.True(message.TryGetOption(Dhcpv6Message.OptionOptionRequest, out var oro));
        Assert.Equal(new byte[] { 0, 23 }, oro.ToArray());
        Assert.False(message.TryGetOption(Dhcpv6Message.OptionServerId, out _));
    }

    [Fact]
    public void Construct()
    {
        var bytes = new byte[InformationRequest.Length];
        int at = Dhcpv6Message.WriteHeader(bytes, Dhcpv6Message.TypeInformationRequest, 0x123456);
        at += Dhcpv6Message.WriteOption(bytes.AsSpan(at), Dhcpv6Message.OptionClientId, Convert.FromHexString("00030001525400123456"));
        at += Dhcpv6Message.WriteOption(bytes.AsSpan(at), Dhcpv6Message.OptionOptionRequest, new byte[] { 0, 23 });
        at += Dhcpv6Message.WriteOption(bytes.AsSpan(at), Dhcpv6Message.OptionElapsedTime, new byte[] { 0, 0 });
        Assert.Equal(bytes.Length, at);
        Assert.Equal(InformationRequest, bytes);
    }

    [Fact]
    public void Truncated_is_refused()
    {
        Assert.False(Dhcpv6Message.TryParse(InformationRequest.AsSpan(0, 3), out _));
        // An option whose length runs past the end.
        Assert.False(Dhcpv6Message.TryParse(InformationRequest.AsSpan(0, InformationRequest.Length - 1), out _));
        // A lone half option header.
        Assert.False(Dhcpv6Message.TryParse(InformationRequest.AsSpan(0, 6), out _));
    }

    [Fact]
    public void Overlong_option_length_is_refused()
    {
        var bytes = (byte[])InformationRequest.Clone();
        bytes[7] = 0xff;
        Assert.False(Dhcpv6Message.TryParse(bytes, out _));
    }
}
