using System.Net.Sockets;
using Emunet.Engine.Diagnostics;
using Emunet.Engine.Runtime;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Abstractions;

namespace Emunet.Engine.Stack.Nat;

/// <summary>
/// Theory of operation: the one NAT table, as passt's <c>flowtab[]</c>: every TCP connection, UDP flow and ICMP echo
/// flow, keyed by <see cref="FlowKey"/>, in one dictionary plus one list (swap-remove, so a scan needs no copy).
/// It is the one place that admits flows: per-protocol limits (named constants, a counted drop when full), ids, the
/// forwards' counts. It drives every flow's timers (one scan per timer wake-up; a flow returns its next deadline) and
/// makes the connection snapshot. Protocols keep their logic; the table keeps what they share. Owner thread only.
/// It also keeps flows out of the descriptor headroom (<see cref="DescriptorHeadroom"/>): its limits are sized to
/// what is below it (<see cref="FitTo"/>), and a flow whose new host socket lands in it is refused
/// (<see cref="AtHeadroom"/>), counted <see cref="DropReason.FlowOutOfDescriptors"/> and logged once per episode.
/// </summary>
internal sealed class FlowTable : ITimerClient
{
    /// <summary>TCP connections at once (passt's TCP_MAX_CONNS is of the same order).</summary>
    public const int MaxTcpFlows = 4096;
    /// <summary>UDP flows at once (outbound, DNS relay and forwarded clients).</summary>
    public const int MaxUdpFlows = 1024;
    /// <summary>ICMP echo flows (guest identifier × destination) at once.</summary>
    public const int MaxIcmpFlows = 64;

    private static readonly int ProtocolCount = Enum.GetValues<FlowProtocol>().Length;
    private readonly Dictionary<FlowKey, Flow> _byKey = new();
    private readonly List<Flow> _all = new();
    private readonly int[] _counts = new int[ProtocolCount];
    private readonly int[] _limits = new int[ProtocolCount];
    private readonly EventLoop _loop;
    private readonly Counters _counters;
    private readonly ILogger _logger;
    private long _nextId;
    private long _refusedThisEpisode;

    /// <summary>Registers itself with <paramref name="loop"/> as a timer client.</summary>
    public FlowTable(EventLoop loop, Counters counters, BufferBudget? budget = null, ILogger? logger = null)
    {
        _loop = loop;
        _counters = counters;
        _logger = logger ?? NullLogger.Instance;
        Budget = budget ?? new BufferBudget();
        _limits[(int)FlowProtocol.Tcp] = MaxTcpFlows;
        _limits[(int)FlowProtocol.Udp] = MaxUdpFlows;
        _limits[(int)FlowProtocol.Icmp] = MaxIcmpFlows;
        loop.AddTimerClient(this);
    }

    /// <summary>
    /// Lowers the limits so the flows fit below the descriptor headroom (each flow holds one descriptor, and
    /// limit − headroom bounds them all): three quarters of that for TCP, an eighth for UDP, a sixteenth for ICMP.
    /// Returns false when the named limits already fit (or there is no limit).
    /// </summary>
    public bool FitTo(DescriptorHeadroom headroom)
    {
        if (!headroom.IsLimited) return false;
        long usable = Math.Max(16, headroom.Threshold);
        int tcp = (int)Math.Min(MaxTcpFlows, usable * 3 / 4);
        int udp = (int)Math.Min(MaxUdpFlows, Math.Max(4, usable / 8));
        int icmp = (int)Math.Min(MaxIcmpFlows, Math.Max(2, usable / 16));
        if (tcp == MaxTcpFlows && udp == MaxUdpFlows && icmp == MaxIcmpFlows) return false;
        SetLimit(FlowProtocol.Tcp, tcp);
        SetLimit(FlowProtocol.Udp, udp);
        SetLimit(FlowProtocol.Icmp, icmp);
        return true;
    }

    /// <summary>
    /// True when <paramref name="socket"/>, just opened for a new flow, landed in the descriptor headroom: the caller
    /// closes it and refuses the flow (TCP: a reset to the guest; UDP, ICMP: a drop). Counted and logged by
    /// <see cref="OutOfDescriptors"/>. A socket below the headroom ends an episode.
    /// </summary>
    public bool AtHeadroom(Socket socket)
    {
        if (!_loop.Headroom.IsAtHeadroom(socket))
        {
            if (_refusedThisEpisode > 0 && _logger.IsEnabled(LogLevel.Information))
                _logger.LogInformation("New flows get host sockets again, after {Count} were refused for want of descriptors.", _refusedThisEpisode);
            _refusedThisEpisode = 0;
            return false;
        }
        OutOfDescriptors();
        return true;
    }

    /// <summary>
    /// A new flow refused for want of descriptors (its socket was in the headroom, or could not be made: EMFILE/ENFILE):
    /// counted <see cref="DropReason.FlowOutOfDescriptors"/>, logged once per episode.
    /// </summary>
    public void OutOfDescriptors()
    {
        _counters.Drop(DropReason.FlowOutOfDescriptors);
        if (_refusedThisEpisode++ == 0 && _logger.IsEnabled(LogLevel.Warning))
            _logger.LogWarning("New guest flows are refused: the engine is at its descriptor headroom ({Advice}).", _loop.Headroom.Advice);
    }

    /// <summary>The byte budget every flow's buffers draw from.</summary>
    public BufferBudget Budget { get; }

    /// <summary>Flows of every protocol.</summary>
    public int Count => _all.Count;

    public int CountOf(FlowProtocol protocol) => _counts[(int)protocol];

    /// <summary>The most flows of <paramref name="protocol"/> admitted at once (tests lower it).</summary>
    public int LimitOf(FlowProtocol protocol) => _limits[(int)protocol];

    public void SetLimit(FlowProtocol protocol, int limit) => _limits[(int)protocol] = Math.Max(0, limit);

    /// <summary>True when one more flow of <paramref name="protocol"/> would be admitted.</summary>
    public bool HasRoom(FlowProtocol protocol) => _counts[(int)protocol] < _limits[(int)protocol];

    public bool TryGet(in FlowKey key, out Flow flow) => _byKey.TryGetValue(key, out flow!);

    public bool Contains(in FlowKey key) => _byKey.ContainsKey(key);

    /// <summary>The flow at <paramref name="index"/> (0 ≤ index &lt; <see cref="Count"/>), for scans that may remove.</summary>
    public Flow this[int index] => _all[index];

    /// <summary>
    /// Admits <paramref name="flow"/> under its key and gives it an id. False, with the protocol's table-full drop
    /// counted, when its protocol is at its limit; the caller then closes what it opened.
    /// </summary>
    public bool TryAdd(Flow flow)
    {
        _loop.AssertOwner();
        var protocol = flow.Key.Protocol;
        if (!HasRoom(protocol))
        {
            _counters.Drop(TableFull(protocol));
            return false;
        }
        if (!_byKey.TryAdd(flow.Key, flow)) throw new InvalidOperationException($"A flow with key {flow.Key} is already in the table.");
        flow.Id = ++_nextId;
        flow.TableIndex = _all.Count;
        _all.Add(flow);
        _counts[(int)protocol]++;
        if (flow.Forward is { } forward)
        {
            forward.ActiveFlows++;
            forward.TotalFlows++;
        }
        if (flow.IdleTimeoutMs > 0) _loop.WakeAt(flow.LastActive + flow.IdleTimeoutMs);
        return true;
    }

    /// <summary>Removes <paramref name="flow"/>; nothing when it is not in the table. Its owner closes its socket.</summary>
    public void Remove(Flow flow)
    {
        _loop.AssertOwner();
        int i = flow.TableIndex;
        if (i < 0 || !_byKey.Remove(flow.Key)) return;
        int last = _all.Count - 1;
        var moved = _all[last];
        _all[i] = moved;
        moved.TableIndex = i;
        _all.RemoveAt(last);
        flow.TableIndex = -1;
        _counts[(int)flow.Key.Protocol]--;
        if (flow.Forward is { } forward) forward.ActiveFlows--;
    }

    public long OnTimer(long nowMs)
    {
        long next = long.MaxValue;
        // Backwards: a flow that closes itself swaps the last one (already seen) into its place.
        for (int i = _all.Count - 1; i >= 0; i--)
        {
            if (i >= _all.Count) continue;
            var flow = _all[i];
            long due;
            try { due = flow.OnTimer(nowMs); }
            catch (Exception e) when (e is not OutOfMemoryException)
            {
                _loop.Fault(flow, e); // the flow is dropped; the scan goes on
                continue;
            }
            if (due < next) next = due;
        }
        return next;
    }

    /// <summary>
    /// Ends every flow of <paramref name="protocol"/> on guest link <paramref name="link"/>: each owner drops its own
    /// (that link's guest went away, or the engine stops); the other links' flows go on. Backwards, as the timer scan:
    /// a removal swaps in a flow already passed.
    /// </summary>
    public void AbortAll(FlowProtocol protocol, int link = 0)
    {
        for (int i = _all.Count - 1; i >= 0; i--)
        {
            if (i >= _all.Count) continue;
            var flow = _all[i];
            if (flow.Protocol == protocol && flow.Link == link) flow.End();
        }
    }

    /// <summary>Every flow as the control API shows it.</summary>
    public void Snapshot(List<ConnectionInfo> into)
    {
        _loop.AssertOwner();
        foreach (var flow in _all) into.Add(flow.Snapshot());
    }

    private static DropReason TableFull(FlowProtocol protocol) => protocol switch
    {
        FlowProtocol.Tcp => DropReason.TcpFlowTableFull,
        FlowProtocol.Udp => DropReason.UdpFlowTableFull,
        _ => DropReason.IcmpFlowTableFull,
    };
}
