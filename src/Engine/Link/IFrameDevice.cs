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
    /// <see cref="TransmitLease.Buffer"/> and its <see cref="TransmitLease.Commit"/>. The lease is empty when the device
    /// cannot take the frame now (no guest, or its queue is full: the caller counts the drop or waits for
    /// <see cref="IFrameHandler.OnTransmitReady"/>). One lease is open at a time: a new one ends the last, uncommitted.
    /// </summary>
    TransmitLease BeginTransmit(int maxLength);

    /// <summary>
    /// Sends the first <paramref name="length"/> bytes of the lease numbered <paramref name="token"/>. Called by
    /// <see cref="TransmitLease.Commit"/> only, which has checked the length against the buffer.
    /// </summary>
    void CommitTransmit(int token, int length);

    /// <summary>Bytes of frames the device can still queue toward the guest before it pushes back.</summary>
    int TransmitSpace { get; }
}

/// <summary>
/// Room for one frame toward the guest, lent by <see cref="IFrameDevice.BeginTransmit"/>: fill
/// <see cref="Buffer"/>, then <see cref="Commit"/> the bytes written. The buffer may be the device's own queue or,
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

    /// <summary>The device's name for this lease (what <see cref="IFrameDevice.CommitTransmit"/> is given).</summary>
    public int Token => _token;

    /// <summary>Sends the first <paramref name="length"/> bytes of <see cref="Buffer"/>.</summary>
    public void Commit(int length)
    {
        if (_device is null) throw new InvalidOperationException("Commit on an empty transmit lease.");
        if ((uint)length > (uint)Buffer.Length) throw new ArgumentOutOfRangeException(nameof(length));
        _device.CommitTransmit(_token, length);
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
