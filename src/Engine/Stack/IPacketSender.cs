using Emunet.Engine.Wire;

namespace Emunet.Engine.Stack;

/// <summary>
/// How a protocol sends an IPv4 packet to the guest without copying: borrow room for the payload right behind
/// the Ethernet and IPv4 headers in the device's transmit buffer, fill it, commit. Owner thread only.
/// </summary>
internal interface IPacketSender
{
    /// <summary>
    /// Borrows room for up to <paramref name="maxPayload"/> bytes of IPv4 payload. Empty when the device cannot take a
    /// frame now (no guest, queue full, guest MAC unknown); the caller counts or retries.
    /// </summary>
    Span<byte> BeginPacket(IPv4Address source, IPv4Address destination, byte protocol, int maxPayload);

    /// <summary>Writes the IPv4 and Ethernet headers for the packet begun last and hands the frame to the device.</summary>
    void CommitPacket(int payloadLength);

    /// <summary>Bytes the device can still queue toward the guest.</summary>
    int TransmitSpace { get; }

    /// <summary>The payload size one packet can carry (guest MTU minus the IPv4 header).</summary>
    int MaxPayload { get; }
}
