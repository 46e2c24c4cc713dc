using System.Net;
using Emunet.Engine.Diagnostics;
using Emunet.Engine.Runtime;
using Emunet.Engine.Stack;
using Emunet.Engine.Stack.Nat;
using Emunet.Engine.Wire;
using Microsoft.Extensions.Logging.Abstractions;
using DhcpV4Packet = PacketDotNet.DhcpV4Packet;
using ArpPacket = Emunet.Engine.Wire.ArpPacket;
using IPv4Packet = Emunet.Engine.Wire.IPv4Packet;

namespace Emunet.Engine.Tests.Stack;

/// <summary>
/// Several guest links in one engine: a stack per link over one flow table. Each link leases its own guest address,
/// keeps its guest to it (ARP never adopts another link's address; a packet from another link's address is spoofed),
/// and ends only its own flows when its guest goes.
/// </summary>
public sealed class LinkSetTests : IDisposable
{
    private static readonly IPv4Address Radio = new(10, 0, 2, 15);
    private static readonly IPv4Address Wifi = new(10, 0, 2, 16);

    private readonly EventLoop _loop = new();
    private readonly Counters _counters = new();
    private readonly CaptureDevice _radioDevice = new();
    private readonly CaptureDevice _wifiDevice = new();
    private readonly LinkSet _links = new();
    private readonly FlowTable _flows;
    private readonly NetStack _radio;
    private readonly NetStack _wifi;

    public LinkSetTests()
    {
        var config = new NetworkConfig { DnsUpstream = [new IPEndPoint(IPAddress.Loopback, 9)] };
        var map = new AddressMap(config);
        _flows = new FlowTable(_loop, _counters);
        _radio = new NetStack(_loop, _radioDevice, config with { Guest = Radio }, map, _counters, NullLoggerFactory.Instance, _flows, 0, _links);
        _wifi = new NetStack(_loop, _wifiDevice, config with { Guest = Wifi }, map, _counters, NullLoggerFactory.Instance, _flows, 1, _links);
        _links.Add(_radio);
        _links.Add(_wifi);
    }

    public void Dispose()
    {
        _radio.Dispose();
        _wifi.Dispose();
        _loop.Dispose();
    }

    [Fact]
    public void Each_link_leases_its_own_guest_address()
    {
        _wifi.OnFrame(DhcpTests.ClientMessageForTests(DhcpMessage.MessageType.Discover));
        Assert.True(_wifiDevice.Frames.TryTake(out var offer, StackHarness.Timeout));
        var dhcp = Assert.IsType<DhcpV4Packet>(Oracle.Udp(offer).PayloadPacket);
        Assert.Equal("10.0.2.16", dhcp.YourAddress.ToString());
        Assert.Empty(_radioDevice.Frames);

        _radio.OnFrame(DhcpTests.ClientMessageForTests(DhcpMessage.MessageType.Discover));
        Assert.True(_radioDevice.Frames.TryTake(out offer, StackHarness.Timeout));
        Assert.Equal("10.0.2.15", Assert.IsType<DhcpV4Packet>(Oracle.Udp(offer).PayloadPacket).YourAddress.ToString());
    }

    [Fact]
    public void Arp_never_adopts_an_address_of_another_links_guest()
    {
        _wifi.OnFrame(GuestFrames.Arp(ArpPacket.OperationRequest, Radio, new IPv4Address(10, 0, 2, 2)));
        Assert.Equal(Wifi, _wifi.GuestAddress);
        _wifi.OnFrame(GuestFrames.Arp(ArpPacket.OperationRequest, new IPv4Address(10, 0, 2, 20), new IPv4Address(10, 0, 2, 2)));
        Assert.Equal(new IPv4Address(10, 0, 2, 20), _wifi.GuestAddress);
        // ... and the address a guest announced is then not another link's to take either.
        _radio.OnFrame(GuestFrames.Arp(ArpPacket.OperationRequest, new IPv4Address(10, 0, 2, 20), new IPv4Address(10, 0, 2, 2)));
        Assert.Equal(Radio, _radio.GuestAddress);
    }

    [Fact]
    public void A_packet_from_another_links_guest_address_is_dropped_as_spoofed()
    {
        _wifi.OnFrame(GuestFrames.Arp(ArpPacket.OperationRequest, Wifi, new IPv4Address(10, 0, 2, 2)));
        _wifiDevice.Frames.TryTake(out _);
        long before = _counters.DropSnapshot().GetValueOrDefault(nameof(DropReason.SourceSpoofed));
        _wifi.OnFrame(GuestFrames.IPv4(Radio, new IPv4Address(10, 0, 2, 2), IPv4Packet.ProtocolIcmp, GuestFrames.EchoMessage(1, 1, [1, 2, 3])));
        Assert.Equal(before + 1, _counters.DropSnapshot().GetValueOrDefault(nameof(DropReason.SourceSpoofed)));
        Assert.Empty(_wifiDevice.Frames);
    }

    /// <summary>A flow that only leaves the table when ended.</summary>
    private sealed class StubFlow(FlowTable table) : Flow
    {
        public override string StateName => "stub";
        public override void OnPoll(uint events) { }
        protected override void Abort() => table.Remove(this);
    }

    [Fact]
    public void A_link_whose_guest_goes_ends_its_own_flows_only()
    {
        for (int link = 0; link < 2; link++)
        {
            var guest = link == 0 ? Radio : Wifi;
            Assert.True(_flows.TryAdd(new StubFlow(_flows) { Key = FlowKey.IPv4(FlowProtocol.Udp, guest, 5000, new IPv4Address(10, 0, 2, 2), 53), Link = link }));
        }
        _wifi.OnDeviceDisconnected();
        Assert.Equal(1, _flows.Count);
        Assert.Equal(0, _flows[0].Link);
        Assert.Equal(0, _flows[0].Snapshot().Link);
    }

    [Fact]
    public void Guest_addresses_follow_the_plan_and_refuse_clashes()
    {
        var network = new NetworkConfig();
        LinkOptions Link(IPv4Address? guest = null) => new(LinkKind.Stream, LinkMode.Listen, "/tmp/x.sock") { GuestAddress = guest };
        Assert.Equal([Radio, Wifi, new IPv4Address(10, 0, 2, 17)], EmunetEngine.GuestAddresses([Link(), Link(), Link()], network));
        Assert.Equal([Radio, new IPv4Address(10, 0, 2, 30), new IPv4Address(10, 0, 2, 31)],
            EmunetEngine.GuestAddresses([Link(), Link(new IPv4Address(10, 0, 2, 30)), Link()], network));
        // The plan skips the gateway and DNS.
        Assert.Equal([new IPv4Address(10, 0, 2, 1), new IPv4Address(10, 0, 2, 4)],
            EmunetEngine.GuestAddresses([Link(new IPv4Address(10, 0, 2, 1)), Link()], network));
        Assert.Contains("Two guest links", Assert.Throws<EngineStartException>(() => EmunetEngine.GuestAddresses([Link(), Link(Radio)], network)).Message);
        Assert.Contains("Emunet's own", Assert.Throws<EngineStartException>(() => EmunetEngine.GuestAddresses([Link(new IPv4Address(10, 0, 2, 3))], network)).Message);
        Assert.Contains("not a host of", Assert.Throws<EngineStartException>(() => EmunetEngine.GuestAddresses([Link(new IPv4Address(10, 0, 3, 5))], network)).Message);
        Assert.Throws<EngineStartException>(() => EmunetEngine.GuestAddresses(Enumerable.Repeat(Link(), LinkSet.MaxLinks + 1).ToList(), network));
    }
}
