namespace Emunet.Engine.Diagnostics;

/// <summary>Why a frame or a flow was dropped. Each reason is a counter in <see cref="Counters"/>.</summary>
internal enum DropReason
{
    FrameTooShort,
    FrameTooLong,
    UnknownEtherType,
    NotForUs,
    ArpMalformed,
    IPv4Malformed,
    IPv4BadChecksum,
    IPv4FragmentTableFull,
    IcmpMalformed,
    IcmpUnsupported,
    UdpMalformed,
    UdpBadChecksum,
    UdpFlowTableFull,
    UdpSendFailed,
    /// <summary>A host ping socket refused an echo request or failed a receive.</summary>
    IcmpSendFailed,
    TcpMalformed,
    TcpBadChecksum,
    TcpNoConnection,
    TcpFlowTableFull,
    /// <summary>Guest data not taken (nor acknowledged) because the engine's buffer budget was spent; the guest resends it.</summary>
    TcpBufferBudget,
    /// <summary>A guest SYN refused: too many outbound connections already wait for their host connect.</summary>
    TcpHalfOpenLimit,
    /// <summary>A guest SYN refused: new outbound connections came faster than the connect rate allows.</summary>
    TcpConnectRateLimited,
    TcpOutOfWindow,
    TcpOutOfOrder,
    TcpUnreachable,
    DhcpMalformed,
    DnsMalformed,
    DnsUpstreamFailed,
    /// <summary>The DNS relay's table of pending queries was full (<c>DnsRelay.MaxPending</c>).</summary>
    DnsTableFull,
    TransmitQueueFull,
    GuestMacUnknown,
    DeviceProtocolError,
    ForwardRefused,
    /// <summary>A forwarded client reset at once: no guest was attached (or known yet) to open its connection into.</summary>
    ForwardNoGuest,
    /// <summary>An IPv6 frame while IPv6 is off, or an IPv6 transport the stack does not carry yet.</summary>
    IPv6NotSupported,
    IPv4FragmentOverlap,
    IPv4FragmentTooLarge,
    IPv4FragmentTimeout,
    IcmpPingRefused,
    IcmpFlowTableFull,
    UdpDatagramTooLarge,
    UdpNoRoute,
    /// <summary>A virtqueue ring or descriptor chain broke a VIRTIO 1.2 §2.7 rule (vhost-user device).</summary>
    VirtqueueMalformed,
    /// <summary>Handling threw; the loop caught it and dropped just that flow, frame or request (logged, rate-limited).</summary>
    InternalFault,
    /// <summary>The outbound policy refused the destination (the host outside its alias, --restrict, a deny rule).</summary>
    PolicyDenied,
    /// <summary>An IPv4 packet from the guest whose source is not the guest's address (spoofed, or another host's).</summary>
    SourceSpoofed,
    /// <summary>A receive buffer too small for a whole frame without VIRTIO_NET_F_MRG_RXBUF (VIRTIO 1.2 §5.1.6.3.1).</summary>
    VirtioBufferTooSmall,
    /// <summary>
    /// A connection not accepted, an emulator's or a forward client's: the next descriptor would be in the headroom
    /// kept free at the top of the open-file limit (or none was left: EMFILE/ENFILE); the listener pauses and retries.
    /// A client accepted onto a headroom descriptor anyway is reset.
    /// </summary>
    AcceptOutOfDescriptors,
    /// <summary>
    /// A virtio_net_hdr from the guest that lies: a checksum or segmentation request that was not negotiated, a
    /// csum_start/csum_offset outside the frame, a GSO type or size the frame cannot be (VIRTIO 1.2 §5.1.6.2).
    /// </summary>
    VirtioBadOffload,
    /// <summary>
    /// A guest's new TCP, UDP or ping flow refused: its host socket landed in the descriptor headroom (or none was
    /// left). TCP is reset to the guest; UDP and ICMP are dropped.
    /// </summary>
    FlowOutOfDescriptors,

    // ---- IPv6 ----
    /// <summary>An IPv6 packet that does not parse (version, payload length), or from a source that is not the guest's.</summary>
    IPv6Malformed,
    /// <summary>An extension-header chain refused (RFC 8200 §4): too long, truncated, hop-by-hop not first, two fragment headers.</summary>
    IPv6ExtensionChainRefused,
    IPv6FragmentOverlap,
    IPv6FragmentTooLarge,
    IPv6FragmentTimeout,
    IPv6FragmentTableFull,
    /// <summary>An ICMPv6 message too short or with a bad checksum (RFC 4443 §2.3).</summary>
    Icmpv6Malformed,
    /// <summary>A Neighbor Discovery message that fails RFC 4861 §6.1 / §7.1 validation (hop limit, code, options).</summary>
    NdpInvalid,
    Dhcpv6Malformed,
    /// <summary>An ICMPv6 error not sent: over the error rate limit (RFC 4443 §2.4 (f)).</summary>
    Icmpv6ErrorRateLimited,
    /// <summary>An IPv6 packet to an IPv4-mapped address (::ffff:a.b.c.d), which is never routed: refused, administratively prohibited.</summary>
    IPv6MappedDestination,
}

/// <summary>
/// Engine statistics. Written only by the owner thread; read by the control API as a snapshot (torn reads of
/// individual 64-bit counters cannot happen on 64-bit platforms).
/// </summary>
internal sealed class Counters
{
    private readonly long[] _drops = new long[Enum.GetValues<DropReason>().Length];

    public long FramesFromGuest;
    public long FramesToGuest;
    /// <summary>Of <see cref="FramesToGuest"/>, those written straight into the guest's receive buffers (direct receive; the device counts them).</summary>
    public long FramesToGuestDirect;
    public long BytesFromGuest;
    public long BytesToGuest;

    public void Drop(DropReason reason) => _drops[(int)reason]++;

    public long Drops(DropReason reason) => _drops[(int)reason];

    public long TotalDrops
    {
        get { long t = 0; foreach (var d in _drops) t += d; return t; }
    }

    /// <summary>Non-zero drop counters by reason name.</summary>
    public IReadOnlyDictionary<string, long> DropSnapshot()
    {
        var result = new Dictionary<string, long>();
        foreach (var r in Enum.GetValues<DropReason>())
            if (_drops[(int)r] != 0) result[r.ToString()] = _drops[(int)r];
        return result;
    }
}
