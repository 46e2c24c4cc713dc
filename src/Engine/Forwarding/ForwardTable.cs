using System.Net;
using Emunet.Engine.Diagnostics;
using Emunet.Engine.Runtime;
using Emunet.Engine.Stack;
using Emunet.Engine.Wire;
using Microsoft.Extensions.Logging;

namespace Emunet.Engine.Forwarding;

/// <summary>
/// The engine's forwards, TCP and UDP alike, known by (protocol, host address, bound port): one place for adding
/// (a duplicate is the same conflict for both protocols), listing, removing and stopping them, and for the target
/// rule: a forward reaches the first link's guest unless its spec names another link's configured guest address, and
/// delivers to that guest's address as its link's stack knows it (what the guest announced in ARP, else the configured
/// one). Owner thread only.
/// </summary>
internal sealed class ForwardTable : ITimerClient
{
    /// <summary>Forwards at once (each holds one host socket).</summary>
    public const int MaxForwards = 1024;

    private readonly EventLoop _loop;
    private readonly LinkSet _links;
    private readonly Counters _counters;
    private readonly ILogger _logger;
    private readonly Dictionary<(ForwardProtocol, IPAddress, int), Forwarder> _forwards = new();

    public ForwardTable(EventLoop loop, NetStack stack, Counters counters, ILogger logger)
        : this(loop, One(stack), counters, logger)
    {
    }

    /// <summary>Forwards over several guest links (<paramref name="links"/>[0] is the one a spec without a guest address reaches).</summary>
    public ForwardTable(EventLoop loop, LinkSet links, Counters counters, ILogger logger)
    {
        _counters = counters;
        _loop = loop;
        _links = links;
        _logger = logger;
        loop.AddTimerClient(this);
    }

    private static LinkSet One(NetStack stack)
    {
        var set = new LinkSet();
        set.Add(stack);
        return set;
    }

    /// <summary>Puts forwards paused for want of file descriptors back in the loop when their pause is over.</summary>
    public long OnTimer(long nowMs)
    {
        long next = long.MaxValue;
        foreach (var f in _forwards.Values)
        {
            if (f.PausedUntil == 0) continue;
            if (f.PausedUntil <= nowMs) f.Resume();
            else next = Math.Min(next, f.PausedUntil);
        }
        return next;
    }

    public int Count => _forwards.Count;

    /// <summary>
    /// Binds a forward for <paramref name="spec"/> and returns its snapshot. Throws <see cref="InvalidOperationException"/>
    /// when this engine already forwards that port, when the port is held elsewhere (naming the holder), or at
    /// <see cref="MaxForwards"/>.
    /// </summary>
    public ForwardInfo Add(ForwardSpec spec)
    {
        _loop.AssertOwner();
        if (spec.HostPort != 0 && _forwards.ContainsKey((spec.Protocol, spec.HostAddress, spec.HostPort)))
            throw new InvalidOperationException(
                $"This engine already forwards {Name(spec.Protocol)} {new System.Net.IPEndPoint(spec.HostAddress, spec.HostPort)}; remove that forward first.");
        if (_forwards.Count >= MaxForwards)
            throw new InvalidOperationException($"Cannot add the forward {spec}: at most {MaxForwards} forwards can exist; remove one first.");
        var stack = StackFor(spec);
        Func<IPv4Address> target = () => stack.GuestAddress;
        Forwarder forwarder = spec.Protocol == ForwardProtocol.Tcp
            ? new TcpForwarder(_loop, stack.Tcp, target, spec, _counters, _logger, () => stack.IPv6?.GuestAddress)
            : new UdpForwarder(_loop, stack.Udp, target, spec, _counters, _logger, () => stack.IPv6?.GuestAddress);
        forwarder.Start(); // logs where it listens
        _forwards[(spec.Protocol, spec.HostAddress, forwarder.BoundPort)] = forwarder;
        return forwarder.Info;
    }

    /// <summary>The link a forward reaches: the first, or the one configured with the spec's guest address.</summary>
    private NetStack StackFor(ForwardSpec spec)
    {
        if (spec.GuestAddress is not { } guest) return _links[0];
        if (_links.ForGuest(guest) is { } stack) return stack;
        var owned = new List<string>(_links.Count);
        for (int i = 0; i < _links.Count; i++) owned.Add(_links[i].ConfiguredGuest.ToString());
        throw new ArgumentException(
            $"Cannot add the forward {spec}: no guest link of this engine has the address {guest} (its links' guests: {string.Join(", ", owned)}).");
    }

    /// <summary>The forward on <paramref name="protocol"/> <paramref name="hostAddress"/>:<paramref name="hostPort"/> (its bound port), or null.</summary>
    public Forwarder? Find(ForwardProtocol protocol, IPAddress hostAddress, int hostPort)
    {
        _loop.AssertOwner();
        return _forwards.GetValueOrDefault((protocol, hostAddress, hostPort));
    }

    public List<ForwardInfo> List()
    {
        _loop.AssertOwner();
        var list = new List<ForwardInfo>(_forwards.Count);
        foreach (var f in _forwards.Values) list.Add(f.Info);
        return list;
    }

    /// <summary>
    /// Closes the forward on <paramref name="protocol"/> <paramref name="hostAddress"/>:<paramref name="hostPort"/> (its
    /// bound port); with <paramref name="resetConnections"/> its TCP connections are reset too. Null when there is none.
    /// </summary>
    public ForwardInfo? Remove(ForwardProtocol protocol, IPAddress hostAddress, int hostPort, bool resetConnections)
    {
        _loop.AssertOwner();
        if (!_forwards.Remove((protocol, hostAddress, hostPort), out var forwarder)) return null;
        var snapshot = forwarder.Info;
        forwarder.Stop(resetConnections);
        _logger.LogInformation("Forward {Spec} removed{Reset}.", forwarder.Spec, resetConnections ? " and its connections reset" : "");
        return snapshot;
    }

    /// <summary>Closes every forward and resets their connections (the engine is stopping).</summary>
    public void StopAll()
    {
        foreach (var f in _forwards.Values) f.Stop(resetConnections: true);
        _forwards.Clear();
    }

    private static string Name(ForwardProtocol p) => p == ForwardProtocol.Tcp ? "tcp" : "udp";
}
