namespace Emunet.Engine.Link;

/// <summary>Limits every link shares.</summary>
internal static class LinkLimits
{
    /// <summary>The largest frame either way: a 65535-byte IPv4 packet plus Ethernet and a VLAN tag.</summary>
    public const int MaxFrameLength = 65535 + 18;
}

/// <summary>
/// The guest's network card as the stack sees it: a place frames come from and go to. The stream socket
/// (QEMU's <c>-netdev stream</c>/<c>socket</c> framing) and the vhost-user virtio-net device implement it; the stack
/// never knows which one it runs on. All members are called on the engine's owner thread.
/// </summary>
internal interface IFrameDevice
{
    /// <summary>True while a guest is attached.</summary>
    bool IsConnected { get; }

    /// <summary>
    /// Lends room for one outgoing Ethernet frame of up to <paramref name="maxLength"/> bytes, as one value: its
    /// <see cref="TransmitLease.Buffer"/> and its <see cref="TransmitLease.Commit(int)"/>. The lease is empty when the device
    /// cannot take the frame now (no guest, or its queue is full: the caller counts the drop or waits for
    /// <see cref="IFrameHandler.OnTransmitReady"/>). One lease is open at a time: a new one ends the last, uncommitted.
    /// </summary>
    TransmitLease BeginTransmit(int maxLength);

    /// <summary>
    /// Sends the first <paramref name="length"/> bytes of the lease numbered <paramref name="token"/>. Called by
    /// <see cref="TransmitLease.Commit(int)"/> only, which has checked the length against the buffer.
    /// </summary>
    void CommitTransmit(int token, int length);

    /// <summary>Bytes of frames the device can still queue toward the guest before it pushes back.</summary>
    int TransmitSpace { get; }

    /// <summary>
    /// What the device can finish for the stack on frames toward the guest, as negotiated with the guest now (it may
    /// change when a guest attaches). The stack asks before it builds a frame; a device without offloads (the stream
    /// link: QEMU's socket back-ends carry bare frames) keeps the default, and the stack then sends full checksums and
    /// segments of at most the MSS.
    /// </summary>
    LinkOffloads Offloads => LinkOffloads.None;

    /// <summary>
    /// As <see cref="CommitTransmit(int, int)"/>, with what the stack left to the device for this frame. Only offloads
    /// in <see cref="Offloads"/> may be asked for. A device without offloads never sees a non-empty one.
    /// </summary>
    void CommitTransmit(int token, int length, in TransmitOffload offload) => CommitTransmit(token, length);

    /// <summary>
    /// Direct receive: sends one frame given as its pieces (the headers, then the payload where it already lies, e.g.
    /// the two halves of a connection's send ring) straight into the guest's receive buffers, with no frame buffer in
    /// between. Same offload rules as <see cref="CommitTransmit(int, int, in TransmitOffload)"/>. False when the device
    /// cannot do it now (it has no direct path, frames are already waiting and order must hold, the guest posted no
    /// buffers, a capture wants whole frames): nothing was sent and the caller uses <see cref="BeginTransmit"/>.
    /// </summary>
    bool TryTransmitDirect(in FramePieces frame, in TransmitOffload offload) => false;
}

/// <summary>
/// One frame as up to three pieces that follow each other on the wire: <see cref="Head"/> (the headers), then
/// <see cref="Body"/> and <see cref="Tail"/> (the payload where it lies). Borrowed for the call it is given to.
/// </summary>
internal readonly ref struct FramePieces
{
    public FramePieces(ReadOnlySpan<byte> head, ReadOnlySpan<byte> body = default, ReadOnlySpan<byte> tail = default)
    {
        Head = head;
        Body = body;
        Tail = tail;
    }

    public ReadOnlySpan<byte> Head { get; }
    public ReadOnlySpan<byte> Body { get; }
    public ReadOnlySpan<byte> Tail { get; }

    /// <summary>The frame's length: all three pieces.</summary>
    public int Length => Head.Length + Body.Length + Tail.Length;

    /// <summary>Copies the frame's bytes from <paramref name="offset"/> on into all of <paramref name="destination"/>.</summary>
    public void CopyTo(int offset, Span<byte> destination)
    {
        if ((uint)offset > (uint)Length || destination.Length > Length - offset) throw new ArgumentOutOfRangeException(nameof(offset));
        offset = CopyPiece(Head, offset, ref destination);
        offset = CopyPiece(Body, offset, ref destination);
        CopyPiece(Tail, offset, ref destination);
    }

    /// <summary>Copies what <paramref name="piece"/> holds from <paramref name="offset"/> on; returns the offset into the next piece.</summary>
    private static int CopyPiece(ReadOnlySpan<byte> piece, int offset, ref Span<byte> destination)
    {
        if (offset >= piece.Length) return offset - piece.Length;
        int n = Math.Min(piece.Length - offset, destination.Length);
        piece.Slice(offset, n).CopyTo(destination);
        destination = destination[n..];
        return 0;
    }
}

/// <summary>Work a device can finish on frames toward the guest (VIRTIO 1.2 §5.1.6.4: the device's side of it).</summary>
[Flags]
internal enum LinkOffloads
{
    None = 0,
    /// <summary>
    /// TCP frames may carry only the pseudo-header sum in their checksum field (<see cref="TransmitOffload.PartialChecksum"/>);
    /// the guest is told the data is sound and does not verify it (VIRTIO_NET_F_GUEST_CSUM).
    /// </summary>
    PartialChecksum = 1,
    /// <summary>
    /// One TCP frame may carry up to 64 KiB of payload, which the guest takes as segments of
    /// <see cref="TransmitOffload.SegmentSize"/> bytes (VIRTIO_NET_F_GUEST_TSO4). Always with <see cref="PartialChecksum"/>.
    /// </summary>
    TcpSegmentation = 2,
}

/// <summary>
/// What the stack left to the device on one frame toward the guest, in offsets from the start of the frame. The
/// default asks for nothing: the frame is complete.
/// </summary>
internal readonly record struct TransmitOffload
{
    /// <summary>The L4 checksum field holds only the pseudo-header sum; the sum covers the frame from <see cref="ChecksumStart"/>.</summary>
    public bool PartialChecksum { get; init; }

    /// <summary>Where the checksummed L4 header starts (Ethernet and IPv4 headers before it).</summary>
    public int ChecksumStart { get; init; }

    /// <summary>Where the checksum field is, counted from <see cref="ChecksumStart"/> (TCP: 16).</summary>
    public int ChecksumOffset { get; init; }

    /// <summary>Payload bytes per segment the guest cuts this TCP frame into (its MSS); 0 when the frame is one segment.</summary>
    public int SegmentSize { get; init; }

    /// <summary>Bytes of headers (Ethernet, IPv4, TCP) in front of the payload, for a segmented frame.</summary>
    public int HeaderLength { get; init; }
}

/// <summary>
/// Room for one frame toward the guest, lent by <see cref="IFrameDevice.BeginTransmit"/>: fill
/// <see cref="Buffer"/>, then <see cref="Commit(int)"/> the bytes written. The buffer may be the device's own queue or,
/// later, the guest's receive buffers; either way it is valid until the commit or the next lease.
/// </summary>
internal readonly ref struct TransmitLease
{
    private readonly IFrameDevice? _device;
    private readonly int _token;

    public TransmitLease(IFrameDevice device, Span<byte> buffer, int token)
    {
        _device = device;
        Buffer = buffer;
        _token = token;
    }

    /// <summary>Where the frame is written; empty when nothing was lent.</summary>
    public Span<byte> Buffer { get; }

    public bool IsEmpty => _device is null || Buffer.IsEmpty;

    /// <summary>The device's name for this lease (what <see cref="IFrameDevice.CommitTransmit(int, int)"/> is given).</summary>
    public int Token => _token;

    /// <summary>Sends the first <paramref name="length"/> bytes of <see cref="Buffer"/>.</summary>
    public void Commit(int length)
    {
        if (_device is null) throw new InvalidOperationException("Commit on an empty transmit lease.");
        if ((uint)length > (uint)Buffer.Length) throw new ArgumentOutOfRangeException(nameof(length));
        _device.CommitTransmit(_token, length);
    }

    /// <summary>Sends the first <paramref name="length"/> bytes of <see cref="Buffer"/>, leaving <paramref name="offload"/> to the device.</summary>
    public void Commit(int length, in TransmitOffload offload)
    {
        if (_device is null) throw new InvalidOperationException("Commit on an empty transmit lease.");
        if ((uint)length > (uint)Buffer.Length) throw new ArgumentOutOfRangeException(nameof(length));
        _device.CommitTransmit(_token, length, in offload);
    }
}

/// <summary>What a device delivers to: the stack's Ethernet interface.</summary>
internal interface IFrameHandler
{
    /// <summary>One Ethernet frame from the guest. Borrows <paramref name="frame"/> for the duration of the call only.</summary>
    void OnFrame(ReadOnlySpan<byte> frame);

    /// <summary>A guest attached (a new emulator connection).</summary>
    void OnDeviceConnected();

    /// <summary>The guest went away; the stack resets what belonged to it.</summary>
    void OnDeviceDisconnected();

    /// <summary>The device's transmit queue has room again after pushing back.</summary>
    void OnTransmitReady();
}

/// <summary>Sees every frame a device moves (capture). Borrows <paramref name="frame"/> for the call only.</summary>
internal delegate void FrameTap(ReadOnlySpan<byte> frame, bool toGuest);
