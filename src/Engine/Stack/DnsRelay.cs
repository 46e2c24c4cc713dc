using System.Buffers.Binary;
using System.Net;
using System.Net.Sockets;
using Emunet.Engine.Diagnostics;
using Emunet.Engine.Interop;
using Emunet.Engine.Runtime;
using Emunet.Engine.Wire;
using Microsoft.Extensions.Logging;

namespace Emunet.Engine.Stack;

/// <summary>
/// Theory of operation: the DNS relay at 10.0.2.3:53 (UDP). Only well-formed queries are relayed (one question, opcode
/// QUERY; <see cref="DnsMessage.IsRelayableQuery"/>). Each one takes a slot of a fixed table of its own
/// (<see cref="MaxPending"/>, apart from the UDP flow table, so a flood of queries cannot crowd out other flows and
/// other flows cannot starve DNS), gets a fresh random ID (so two guest sockets using the same ID never cross, and an
/// off-path answer has to guess it, RFC 5452 §4.3) and goes to the upstream that answered last. With no answer
/// within <see cref="UpstreamTimeoutMs"/> (or a refusal) it goes to the next upstream, until every one has been
/// tried: the host's resolvers or every <c>--dns-upstream</c>, in order. An answer is accepted only from the
/// upstream asked, with the ID given and the same question, and leaves toward the guest from 10.0.2.3:53 with the
/// guest's own ID. One connected socket per upstream; nothing allocated per query. Owner thread only.
/// </summary>
internal sealed class DnsRelay : ITimerClient, IDisposable
{
    /// <summary>Queries waiting for an answer at once.</summary>
    public const int MaxPending = 256;
    /// <summary>How long one upstream may take before the query goes to the next.</summary>
    public const int UpstreamTimeoutMs = 1500;
    /// <summary>The largest query relayed (EDNS0 buffers are rarely above 1232; a query is far smaller).</summary>
    public const int MaxQueryLength = 1500;
    /// <summary>Answers handled per readiness event.</summary>
    private const int AnswersPerPoll = 64;

    private readonly EventLoop _loop;
    private readonly IPacketSender _sender;
    private readonly NetworkConfig _config;
    private readonly Counters _counters;
    private readonly ILogger _logger;
    private readonly Upstream[] _upstreams;
    private readonly Slot[] _slots = new Slot[MaxPending];
    private readonly byte[] _queries = new byte[MaxPending * MaxQueryLength];
    private readonly short[] _slotById = new short[65536];
    private readonly Stack<short> _free = new(MaxPending);
    private readonly byte[] _answer = new byte[65536];
    private int _preferred;

    private struct Slot
    {
        public bool InUse;
        /// <summary>The guest's address, IPv4-mapped or IPv6: the answer goes back from the relay address of its family.</summary>
        public Nat.FlowAddress Guest;
        public ushort GuestPort;
        public ushort GuestId;
        public ushort RelayId;
        public int Upstream;
        public int Tried;
        public int Length;
        public int QuestionLength;
        public long Deadline;
    }

    private sealed class Upstream(DnsRelay relay, int index, IPEndPoint endPoint) : IPollable
    {
        public readonly IPEndPoint EndPoint = endPoint;
        public Socket? Socket;
        public int Fd = -1;
        public int Token = -1;
        public void OnPoll(uint events) => relay.OnAnswers(this, index);
    }

    public DnsRelay(EventLoop loop, IPacketSender sender, NetworkConfig config, IReadOnlyList<IPEndPoint> upstreams, Counters counters, ILogger logger)
    {
        _loop = loop;
        _sender = sender;
        _config = config;
        _counters = counters;
        _logger = logger;
        _upstreams = new Upstream[upstreams.Count];
        for (int i = 0; i < upstreams.Count; i++) _upstreams[i] = new Upstream(this, i, upstreams[i]);
        Array.Fill(_slotById, (short)-1);
        for (short i = MaxPending - 1; i >= 0; i--) _free.Push(i);
    }

    /// <summary>Queries waiting for an answer now.</summary>
    public int PendingCount => MaxPending - _free.Count;

    /// <summary>A datagram from the guest to 10.0.2.3:53; both views borrowed for the call.</summary>
    public void OnQuery(in IPv4Packet packet, in UdpDatagram datagram) => OnQuery(Nat.FlowAddress.FromIPv4(packet.Source), in datagram);

    /// <summary>A query from a guest address of either family (IPv6: to fec0::3:53); the datagram is borrowed for the call.</summary>
    public void OnQuery(Nat.FlowAddress guest, in UdpDatagram datagram)
    {
        var payload = datagram.Payload;
        if (payload.Length > MaxQueryLength || !DnsMessage.TryParse(payload, out var query) || !query.IsRelayableQuery)
        {
            _counters.Drop(DropReason.DnsMalformed);
            return;
        }
        if (_upstreams.Length == 0) { _counters.Drop(DropReason.DnsUpstreamFailed); return; }
        if (!_free.TryPop(out short index)) { _counters.Drop(DropReason.DnsTableFull); return; }
        query.TryGetQuestion(out var question);
        ref var slot = ref _slots[index];
        slot = new Slot
        {
            InUse = true, Guest = guest, GuestPort = datagram.SourcePort, GuestId = query.Id, RelayId = NewId(),
            Upstream = _preferred, Tried = 0, Length = payload.Length, QuestionLength = question.Length,
        };
        _slotById[slot.RelayId] = index;
        var stored = Query(index);
        payload.CopyTo(stored);
        BinaryPrimitives.WriteUInt16BigEndian(stored, slot.RelayId);
        Send(index);
    }

    /// <summary>An ID no pending query uses (at most <see cref="MaxPending"/> of 65536 are taken).</summary>
    private ushort NewId()
    {
        ushort id;
        do id = (ushort)Random.Shared.Next(65536); while (_slotById[id] >= 0);
        return id;
    }

    private Span<byte> Query(int index) => _queries.AsSpan(index * MaxQueryLength, _slots[index].Length);

    /// <summary>Sends the slot's query to its current upstream and arms its deadline; moves on when sending fails.</summary>
    private void Send(int index)
    {
        ref var slot = ref _slots[index];
        while (slot.Tried < _upstreams.Length)
        {
            var upstream = _upstreams[slot.Upstream];
            slot.Tried++;
            slot.Deadline = _loop.NowMs + UpstreamTimeoutMs;
            if (Open(upstream))
            {
                upstream.Socket!.Send(Query(index), SocketFlags.None, out var error);
                if (error == SocketError.Success)
                {
                    _loop.WakeAt(slot.Deadline);
                    return;
                }
            }
            slot.Upstream = (slot.Upstream + 1) % _upstreams.Length;
        }
        _counters.Drop(DropReason.DnsUpstreamFailed);
        Free(index);
    }

    private bool Open(Upstream upstream)
    {
        if (upstream.Socket is not null) return true;
        Socket? socket = null;
        try
        {
            socket = new Socket(upstream.EndPoint.AddressFamily, SocketType.Dgram, ProtocolType.Udp) { Blocking = false };
            socket.Connect(upstream.EndPoint); // the kernel then filters answers to this upstream and reports refusals
        }
        catch (SocketException e)
        {
            socket?.Dispose();
            if (_logger.IsEnabled(LogLevel.Warning)) _logger.LogWarning("DNS upstream {Upstream} cannot be used: {Error}", upstream.EndPoint, e.SocketErrorCode);
            return false;
        }
        upstream.Socket = socket;
        upstream.Fd = (int)socket.Handle;
        upstream.Token = _loop.Register(upstream.Fd, Libc.EPOLLIN, upstream);
        return true;
    }

    private void OnAnswers(Upstream upstream, int index)
    {
        var socket = upstream.Socket;
        if (socket is null) return;
        for (int budget = 0; budget < AnswersPerPoll; budget++)
        {
            int n = socket.Receive(_answer, SocketFlags.None, out var error);
            if (error == SocketError.WouldBlock) return;
            if (error == SocketError.ConnectionRefused)
            {
                // RFC 1122 §4.1.3.3: the upstream's port is closed; its queries move on at once.
                FailOverFrom(index);
                continue;
            }
            if (error != SocketError.Success) return;
            Answer(index, _answer.AsSpan(0, n));
        }
    }

    private void Answer(int upstream, ReadOnlySpan<byte> answer)
    {
        if (!DnsMessage.TryParse(answer, out var message) || !message.IsResponse) { _counters.Drop(DropReason.DnsMalformed); return; }
        short index = _slotById[message.Id];
        if (index < 0 || _slots[index].Upstream != upstream
            || !message.TryGetQuestion(out var question)
            || !question.SequenceEqual(Query(index).Slice(DnsMessage.HeaderLength, _slots[index].QuestionLength)))
        {
            _counters.Drop(DropReason.DnsMalformed); // late, spoofed, or for another question
            return;
        }
        ref var slot = ref _slots[index];
        int length = UdpDatagram.HeaderLength + answer.Length;
        if (length > _sender.MaxPayloadFor(slot.Guest)) { _counters.Drop(DropReason.UdpDatagramTooLarge); Free(index); return; }
        var relay = slot.Guest.IsIPv4 ? Nat.FlowAddress.FromIPv4(_config.Dns) : Nat.FlowAddress.FromIPv6(_config.IPv6Dns);
        var packet = _sender.BeginFlowPacket(relay, slot.Guest, IPv4Packet.ProtocolUdp, length);
        if (packet.IsEmpty) { _counters.Drop(DropReason.TransmitQueueFull); Free(index); return; }
        var body = packet.Payload[UdpDatagram.HeaderLength..];
        answer.CopyTo(body);
        BinaryPrimitives.WriteUInt16BigEndian(body, slot.GuestId);
        if (slot.Guest.IsIPv4) UdpDatagram.WriteHeader(packet.Payload, _config.Dns, slot.Guest.IPv4, UdpDnsPort, slot.GuestPort, answer.Length);
        else IPv6Packet.WriteUdpHeader(packet.Payload, _config.IPv6Dns, slot.Guest.IPv6, UdpDnsPort, slot.GuestPort, length);
        packet.Commit(length);
        _preferred = upstream;
        Free(index);
    }

    private const ushort UdpDnsPort = 53;

    private void FailOverFrom(int upstream)
    {
        for (int i = 0; i < MaxPending; i++)
        {
            ref var slot = ref _slots[i];
            if (slot.InUse && slot.Upstream == upstream) MoveOn(i);
        }
    }

    /// <summary>The slot's upstream failed it: a new ID (a late answer from the old one is not taken), the next upstream.</summary>
    private void MoveOn(int index)
    {
        ref var slot = ref _slots[index];
        _slotById[slot.RelayId] = -1;
        slot.RelayId = NewId();
        _slotById[slot.RelayId] = (short)index;
        BinaryPrimitives.WriteUInt16BigEndian(Query(index), slot.RelayId);
        slot.Upstream = (slot.Upstream + 1) % _upstreams.Length;
        Send(index);
    }

    public long OnTimer(long nowMs)
    {
        long next = long.MaxValue;
        for (int i = 0; i < MaxPending; i++)
        {
            ref var slot = ref _slots[i];
            if (!slot.InUse) continue;
            if (slot.Deadline <= nowMs)
            {
                MoveOn(i); // no answer in time
                if (!slot.InUse) continue;
            }
            if (slot.Deadline < next) next = slot.Deadline;
        }
        return next;
    }

    private void Free(int index)
    {
        ref var slot = ref _slots[index];
        if (!slot.InUse) return;
        _slotById[slot.RelayId] = -1;
        slot.InUse = false;
        _free.Push((short)index);
    }

    /// <summary>The guest went away: its pending queries are forgotten (answers to them are dropped).</summary>
    public void OnGuestGone()
    {
        for (int i = 0; i < MaxPending; i++) Free(i);
    }

    public void Dispose()
    {
        OnGuestGone();
        foreach (var u in _upstreams)
        {
            if (u.Socket is null) continue;
            _loop.Unregister(u.Token, u.Fd);
            u.Socket.Dispose();
            u.Socket = null;
        }
    }
}
