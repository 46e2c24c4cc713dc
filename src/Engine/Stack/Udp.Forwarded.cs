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

/// <summary>Forwarded UDP: each host client of a forward becomes a flow from 10.0.2.2:(a port per client) to the guest.</summary>
internal sealed partial class Udp
{
    /// <summary>Ports the gateway side of forwarded flows are taken from (IANA dynamic range, RFC 6335 §6).</summary>
    public const int ForwardPortFirst = 49152;
    public const int ForwardPortLast = 65535;

    private readonly SocketAddress _receiveAddress = new(AddressFamily.InterNetwork);
    private int _nextForwardPort = ForwardPortFirst;

    /// <summary>
    /// A datagram waits on <paramref name="port"/>'s socket: take it into a packet to <paramref name="guest"/> from the
    /// client's flow (opened on its first datagram).
    /// </summary>
    public void OnForwardReadable(UdpForwardPort port, IPv4Address guest)
    {
        // One datagram per readiness event: epoll is level-triggered, so the loop comes back while more wait, and
        // ReceiveFrom with a SocketAddress has no error-code overload to ask "would block" without an exception.
        var packet = _sender.BeginPacket(_config.Gateway, guest, IPv4Packet.ProtocolUdp, _sender.MaxPayload);
        bool drop = packet.IsEmpty;
        var room = drop ? _scratch.AsSpan() : packet.Payload[UdpDatagram.HeaderLength..];
        int n;
        try
        {
            n = port.Socket.ReceiveFrom(room, SocketFlags.Truncated, _receiveAddress);
        }
        catch (SocketException)
        {
            return;
        }
        if (drop) { _counters.Drop(DropReason.TransmitQueueFull); return; }
        if (n > room.Length) { _counters.Drop(DropReason.UdpDatagramTooLarge); return; }
        UdpFlow? flow;
        if (port.Clients.TryGetValue(_receiveAddress, out var found)) flow = (UdpFlow)found;
        else
        {
            flow = OpenForwarded(port, guest);
            if (flow is null) return;
        }
        // OpenForwarded sends no packet, so the lent packet is still the open one.
        Deliver(flow, in packet, n);
    }

    private UdpFlow? OpenForwarded(UdpForwardPort port, IPv4Address guest)
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
            key = FlowKey.IPv4(FlowProtocol.Udp, guest, guestPort, _config.Gateway, peerPort);
            if (!_flows.Contains(key)) break;
        }
        var client = new SocketAddress(_receiveAddress.Family, _receiveAddress.Size);
        _receiveAddress.Buffer.Span[.._receiveAddress.Size].CopyTo(client.Buffer.Span);
        IPEndPoint? remote = null;
        try { remote = (IPEndPoint)new IPEndPoint(IPAddress.Any, 0).Create(client); } catch (ArgumentException) { }
        var flow = new UdpFlow(this)
        {
            Key = key, Direction = FlowDirection.Forwarded, Guest = guest, GuestPort = guestPort, Peer = _config.Gateway,
            PeerPort = peerPort, Port = port, Client = client, HostRemote = remote,
            HostLocal = port.Socket.LocalEndPoint as IPEndPoint, Forward = port.Binding, LastActive = _loop.NowMs,
            IdleTimeoutMs = IdleTimeoutMs, Link = _sender.Link,
        };
        if (!_flows.TryAdd(flow)) return null;
        port.Clients.Add(client, flow);
        return flow;
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
