using System.Net;
using System.Net.Sockets;
using Emunet.Engine.Diagnostics;
using Emunet.Engine.Stack.Nat;
using Emunet.Engine.Wire;

namespace Emunet.Engine.Stack;

/// <summary>
/// A UDP forward's socket as the stack sees it: the bound host socket (owned, bound and polled by the forward in
/// Forwarding/), the guest port it reaches, and its clients' flows by client address.
/// </summary>
internal sealed class UdpForwardPort(Socket socket, ushort guestPort, ForwardBinding binding)
{
    public Socket Socket { get; } = socket;
    public ushort GuestPort { get; } = guestPort;
    public ForwardBinding Binding { get; } = binding;
    /// <summary>Each host client's flow; the key is the client's address as the kernel reports it.</summary>
    internal readonly Dictionary<SocketAddress, Flow> Clients = new();

    /// <summary>Sends a guest reply to a client through the forward's socket; false when the kernel refuses it.</summary>
    public bool SendToClient(ReadOnlySpan<byte> payload, SocketAddress client)
    {
        try
        {
            Socket.SendTo(payload, SocketFlags.None, client);
            return true;
        }
        catch (SocketException)
        {
            return false;
        }
    }
}

/// <summary>
/// Forwarded UDP: each host client of a forward becomes a flow from the host alias of the guest's family (10.0.2.2 or
/// fec0::2, a port per client) to the guest.
/// </summary>
internal sealed partial class Udp
{
    /// <summary>Ports the gateway side of forwarded flows are taken from (IANA dynamic range, RFC 6335 §6).</summary>
    public const int ForwardPortFirst = 49152;
    public const int ForwardPortLast = 65535;

    /// <summary>Where ReceiveFrom writes the client's address, one per socket family (the size is the family's).</summary>
    private readonly SocketAddress _receiveAddress4 = new(AddressFamily.InterNetwork);
    private readonly SocketAddress _receiveAddress6 = new(AddressFamily.InterNetworkV6);
    private int _nextForwardPort = ForwardPortFirst;

    /// <summary>
    /// A datagram waits on <paramref name="port"/>'s socket: take it into a packet to <paramref name="guest"/> (an
    /// IPv4-mapped or an IPv6 address) from the client's flow (opened on its first datagram).
    /// </summary>
    public void OnForwardReadable(UdpForwardPort port, FlowAddress guest)
    {
        var receiveAddress = port.Socket.AddressFamily == AddressFamily.InterNetworkV6 ? _receiveAddress6 : _receiveAddress4;
        var gateway = guest.IsIPv4 ? FlowAddress.FromIPv4(_config.Gateway) : FlowAddress.FromIPv6(_config.IPv6Gateway);
        // One datagram per readiness event: epoll is level-triggered, so the loop comes back while more wait, and
        // ReceiveFrom with a SocketAddress has no error-code overload to ask "would block" without an exception.
        var packet = _sender.BeginFlowPacket(gateway, guest, IPv4Packet.ProtocolUdp, _sender.MaxPayloadFor(guest));
        bool drop = packet.IsEmpty;
        var room = drop ? _scratch.AsSpan() : packet.Payload[UdpDatagram.HeaderLength..];
        int n;
        try
        {
            n = port.Socket.ReceiveFrom(room, SocketFlags.Truncated, receiveAddress);
        }
        catch (SocketException)
        {
            return;
        }
        if (drop) { _counters.Drop(DropReason.TransmitQueueFull); return; }
        if (n > room.Length) { _counters.Drop(DropReason.UdpDatagramTooLarge); return; }
        UdpFlow? flow;
        if (port.Clients.TryGetValue(receiveAddress, out var found)) flow = (UdpFlow)found;
        else
        {
            flow = OpenForwarded(port, guest, gateway, receiveAddress);
            if (flow is null) return;
        }
        // OpenForwarded sends no packet, so the lent packet is still the open one.
        Deliver(flow, in packet, n);
    }

    private UdpFlow? OpenForwarded(UdpForwardPort port, FlowAddress guest, FlowAddress gateway, SocketAddress receiveAddress)
    {
        if (!_flows.HasRoom(FlowProtocol.Udp)) { _counters.Drop(DropReason.UdpFlowTableFull); return null; }
        ushort guestPort = port.GuestPort;
        // At most the UDP limit of ports are taken, so that many tries plus one find a free one.
        FlowKey key = default;
        ushort peerPort = 0;
        for (int i = 0; i <= _flows.LimitOf(FlowProtocol.Udp); i++)
        {
            peerPort = (ushort)_nextForwardPort;
            _nextForwardPort = _nextForwardPort == ForwardPortLast ? ForwardPortFirst : _nextForwardPort + 1;
            key = new FlowKey(FlowProtocol.Udp, guest, guestPort, gateway, peerPort);
            if (!_flows.Contains(key)) break;
        }
        var client = new SocketAddress(receiveAddress.Family, receiveAddress.Size);
        receiveAddress.Buffer.Span[..receiveAddress.Size].CopyTo(client.Buffer.Span);
        IPEndPoint? remote = null;
        var any = client.Family == AddressFamily.InterNetworkV6 ? IPAddress.IPv6Any : IPAddress.Any;
        try { remote = (IPEndPoint)new IPEndPoint(any, 0).Create(client); } catch (ArgumentException) { }
        var flow = new UdpFlow(this)
        {
            Key = key, Direction = FlowDirection.Forwarded, Guest = guest, GuestPort = guestPort, Peer = gateway,
            PeerPort = peerPort, Port = port, Client = client, HostRemote = remote,
            HostLocal = port.Socket.LocalEndPoint as IPEndPoint, Forward = port.Binding, LastActive = _loop.NowMs,
            IdleTimeoutMs = IdleTimeoutMs, Link = _sender.Link,
        };
        if (!_flows.TryAdd(flow)) return null;
        port.Clients.Add(client, flow);
        return flow;
    }

    /// <summary>Takes one waiting datagram off <paramref name="port"/>'s socket and drops it (no guest to carry it to).</summary>
    public void DiscardForwarded(UdpForwardPort port)
    {
        var receiveAddress = port.Socket.AddressFamily == AddressFamily.InterNetworkV6 ? _receiveAddress6 : _receiveAddress4;
        try { port.Socket.ReceiveFrom(_scratch, SocketFlags.None, receiveAddress); }
        catch (SocketException) { }
    }

    /// <summary>The forward of <paramref name="port"/> is going away: its client flows end.</summary>
    public void CloseForwarded(UdpForwardPort port)
    {
        _closing.Clear();
        foreach (var f in port.Clients.Values) _closing.Add((UdpFlow)f);
        foreach (var f in _closing) Close(f);
        _closing.Clear();
    }
}
