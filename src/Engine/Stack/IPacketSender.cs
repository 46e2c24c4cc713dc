using Emunet.Engine.Link;
using Emunet.Engine.Wire;

namespace Emunet.Engine.Stack;

/// <summary>
/// How a protocol sends an IPv4 packet to the guest without copying: borrow room for the payload right behind
/// the link and IPv4 headers (<see cref="BeginPacket"/>), fill <see cref="OutboundPacket.Payload"/>, then
/// <see cref="OutboundPacket.Commit(int)"/>. Owner thread only.
/// </summary>
internal interface IPacketSender
{
    /// <summary>
    /// Lends room for up to <paramref name="maxPayload"/> bytes of IPv4 payload. Empty when the device cannot take a
    /// frame now (no guest, queue full, guest MAC unknown); the caller counts or retries. One packet is open at a time.
    /// </summary>
    OutboundPacket BeginPacket(IPv4Address source, IPv4Address destination, byte protocol, int maxPayload);

    /// <summary>
    /// Writes the headers of <paramref name="packet"/> and hands the frame to the device. Called by
    /// <see cref="OutboundPacket.Commit(int)"/> only, which has checked the length.
    /// </summary>
    void CommitPacket(in OutboundPacket packet, int payloadLength, in TransmitOffload offload);

    /// <summary>
    /// What the device finishes on packets toward the guest (partial checksums, TCP segmentation), as negotiated now;
    /// <see cref="LinkOffloads.None"/> on the stream link.
    /// </summary>
    LinkOffloads Offloads { get; }

    /// <summary>Bytes the device can still queue toward the guest.</summary>
    int TransmitSpace { get; }

    /// <summary>The payload size one packet can carry (guest MTU minus the IPv4 header).</summary>
    int MaxPayload { get; }

    /// <summary>A guest is attached and known (its MAC learned): a packet begun now can reach it.</summary>
    bool GuestReachable { get; }

    /// <summary>The guest link this sender reaches (0 for the first); flows opened through it carry it.</summary>
    int Link => 0;
}

/// <summary>
/// One IPv4 packet on its way to the guest, lent by <see cref="IPacketSender.BeginPacket"/>: the payload area, the
/// addresses its headers will carry, and its own <see cref="Commit(int)"/>. Valid until the commit or the next packet.
/// </summary>
internal readonly ref struct OutboundPacket
{
    private readonly IPacketSender? _sender;

    public OutboundPacket(IPacketSender sender, Span<byte> frame, int payloadOffset, int maxPayload, int token,
        IPv4Address source, IPv4Address destination, byte protocol)
    {
        _sender = sender;
        Frame = frame;
        Payload = frame.Slice(payloadOffset, maxPayload);
        Token = token;
        Source = source;
        Destination = destination;
        Protocol = protocol;
    }

    /// <summary>Where the IPv4 payload goes; empty when nothing was lent.</summary>
    public Span<byte> Payload { get; }

    /// <summary>The whole lent buffer, headers included (the sender's to fill at commit).</summary>
    public Span<byte> Frame { get; }

    /// <summary>The device's name for the lent buffer.</summary>
    public int Token { get; }

    public IPv4Address Source { get; }
    public IPv4Address Destination { get; }
    public byte Protocol { get; }

    public bool IsEmpty => _sender is null;

    /// <summary>Sends the packet with the first <paramref name="payloadLength"/> bytes of <see cref="Payload"/>.</summary>
    public void Commit(int payloadLength) => Commit(payloadLength, default);

    /// <summary>
    /// Sends the packet and leaves <paramref name="offload"/> to the device; its offsets count from the start of the
    /// IPv4 payload (the sender adds the link and IPv4 headers in front).
    /// </summary>
    public void Commit(int payloadLength, in TransmitOffload offload)
    {
        if (_sender is null) throw new InvalidOperationException("Commit on an empty packet.");
        if ((uint)payloadLength > (uint)Payload.Length) throw new ArgumentOutOfRangeException(nameof(payloadLength));
        _sender.CommitPacket(in this, payloadLength, in offload);
    }
}
