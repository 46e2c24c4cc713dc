using System.Net.Sockets;
using Emunet.Engine.Runtime;
using Emunet.Engine.Stack;
using Emunet.Engine.Wire;
using Microsoft.Extensions.Logging;

namespace Emunet.Engine.Forwarding;

/// <summary>
/// A UDP forward: each host client sending to the bound socket gets a flow from the gateway (10.0.2.2, a port per
/// client) to the guest's port, and the guest's replies go back to that client through the same socket
/// (<see cref="Udp.OnForwardReadable"/>). Owner thread only.
/// </summary>
internal sealed class UdpForwarder(EventLoop loop, Udp udp, Func<IPv4Address> target, ForwardSpec spec, ILogger logger)
    : Forwarder(loop, target, spec, logger)
{
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
        if (_port is not null) udp.OnForwardReadable(_port, Stack.Nat.FlowAddress.FromIPv4(Target));
    }
}
