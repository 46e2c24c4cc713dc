using System.Net.Sockets;
using Emunet.Engine.Diagnostics;
using Emunet.Engine.Runtime;
using Emunet.Engine.Stack;
using Emunet.Engine.Stack.Nat;
using Emunet.Engine.Wire;
using Microsoft.Extensions.Logging;

namespace Emunet.Engine.Forwarding;

/// <summary>
/// A UDP forward: each host client sending to the bound socket gets a flow from the host alias (10.0.2.2, or fec0::2
/// for a forward bound on IPv6; a port per client) to the guest's port, and the guest's replies go back to that client
/// through the same socket (<see cref="Udp.OnForwardReadable"/>). As for TCP, a forward bound on an IPv6 address
/// reaches the guest's IPv6 address (<paramref name="target6"/>), one bound on IPv4 its IPv4 address. Owner thread only.
/// </summary>
internal sealed class UdpForwarder(EventLoop loop, Udp udp, Func<IPv4Address> target, ForwardSpec spec, Counters counters, ILogger logger,
    Func<IPv6Address?>? target6 = null)
    : Forwarder(loop, target, spec, logger)
{
    private readonly bool _toIPv6 = spec.HostAddress.AddressFamily == AddressFamily.InterNetworkV6;
    private UdpForwardPort? _port;

    protected override void OnBound(Socket socket) => _port = new UdpForwardPort(socket, (ushort)Spec.GuestPort, Binding);

    /// <summary>The clients' flows send through this socket, so they end with it.</summary>
    protected override void OnStopping(bool resetConnections)
    {
        if (_port is not null) udp.CloseForwarded(_port);
        _port = null;
    }

    public override void OnPoll(uint events)
    {
        if (_port is null) return;
        if (!_toIPv6) { udp.OnForwardReadable(_port, FlowAddress.FromIPv4(Target)); return; }
        if (target6?.Invoke() is { } guest6) { udp.OnForwardReadable(_port, FlowAddress.FromIPv6(guest6)); return; }
        // The guest has not configured (or announced) an IPv6 address yet: the datagram is taken and counted.
        udp.DiscardForwarded(_port);
        counters.Drop(DropReason.ForwardNoGuest);
    }
}
