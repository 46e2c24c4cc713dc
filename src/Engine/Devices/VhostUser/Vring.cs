using Emunet.Engine.Devices.Virtio;
using Emunet.Engine.Interop;
using Emunet.Engine.Runtime;

namespace Emunet.Engine.Devices.VhostUser;

/// <summary>What serves a ring once it runs: the virtio-net data path.</summary>
internal interface IVringHandler
{
    /// <summary>
    /// <paramref name="vring"/> is running and may hold available buffers: it was kicked, started or enabled.
    /// Called on the owner thread.
    /// </summary>
    void OnRingReady(Vring vring);
}

/// <summary>
/// Theory of operation: one virtqueue as the front-end set it up (vhost-user.rst "Ring states"): size
/// (SET_VRING_NUM), ring addresses (SET_VRING_ADDR), base index (SET_VRING_BASE) and three eventfds. The ring starts
/// when its kick eventfd arrives (SET_VRING_KICK): the device watches it on the loop, checks the layout against guest
/// memory (<see cref="SplitQueue.Create"/>) and serves what is already available. It runs while started, enabled and
/// not broken; GET_VRING_BASE stops it and reports where it stood, so a restart carries on from there. A new memory
/// table rebuilds a started ring over the new mapping. A ring the guest broke (an available index that jumps, a head
/// out of range, a wrong-direction buffer) stops until the front-end restarts it. "Call" is signalled at most once per
/// loop batch (<see cref="SignalCall"/>). Owner thread only.
/// </summary>
internal sealed class Vring : IPollable
{
    private readonly VhostUserSession _session;
    private readonly IVringHandler _handler;
    private ulong _descriptorAddress, _usedAddress, _availAddress;
    private bool _hasAddresses;
    private uint _size;
    private ushort _base;
    private int _kickToken = -1;
    private int _callFd = -1;
    private int _errFd = -1;
    private bool _started;
    private bool _enabled;
    private bool _broken;
    private bool _needsCall;

    public Vring(VhostUserSession session, int index, IVringHandler handler)
    {
        _session = session;
        Index = index;
        _handler = handler;
    }

    /// <summary>The queue number (<see cref="VhostUserProtocol.RxQueue"/> or <see cref="VhostUserProtocol.TxQueue"/>).</summary>
    public int Index { get; }

    /// <summary>The ring over guest memory while started and its layout accepted; null otherwise.</summary>
    public SplitQueue? Queue { get; private set; }

    /// <summary>The eventfd the guest's driver kicks, or -1.</summary>
    public int KickFd { get; private set; } = -1;

    /// <summary>Kicked, enabled, its layout accepted and not broken.</summary>
    public bool Running => _started && Enabled && Queue is not null && !_broken;

    // vhost-user.rst "Ring states": without VHOST_USER_F_PROTOCOL_FEATURES a ring is enabled as soon as it starts.
    private bool Enabled => _enabled || !_session.Negotiated(VhostUserProtocol.VhostUserFProtocolFeatures);

    /// <summary>SET_VRING_NUM, already checked to be a power of 2 up to <see cref="SplitQueue.MaxSize"/>.</summary>
    public void SetSize(uint size) => _size = size;

    /// <summary>SET_VRING_BASE: where the device takes the next available entry when the ring starts.</summary>
    public void SetBase(ushort nextAvail) => _base = nextAvail;

    /// <summary>SET_VRING_ADDR: the rings' addresses in the front-end's address space, translated when the ring starts.</summary>
    public void SetAddresses(ulong descriptors, ulong used, ulong avail)
    {
        _descriptorAddress = descriptors;
        _usedAddress = used;
        _availAddress = avail;
        _hasAddresses = true;
    }

    /// <summary>SET_VRING_KICK. Takes ownership of <paramref name="fd"/>. False (and counted) when the ring cannot be served.</summary>
    public bool SetKick(int fd, bool noFd)
    {
        // A new kick restarts the ring where it stands; until it is accepted the ring is stopped.
        if (Queue is not null) _base = Queue.NextAvail;
        Queue = null;
        _started = false;
        RemoveKick();
        if (noFd)
        {
            // Polling mode (no kick fd): the device only reacts to eventfds, so it cannot serve this queue.
            _session.ProtocolError($"queue {Index} set to polling mode, which Emunet does not support");
            return false;
        }
        try { _kickToken = _session.Loop.Register(fd, Libc.EPOLLIN, this); }
        catch (InvalidOperationException)
        {
            _session.ProtocolError($"the kick descriptor for queue {Index} cannot be polled");
            Libc.close(fd);
            return false;
        }
        KickFd = fd;
        // vhost-user.rst: the ring starts when its kick descriptor arrives.
        _started = true;
        _broken = false;
        Build();
        Serve();
        return true;
    }

    /// <summary>SET_VRING_CALL. Takes ownership of <paramref name="fd"/> (-1: no interrupts).</summary>
    public void SetCall(int fd)
    {
        if (_callFd >= 0) Libc.close(_callFd);
        _callFd = fd;
    }

    /// <summary>SET_VRING_ERR. Takes ownership of <paramref name="fd"/>; kept, never signalled.</summary>
    public void SetErr(int fd)
    {
        if (_errFd >= 0) Libc.close(_errFd);
        _errFd = fd;
    }

    /// <summary>SET_VRING_ENABLE.</summary>
    public void SetEnabled(bool on)
    {
        _enabled = on;
        if (Running) Serve();
    }

    private void Build()
    {
        Queue = null;
        var memory = _session.Memory;
        if (memory is null || !_hasAddresses || _size == 0)
        {
            _session.QueueError(Index, VirtqError.RingOutOfRange, "started before its memory, size and addresses were set");
            _broken = true;
            return;
        }
        if (!memory.TryTranslateFrontEnd(_descriptorAddress, out var desc) || !memory.TryTranslateFrontEnd(_availAddress, out var avail)
            || !memory.TryTranslateFrontEnd(_usedAddress, out var used))
        {
            _session.QueueError(Index, VirtqError.RingOutOfRange, "its ring addresses are outside guest memory");
            _broken = true;
            return;
        }
        Queue = SplitQueue.Create(memory, _size, desc, avail, used, _base, _session.Negotiated(VhostUserProtocol.VirtioRingFIndirectDesc), out var error,
            _session.Negotiated(VhostUserProtocol.VirtioRingFEventIdx));
        if (Queue is null)
        {
            _session.QueueError(Index, error, "its layout was refused");
            _broken = true;
        }
    }

    /// <summary>After a new memory table: rebuild a started queue over it, keeping its position.</summary>
    public void Remap()
    {
        if (!_started) return;
        if (Queue is not null) _base = Queue.NextAvail;
        Build();
    }

    /// <summary>Counts and logs a bad chain or buffer on this ring; the ring keeps running.</summary>
    public void Fault(VirtqError error, string what) => _session.QueueError(Index, error, what);

    /// <summary>Stops the ring for something the guest broke, until the front-end restarts it.</summary>
    public void Break(VirtqError error, string what)
    {
        Fault(error, what + "; the queue stops until the front-end restarts it");
        _broken = true;
    }

    /// <summary>Makes the used elements added since the last call visible and asks for a call at the end of the batch.</summary>
    public void PublishUsed()
    {
        Queue?.PublishUsed();
        _needsCall = true;
    }

    /// <summary>End of batch: one call for what was used since the last, unless the driver suppressed it (VIRTIO 1.2 §2.7.7).</summary>
    public void SignalCall()
    {
        if (!_needsCall) return;
        _needsCall = false;
        if (_callFd >= 0 && Queue is not null && Queue.NeedsInterrupt()) LibcVhost.SignalEventFd(_callFd);
    }

    /// <summary>GET_VRING_BASE: stops the ring and returns where the device stopped (vhost-user.rst).</summary>
    public ushort Stop()
    {
        if (Queue is not null) _base = Queue.NextAvail;
        RemoveKick();
        if (_callFd >= 0) { Libc.close(_callFd); _callFd = -1; }
        _started = false;
        Queue = null;
        _needsCall = false;
        return _base;
    }

    /// <summary>Back to the state of a fresh connection: stopped, every descriptor closed, nothing set.</summary>
    public void Reset()
    {
        Stop();
        if (_errFd >= 0) { Libc.close(_errFd); _errFd = -1; }
        _size = 0;
        _base = 0;
        _hasAddresses = false;
        _enabled = false;
        _broken = false;
    }

    private void RemoveKick()
    {
        if (KickFd < 0) return;
        _session.Loop.Unregister(_kickToken, KickFd);
        Libc.close(KickFd);
        KickFd = -1;
        _kickToken = -1;
    }

    public void OnPoll(uint events)
    {
        if (KickFd < 0) return;
        LibcVhost.DrainEventFd(KickFd);
        Serve();
    }

    private void Serve()
    {
        if (Running) _handler.OnRingReady(this);
    }
}
