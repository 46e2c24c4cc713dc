namespace Emunet.Engine.Devices;

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
    /// Borrows room for one outgoing Ethernet frame of up to <paramref name="length"/> bytes. Returns an empty span when the
    /// device cannot take it now (no guest, or its queue is full: the caller counts the drop or waits for
    /// <see cref="IFrameHandler.OnTransmitReady"/>). The span is valid until <see cref="CommitTransmit"/> or the next call.
    /// Contract: a second call with the same length before <see cref="CommitTransmit"/> returns the same memory (a class
    /// cannot hold a span, so a sender may borrow the buffer again to finish the frame).
    /// </summary>
    Span<byte> GetTransmitBuffer(int length);

    /// <summary>Sends the first <paramref name="length"/> bytes of the buffer last borrowed.</summary>
    void CommitTransmit(int length);

    /// <summary>Bytes of frames the device can still queue toward the guest before it pushes back.</summary>
    int TransmitSpace { get; }
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
