using Emunet.Engine.Wire;

namespace Emunet.Engine.Stack.Tcp;

/// <summary>
/// The seam between the IPv4 layer (<c>NetStack</c>) and the TCP implementation. Owner thread only.
/// </summary>
internal interface ITcpHandler
{
    /// <summary>A TCP segment from the guest inside a checked IPv4 packet (not a fragment). Borrows the packet for the call.</summary>
    void OnSegment(in IPv4Packet packet);

    /// <summary>The device has room again: resume sending toward the guest.</summary>
    void OnTransmitReady();

    /// <summary>The guest went away (emulator disconnected): reset every connection and close its host socket.</summary>
    void OnGuestGone();
}
