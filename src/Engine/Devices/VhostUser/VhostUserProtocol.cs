namespace Emunet.Engine.Devices.VhostUser;

/// <summary>
/// vhost-user front-end requests (QEMU docs/interop/vhost-user.rst, "Front-end message types"). Only those the device
/// handles are named; any other is answered with a failure when the front-end waits for a reply and ignored otherwise.
/// </summary>
internal enum VhostUserRequest : uint
{
    GetFeatures = 1,
    SetFeatures = 2,
    SetOwner = 3,
    ResetOwner = 4,
    SetMemTable = 5,
    SetLogBase = 6,
    SetLogFd = 7,
    SetVringNum = 8,
    SetVringAddr = 9,
    SetVringBase = 10,
    GetVringBase = 11,
    SetVringKick = 12,
    SetVringCall = 13,
    SetVringErr = 14,
    GetProtocolFeatures = 15,
    SetProtocolFeatures = 16,
    GetQueueNum = 17,
    SetVringEnable = 18,
}

/// <summary>Wire constants of the vhost-user protocol and the virtio-net feature set the device offers.</summary>
internal static class VhostUserProtocol
{
    /// <summary>Header: u32 request, u32 flags, u32 size (vhost-user.rst "Message specification").</summary>
    public const int HeaderSize = 12;
    /// <summary>Largest payload accepted: SET_MEM_TABLE with 8 regions is 8 + 8*32 = 264; anything much larger is refused.</summary>
    public const int MaxPayload = 4096;
    public const uint FlagVersionMask = 0x3;
    public const uint Version = 0x1;
    public const uint FlagReply = 0x4;
    public const uint FlagNeedReply = 0x8;

    /// <summary>u64 payload of SET_VRING_KICK/CALL/ERR: bits 0-7 the queue index, bit 8 "no file descriptor".</summary>
    public const ulong VringIndexMask = 0xff;
    public const ulong VringNoFd = 0x100;

    /// <summary>SET_MEM_TABLE: u32 nregions, u32 padding, then regions of 4 u64 (guest_phys, size, user_addr, mmap_offset).</summary>
    public const int MemoryRegionSize = 32;

    // Feature bits (VIRTIO 1.2 §6, §5.1.3; vhost-user.rst).
    /// <summary>The device takes frames with a partial checksum (NEEDS_CSUM) from the guest.</summary>
    public const int VirtioNetFCsum = 0;
    /// <summary>The guest takes frames with a partial checksum, or marked DATA_VALID, from the device.</summary>
    public const int VirtioNetFGuestCsum = 1;
    /// <summary>The guest takes TCPv4 GSO frames (up to 64 KiB, gso_size = MSS) from the device.</summary>
    public const int VirtioNetFGuestTso4 = 7;
    /// <summary>The device takes TCPv4 GSO frames from the guest.</summary>
    public const int VirtioNetFHostTso4 = 11;
    /// <summary>The device takes GSO frames with the ECN bit (CWR) in gso_type; not offered.</summary>
    public const int VirtioNetFHostEcn = 13;
    public const int VirtioNetFMrgRxbuf = 15;
    public const int VirtioRingFIndirectDesc = 28;
    /// <summary>used_event / avail_event instead of the NO_INTERRUPT / NO_NOTIFY flags (VIRTIO 1.2 §2.7.10).</summary>
    public const int VirtioRingFEventIdx = 29;
    public const int VhostUserFProtocolFeatures = 30;
    public const int VirtioFVersion1 = 32;

    // Protocol feature bits (vhost-user.rst "Protocol features").
    public const int ProtocolFReplyAck = 3;

    /// <summary>
    /// What the device offers: VERSION_1, MRG_RXBUF (a frame may span several receive buffers), INDIRECT_DESC,
    /// EVENT_IDX, PROTOCOL_FEATURES, and the IPv4 offloads both ways: CSUM and HOST_TSO4 (the guest leaves TCP/UDP
    /// checksums and TCP segmentation to the device), GUEST_CSUM and GUEST_TSO4 (the device marks checksums valid, or
    /// partial, and may send TCP frames of up to 64 KiB). §5.1.3.1: HOST_TSO4 needs CSUM, GUEST_TSO4 needs GUEST_CSUM.
    /// </summary>
    public const ulong OfferedFeatures =
        (1ul << VirtioFVersion1) | (1ul << VirtioNetFMrgRxbuf) | (1ul << VirtioRingFIndirectDesc) | (1ul << VhostUserFProtocolFeatures)
        | (1ul << VirtioRingFEventIdx) | (1ul << VirtioNetFCsum) | (1ul << VirtioNetFGuestCsum) | (1ul << VirtioNetFHostTso4)
        | (1ul << VirtioNetFGuestTso4);

    public const ulong OfferedProtocolFeatures = 1ul << ProtocolFReplyAck;

    /// <summary>Queues: 0 receive (to the guest), 1 transmit (from the guest); VIRTIO 1.2 §5.1.2 without MQ.</summary>
    public const int QueueCount = 2;
    public const int RxQueue = 0;
    public const int TxQueue = 1;
}
