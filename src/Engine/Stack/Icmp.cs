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
/// ICMP (RFC 792). Echo requests to the gateway and the DNS relay are answered here. Echo requests to anywhere
/// else go out through the host's unprivileged ping sockets (Linux <c>SOCK_DGRAM</c>/<c>IPPROTO_ICMP</c>, allowed by
/// <c>net.ipv4.ping_group_range</c>): one socket per guest identifier and destination; the kernel picks the
/// identifier on the wire, and replies get the guest's identifier back. Where the host refuses ping sockets the
/// guest gets "destination unreachable, administratively prohibited" instead of silence. UDP and TCP report host
/// socket errors to the guest through <see cref="SendDestinationUnreachable"/>. Owner thread only.
/// </summary>
internal sealed class Icmp : ITimerClient, IDisposable
{
    /// <summary>Ping flows (guest identifier × destination) at once.</summary>
    public const int MaxFlows = 64;
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
    private readonly Dictionary<FlowKey, Flow> _flows = new();
    private readonly List<Flow> _expired = new();
    private readonly byte[] _scratch = new byte[65536];
    private long _refusedUntil = long.MinValue;
    private long _nextFlowId = 1;

    public Icmp(EventLoop loop, IPacketSender sender, NetworkConfig config, AddressMap map, Counters counters, ILogger logger)
    {
        _loop = loop;
        _sender = sender;
        _config = config;
        _map = map;
        _counters = counters;
        _logger = logger;
    }

    /// <summary>
    /// Makes a non-blocking host ping socket connected to the given host; replaceable in tests. Throws
    /// <see cref="SocketException"/> when the host refuses.
    /// </summary>
    internal Func<IPAddress, Socket> PingSocketFactory { get; set; } = OpenPingSocket;

    private static Socket OpenPingSocket(IPAddress host)
    {
        var socket = new Socket(AddressFamily.InterNetwork, SocketType.Dgram, ProtocolType.Icmp);
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

    public int FlowCount => _flows.Count;
    public long EchoRepliesSent { get; private set; }
    public long UnreachablesSent { get; private set; }

    private readonly record struct FlowKey(uint Guest, uint Destination, ushort Identifier);

    private sealed class Flow : IPollable
    {
        public required Icmp Owner;
        public required Socket Socket;
        public required int Fd;
        public int Token;
        public required FlowKey Key;
        public required IPv4Address Guest;
        public required IPv4Address Destination;
        public required IPAddress Host;
        public required ushort Identifier;
        public long LastActive;
        public long Id;
        public long BytesFromGuest;
        public long BytesToGuest;
        public DateTimeOffset Started;

        public void OnPoll(uint events) => Owner.OnReadable(this);
    }

    /// <summary>An ICMP message from the guest inside a checked, whole IPv4 packet.</summary>
    public void OnPacket(in IPv4Packet packet)
    {
        if (!IcmpPacket.TryParse(packet.Payload, out var icmp) || !icmp.IsChecksumValid) { _counters.Drop(DropReason.IcmpMalformed); return; }
        if (icmp.Type != IcmpPacket.TypeEchoRequest || icmp.Code != 0) { _counters.Drop(DropReason.IcmpUnsupported); return; }
        var destination = packet.Destination;
        if (_config.IsOwnAddress(destination)) { ReplyDirectly(in packet, in icmp); return; }
        if (!_map.TryMapOutbound(destination, 0, out var host, out _)) { _counters.Drop(DropReason.NotForUs); return; }
        Relay(in packet, in icmp, host);
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

    private void Relay(in IPv4Packet packet, in IcmpPacket echo, IPAddress host)
    {
        var key = new FlowKey(packet.Source.Value, packet.Destination.Value, echo.Identifier);
        if (!_flows.TryGetValue(key, out var flow))
        {
            if (_loop.NowMs < _refusedUntil) { Refused(in packet); return; }
            if (_flows.Count >= MaxFlows) { _counters.Drop(DropReason.IcmpFlowTableFull); return; }
            flow = Open(key, packet.Source, packet.Destination, host, echo.Identifier);
            if (flow is null) { Refused(in packet); return; }
        }
        flow.Socket.Send(echo.Bytes, SocketFlags.None, out var error);
        if (error != SocketError.Success)
        {
            if (error is SocketError.NetworkUnreachable or SocketError.HostUnreachable)
                SendDestinationUnreachable(IcmpPacket.CodeHostUnreachable, in packet);
            else _counters.Drop(DropReason.UdpSendFailed);
            return;
        }
        flow.LastActive = _loop.NowMs;
        flow.BytesFromGuest += echo.Bytes.Length;
    }

    private Flow? Open(FlowKey key, IPv4Address guest, IPv4Address destination, IPAddress host, ushort identifier)
    {
        Socket socket;
        try
        {
            socket = PingSocketFactory(host);
        }
        catch (SocketException e)
        {
            // EACCES when the host's ping_group_range leaves Emunet's group out.
            if (e.SocketErrorCode is SocketError.AccessDenied or SocketError.ProtocolNotSupported or SocketError.SocketNotSupported)
                _refusedUntil = _loop.NowMs + RefusalRetryMs;
            if (_logger.IsEnabled(LogLevel.Information))
                _logger.LogInformation("The host refuses ICMP ping sockets ({Error}); echo requests beyond the gateway are answered with destination unreachable. Allow them with sysctl net.ipv4.ping_group_range.", e.SocketErrorCode);
            return null;
        }
        var flow = new Flow
        {
            Owner = this, Socket = socket, Fd = (int)socket.Handle, Key = key, Guest = guest, Destination = destination,
            Host = host, Identifier = identifier, LastActive = _loop.NowMs, Id = _nextFlowId++, Started = DateTimeOffset.UtcNow,
        };
        flow.Token = _loop.Register(flow.Fd, Libc.EPOLLIN, flow);
        _flows.Add(key, flow);
        _loop.WakeAt(flow.LastActive + IdleTimeoutMs);
        return flow;
    }

    private void Refused(in IPv4Packet packet)
    {
        _counters.Drop(DropReason.IcmpPingRefused);
        SendDestinationUnreachable(IcmpPacket.CodeAdministrativelyProhibited, in packet);
    }

    private void OnReadable(Flow flow)
    {
        // Bounded: a flood on one socket cannot starve the loop.
        for (int budget = 0; budget < 64; budget++)
        {
            var packet = _sender.BeginPacket(flow.Destination, flow.Guest, IPv4Packet.ProtocolIcmp, _sender.MaxPayload);
            var span = packet.Payload;
            if (span.IsEmpty)
            {
                int dropped = flow.Socket.Receive(_scratch, SocketFlags.None, out var e);
                if (e != SocketError.Success || dropped < 0) return;
                _counters.Drop(DropReason.TransmitQueueFull);
                continue;
            }
            // A ping socket returns the ICMP message without the IP header.
            int n = flow.Socket.Receive(span, SocketFlags.Truncated, out var error);
            if (error == SocketError.WouldBlock) return;
            if (error != SocketError.Success) { _counters.Drop(DropReason.UdpSendFailed); return; }
            if (n > span.Length || !IcmpPacket.TryParse(span[..n], out var reply) || reply.Type != IcmpPacket.TypeEchoReply)
            {
                _counters.Drop(DropReason.IcmpMalformed);
                continue;
            }
            IcmpPacket.RewriteIdentifier(span[..n], flow.Identifier);
            packet.Commit(n);
            flow.LastActive = _loop.NowMs;
            flow.BytesToGuest += n;
            EchoRepliesSent++;
        }
    }

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

    public long OnTimer(long nowMs)
    {
        long next = long.MaxValue;
        _expired.Clear();
        foreach (var flow in _flows.Values)
        {
            long due = flow.LastActive + IdleTimeoutMs;
            if (due <= nowMs) _expired.Add(flow);
            else if (due < next) next = due;
        }
        foreach (var flow in _expired) Close(flow);
        _expired.Clear();
        return next;
    }

    public void OnGuestGone() => CloseAll();

    public void Snapshot(List<ConnectionInfo> into)
    {
        foreach (var f in _flows.Values)
        {
            into.Add(new ConnectionInfo
            {
                Id = f.Id, Protocol = FlowProtocol.Icmp, Direction = FlowDirection.Outbound,
                GuestEndPoint = new IPEndPoint(f.Guest.ToIPAddress(), f.Identifier),
                GuestPeerEndPoint = new IPEndPoint(f.Destination.ToIPAddress(), 0),
                HostRemoteEndPoint = new IPEndPoint(f.Host, 0),
                State = "echo", BytesFromGuest = f.BytesFromGuest, BytesToGuest = f.BytesToGuest, Started = f.Started,
            });
        }
    }

    private void Close(Flow flow)
    {
        _flows.Remove(flow.Key);
        _loop.Unregister(flow.Token, flow.Fd);
        flow.Socket.Dispose();
    }

    private void CloseAll()
    {
        _expired.Clear();
        _expired.AddRange(_flows.Values);
        foreach (var flow in _expired) Close(flow);
        _expired.Clear();
    }

    public void Dispose() => CloseAll();
}
