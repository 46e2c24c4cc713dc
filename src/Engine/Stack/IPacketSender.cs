using Emunet.Engine.Link;
using Emunet.Engine.Stack.Nat;
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
    /// As the IPv4 overload, for addresses of either family (IPv4-mapped keys are IPv4). A sender that carries IPv4
    /// only lends nothing for IPv6.
    /// </summary>
    OutboundPacket BeginFlowPacket(FlowAddress source, FlowAddress destination, byte protocol, int maxPayload) =>
        source.IsIPv4 && destination.IsIPv4 ? BeginPacket(source.IPv4, destination.IPv4, protocol, maxPayload) : default;

    /// <summary>The payload one packet toward <paramref name="guest"/> carries: IPv6's header is 20 bytes longer.</summary>
    int MaxPayloadFor(FlowAddress guest) => guest.IsIPv4 ? MaxPayload : MaxPayload - (IPv6Packet.HeaderLength - IPv4Packet.MinHeaderLength);

    /// <summary>
    /// Writes the headers of <paramref name="packet"/> and hands the frame to the device. Called by
    /// <see cref="OutboundPacket.Commit(int)"/> only, which has checked the length.
    /// </summary>
    void CommitPacket(in OutboundPacket packet, int payloadLength, in TransmitOffload offload);

    /// <summary>
    /// Direct receive: sends one IPv4 packet whose transport header is <paramref name="transportHeader"/> and whose payload
    /// is <paramref name="body"/> then <paramref name="tail"/> where they already lie (a send ring's two halves), straight
    /// into the guest's buffers when the device can (<see cref="IFrameDevice.TryTransmitDirect"/>). The offsets of
    /// <paramref name="offload"/> count from the transport header, as with <see cref="OutboundPacket.Commit(int, in TransmitOffload)"/>.
    /// False when it was not sent (no direct path now, IPv6, guest unknown): the caller uses <see cref="BeginFlowPacket"/>.
    /// </summary>
    bool TrySendDirect(FlowAddress source, FlowAddress destination, byte protocol, ReadOnlySpan<byte> transportHeader,
        ReadOnlySpan<byte> body, ReadOnlySpan<byte> tail, in TransmitOffload offload) => false;

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
        : this(sender, frame, payloadOffset, maxPayload, token, FlowAddress.FromIPv4(source), FlowAddress.FromIPv4(destination), protocol)
    {
    }

    public OutboundPacket(IPacketSender sender, Span<byte> frame, int payloadOffset, int maxPayload, int token,
        FlowAddress source, FlowAddress destination, byte protocol)
    {
        _sender = sender;
        Frame = frame;
        Payload = frame.Slice(payloadOffset, maxPayload);
        Token = token;
        SourceAddress = source;
        DestinationAddress = destination;
        Protocol = protocol;
    }

    /// <summary>Where the IPv4 payload goes; empty when nothing was lent.</summary>
    public Span<byte> Payload { get; }

    /// <summary>The whole lent buffer, headers included (the sender's to fill at commit).</summary>
    public Span<byte> Frame { get; }

    /// <summary>The device's name for the lent buffer.</summary>
    public int Token { get; }

    /// <summary>The source as an IPv4 address (an IPv4 packet's).</summary>
    public IPv4Address Source => SourceAddress.IPv4;
    public IPv4Address Destination => DestinationAddress.IPv4;
    /// <summary>The addresses of either family; IPv4 ones are IPv4-mapped.</summary>
    public FlowAddress SourceAddress { get; }
    public FlowAddress DestinationAddress { get; }
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
