using System.Buffers.Binary;
using Emunet.Engine.Diagnostics;
using System.Net;
using System.Net.Sockets;
using Emunet.Engine.Interop;
using Emunet.Engine.Runtime;
using Emunet.Engine.Stack.Nat;
using Emunet.Engine.Wire;
using Microsoft.Extensions.Logging;

namespace Emunet.Engine.Stack;

/// <summary>
/// ICMP (RFC 792) and the echo relay of both families. Echo requests to the gateway and the DNS relay are answered
/// here (IPv6's to Emunet's own addresses by <c>IPv6/Icmpv6</c>). Echo requests to anywhere else go out through the
/// host's unprivileged ping sockets (Linux <c>SOCK_DGRAM</c> with <c>IPPROTO_ICMP</c>, or <c>IPPROTO_ICMPV6</c> for an
/// IPv6 guest's echo, <see cref="OnEcho6"/>; both allowed by <c>net.ipv4.ping_group_range</c>): one socket per guest
/// identifier and destination, in the one flow table; the kernel picks the identifier on the wire and computes the
/// checksum, and replies get the guest's identifier back (and, over IPv6, a checksum over the guest's pseudo-header).
/// Where the host refuses ping sockets of a family, the guest gets "destination unreachable, administratively
/// prohibited" instead of silence, and that family is not asked again for <see cref="RefusalRetryMs"/>. UDP and TCP
/// report host socket errors to IPv4 guests through <see cref="SendDestinationUnreachable"/>. Owner thread only.
/// </summary>
internal sealed class Icmp : IDisposable
{
    /// <summary>A ping flow with no echo for this long is closed.</summary>
    public const int IdleTimeoutMs = 30_000;
    /// <summary>After the host refuses a ping socket, how long before asking again.</summary>
    public const int RefusalRetryMs = 10_000;
    /// <summary>RFC 1812 §4.3.2.3: an error quotes as much of the original as fits in 576 bytes (576 - 20 - 8).</summary>
    public const int MaxQuote = 548;

    private readonly EventLoop _loop;
    private readonly IPacketSender _sender;
    private readonly NetworkConfig _config;
    private readonly AddressMap _map;
    private readonly Counters _counters;
    private readonly ILogger _logger;
    private readonly FlowTable _flows;
    private readonly byte[] _scratch = new byte[65536];
    private long _refusedUntil4 = long.MinValue;
    private long _refusedUntil6 = long.MinValue;

    public Icmp(EventLoop loop, IPacketSender sender, FlowTable flows, NetworkConfig config, AddressMap map, Counters counters, ILogger logger)
    {
        _loop = loop;
        _sender = sender;
        _flows = flows;
        _config = config;
        _map = map;
        _counters = counters;
        _logger = logger;
    }

    /// <summary>
    /// Makes a non-blocking host ping socket of the host address's family connected to the given host; replaceable in
    /// tests. Throws <see cref="SocketException"/> when the host refuses.
    /// </summary>
    internal Func<IPAddress, Socket> PingSocketFactory { get; set; } = OpenPingSocket;

    private static Socket OpenPingSocket(IPAddress host)
    {
        var socket = host.AddressFamily == AddressFamily.InterNetworkV6
            ? new Socket(AddressFamily.InterNetworkV6, SocketType.Dgram, ProtocolType.IcmpV6)
            : new Socket(AddressFamily.InterNetwork, SocketType.Dgram, ProtocolType.Icmp);
        try
        {
            socket.Blocking = false;
            socket.Connect(new IPEndPoint(host, 0));
            return socket;
        }
        catch
        {
            socket.Dispose();
            throw;
        }
    }

    public int FlowCount => _flows.CountOf(FlowProtocol.Icmp);
    public long EchoRepliesSent { get; private set; }
    public long UnreachablesSent { get; private set; }

    /// <summary>One ping flow: the guest's identifier toward one destination, through one host ping socket.</summary>
    private sealed class IcmpFlow(Icmp owner) : Flow
    {
        /// <summary>The guest and the destination it pinged, IPv4-mapped or IPv6 (the same family).</summary>
        public FlowAddress Guest;
        public FlowAddress Destination;
        public ushort Identifier;

        public override string StateName => "echo";

        public override void OnPoll(uint events) => owner.OnReadable(this);

        protected override void OnIdle() => owner.Close(this);

        protected override void Abort() => owner.Close(this);
    }

    /// <summary>An ICMP message from the guest inside a checked, whole IPv4 packet.</summary>
    public void OnPacket(in IPv4Packet packet)
    {
        if (!IcmpPacket.TryParse(packet.Payload, out var icmp) || !icmp.IsChecksumValid) { _counters.Drop(DropReason.IcmpMalformed); return; }
        if (icmp.Type != IcmpPacket.TypeEchoRequest || icmp.Code != 0) { _counters.Drop(DropReason.IcmpUnsupported); return; }
        var destination = packet.Destination;
        if (_config.IsOwnAddress(destination)) { ReplyDirectly(in packet, in icmp); return; }
        var verdict = _map.MapOutbound(destination, 0, out var host, out _);
        if (verdict == OutboundVerdict.Denied)
        {
            _counters.Drop(DropReason.PolicyDenied);
            SendDestinationUnreachable(IcmpPacket.CodeAdministrativelyProhibited, in packet);
            return;
        }
        if (verdict != OutboundVerdict.Mapped) { _counters.Drop(DropReason.NotForUs); return; }
        switch (Relay(FlowAddress.FromIPv4(packet.Source), FlowAddress.FromIPv4(destination), icmp.Identifier, icmp.Bytes, host))
        {
            case EchoOutcome.Refused: SendDestinationUnreachable(IcmpPacket.CodeAdministrativelyProhibited, in packet); break;
            case EchoOutcome.Unreachable: SendDestinationUnreachable(IcmpPacket.CodeHostUnreachable, in packet); break;
        }
    }

    /// <summary>What became of an echo request to relay, for the caller to report in its family's ICMP.</summary>
    internal enum EchoOutcome
    {
        /// <summary>Sent, or dropped and counted: nothing to tell the guest.</summary>
        Done,
        /// <summary>Refused by the policy or by the host (no ping sockets): administratively prohibited.</summary>
        Refused,
        /// <summary>The host has no route there.</summary>
        Unreachable,
    }

    /// <summary>
    /// An IPv6 guest's echo request (checksum checked, from a unicast guest address) to a unicast destination that is
    /// not Emunet's own nor IPv4-mapped: relayed through a host ICMPv6 ping socket under the outbound policy. Both
    /// borrowed for the call; <c>Icmpv6</c> reports the outcome (RFC 4443 §3.1).
    /// </summary>
    internal EchoOutcome OnEcho6(in IPv6Packet packet, in Icmpv6Packet echo)
    {
        var destination = FlowAddress.FromIPv6(packet.Destination);
        var verdict = _map.MapOutbound(destination, 0, out var host, out _);
        if (verdict == OutboundVerdict.Denied) { _counters.Drop(DropReason.PolicyDenied); return EchoOutcome.Refused; }
        if (verdict != OutboundVerdict.Mapped) { _counters.Drop(DropReason.NotForUs); return EchoOutcome.Done; }
        return Relay(FlowAddress.FromIPv6(packet.Source), destination, echo.Identifier, echo.Bytes, host);
    }

    private void ReplyDirectly(in IPv4Packet packet, in IcmpPacket echo)
    {
        int length = echo.Bytes.Length;
        // The guest sent more than its own MTU allows back; the reply could not reach it whole.
        if (length > _sender.MaxPayload) { _counters.Drop(DropReason.FrameTooLong); return; }
        var reply = _sender.BeginPacket(packet.Destination, packet.Source, IPv4Packet.ProtocolIcmp, length);
        var span = reply.Payload;
        if (span.IsEmpty) { _counters.Drop(DropReason.TransmitQueueFull); return; }
        // RFC 792: the reply echoes identifier, sequence and data.
        echo.Bytes.CopyTo(span);
        IcmpPacket.WriteHeader(span[..length], IcmpPacket.TypeEchoReply, 0, echo.Identifier, echo.Sequence);
        reply.Commit(length);
        EchoRepliesSent++;
    }

    /// <summary>Sends <paramref name="echo"/> (the whole ICMP or ICMPv6 message, borrowed) through its flow's ping socket.</summary>
    private EchoOutcome Relay(FlowAddress guest, FlowAddress destination, ushort identifier, ReadOnlySpan<byte> echo, IPAddress host)
    {
        var key = new FlowKey(FlowProtocol.Icmp, guest, identifier, destination, 0);
        IcmpFlow? flow;
        if (_flows.TryGet(key, out var found)) flow = (IcmpFlow)found;
        else
        {
            ref long refusedUntil = ref guest.IsIPv4 ? ref _refusedUntil4 : ref _refusedUntil6;
            if (_loop.NowMs < refusedUntil) { _counters.Drop(DropReason.IcmpPingRefused); return EchoOutcome.Refused; }
            if (!_flows.HasRoom(FlowProtocol.Icmp)) { _counters.Drop(DropReason.IcmpFlowTableFull); return EchoOutcome.Done; }
            flow = Open(key, host, ref refusedUntil, out bool outOfDescriptors);
            if (flow is null)
            {
                if (outOfDescriptors) return EchoOutcome.Done; // counted by the flow table: a drop, not a refusal by the host
                _counters.Drop(DropReason.IcmpPingRefused);
                return EchoOutcome.Refused;
            }
        }
        flow.HostSocket!.Send(echo, SocketFlags.None, out var error);
        if (error != SocketError.Success)
        {
            if (error is SocketError.NetworkUnreachable or SocketError.HostUnreachable) return EchoOutcome.Unreachable;
            _counters.Drop(DropReason.IcmpSendFailed);
            return EchoOutcome.Done;
        }
        flow.LastActive = _loop.NowMs;
        flow.BytesFromGuest += echo.Length;
        return EchoOutcome.Done;
    }

    /// <summary>
    /// A ping socket and its flow; null when the host refuses ping sockets, the table is full, or (with
    /// <paramref name="outOfDescriptors"/>, counted by the flow table) the socket would take a headroom descriptor.
    /// </summary>
    private IcmpFlow? Open(FlowKey key, IPAddress host, ref long refusedUntil, out bool outOfDescriptors)
    {
        outOfDescriptors = false;
        Socket socket;
        try
        {
            socket = PingSocketFactory(host);
        }
        catch (SocketException e) when (e.SocketErrorCode == SocketError.TooManyOpenSockets)
        {
            _flows.OutOfDescriptors(); // EMFILE/ENFILE: a drop, not a refusal by the host
            outOfDescriptors = true;
            return null;
        }
        catch (SocketException e)
        {
            // EACCES when the host's ping_group_range leaves Emunet's group out (it governs both families).
            if (e.SocketErrorCode is SocketError.AccessDenied or SocketError.ProtocolNotSupported or SocketError.SocketNotSupported
                or SocketError.AddressFamilyNotSupported)
                refusedUntil = _loop.NowMs + RefusalRetryMs;
            if (_logger.IsEnabled(LogLevel.Information))
                _logger.LogInformation("The host refuses {Family} ping sockets ({Error}); echo requests beyond Emunet's own addresses are answered with destination unreachable. Allow them with sysctl net.ipv4.ping_group_range.",
                    key.Guest.IsIPv4 ? "ICMP" : "ICMPv6", e.SocketErrorCode);
            return null;
        }
        if (_flows.AtHeadroom(socket))
        {
            socket.Dispose(); // the last descriptors are kept for the emulator and the control socket
            outOfDescriptors = true;
            return null;
        }
        var flow = new IcmpFlow(this)
        {
            Key = key, Direction = FlowDirection.Outbound, HostSocket = socket, HostFd = (int)socket.Handle, Guest = key.Guest,
            Destination = key.Peer, HostRemote = new IPEndPoint(host, 0), Identifier = key.GuestPort, LastActive = _loop.NowMs,
            IdleTimeoutMs = IdleTimeoutMs, Link = _sender.Link,
        };
        if (!_flows.TryAdd(flow))
        {
            socket.Dispose();
            return null;
        }
        flow.HostToken = _loop.Register(flow.HostFd, Libc.EPOLLIN, flow);
        return flow;
    }

    private void OnReadable(IcmpFlow flow)
    {
        // Bounded: a flood on one socket cannot starve the loop.
        bool ipv6 = !flow.Guest.IsIPv4;
        for (int budget = 0; budget < 64; budget++)
        {
            var packet = _sender.BeginFlowPacket(flow.Destination, flow.Guest, ipv6 ? IPv6Packet.NextHeaderIcmpv6 : IPv4Packet.ProtocolIcmp,
                _sender.MaxPayloadFor(flow.Guest));
            var span = packet.Payload;
            if (span.IsEmpty)
            {
                int dropped = flow.HostSocket!.Receive(_scratch, SocketFlags.None, out var e);
                if (e != SocketError.Success || dropped < 0) return;
                _counters.Drop(DropReason.TransmitQueueFull);
                continue;
            }
            // A ping socket returns the ICMP message without the IP header.
            int n = flow.HostSocket!.Receive(span, SocketFlags.Truncated, out var error);
            if (error == SocketError.WouldBlock) return;
            if (error != SocketError.Success) { _counters.Drop(DropReason.IcmpSendFailed); return; }
            if (n > span.Length || !IsEchoReply(span[..n], ipv6))
            {
                _counters.Drop(DropReason.IcmpMalformed);
                continue;
            }
            if (ipv6)
            {
                // RFC 4443 §2.3: the checksum covers the pseudo-header, whose addresses are the guest side's here.
                BinaryPrimitives.WriteUInt16BigEndian(span[Icmpv6Packet.Offsets.Identifier..], flow.Identifier);
                Icmpv6Packet.FinishChecksum(span[..n], flow.Destination.IPv6, flow.Guest.IPv6);
            }
            else IcmpPacket.RewriteIdentifier(span[..n], flow.Identifier);
            packet.Commit(n);
            flow.LastActive = _loop.NowMs;
            flow.BytesToGuest += n;
            EchoRepliesSent++;
        }
    }

    private static bool IsEchoReply(ReadOnlySpan<byte> message, bool ipv6) => ipv6
        ? Icmpv6Packet.TryParse(message, out var reply6) && reply6.Type == Icmpv6Packet.TypeEchoReply
        : IcmpPacket.TryParse(message, out var reply) && reply.Type == IcmpPacket.TypeEchoReply;

    /// <summary>
    /// Tells the guest that <paramref name="original"/> (a packet it sent, borrowed for the call) could not be
    /// delivered: ICMP type 3 with <paramref name="code"/> (<see cref="IcmpPacket.CodePortUnreachable"/>, ...).
    /// Follows RFC 1122 §3.2.2: never about an ICMP error, a broadcast or multicast, or a non-first fragment.
    /// </summary>
    public void SendDestinationUnreachable(byte code, in IPv4Packet original)
    {
        var destination = original.Destination;
        var source = original.Source;
        if (destination.IsBroadcast || destination.IsMulticast || destination == _config.BroadcastAddress) return;
        if (source == IPv4Address.Any || source.IsBroadcast || source.IsMulticast) return;
        if (original.FragmentOffset != 0) return;
        if (original.Protocol == IPv4Packet.ProtocolIcmp)
        {
            var payload = original.Payload;
            if (payload.Length < 1) return;
            byte type = payload[IcmpPacket.Offsets.Type];
            if (type != IcmpPacket.TypeEchoRequest && type != IcmpPacket.TypeEchoReply) return;
        }
        int quote = Math.Min(original.TotalLength, MaxQuote);
        // Port and protocol unreachable come from the host that was addressed; the rest from the gateway (router).
        var from = code is IcmpPacket.CodePortUnreachable or IcmpPacket.CodeProtocolUnreachable ? destination : _config.Gateway;
        int length = IcmpPacket.HeaderLength + quote;
        var packet = _sender.BeginPacket(from, source, IPv4Packet.ProtocolIcmp, length);
        var span = packet.Payload;
        if (span.IsEmpty) { _counters.Drop(DropReason.TransmitQueueFull); return; }
        original.Bytes[..quote].CopyTo(span[IcmpPacket.HeaderLength..]);
        IcmpPacket.WriteHeader(span[..length], IcmpPacket.TypeDestinationUnreachable, code, 0, 0);
        packet.Commit(length);
        UnreachablesSent++;
    }

    public void OnGuestGone() => _flows.AbortAll(FlowProtocol.Icmp, _sender.Link);

    private void Close(IcmpFlow flow)
    {
        _flows.Remove(flow);
        if (flow.HostSocket is null) return;
        _loop.Unregister(flow.HostToken, flow.HostFd);
        flow.HostSocket.Dispose();
        flow.HostSocket = null;
    }


    public void Dispose() => OnGuestGone();
}
