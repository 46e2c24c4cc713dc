using Emunet.Engine.Link;
using Emunet.Engine.Diagnostics;
using System.Buffers.Binary;
using System.Collections.Concurrent;
using System.Net.Sockets;
using Emunet.Engine.Devices;
using Emunet.Engine.Devices.Stream;
using Emunet.Engine.Runtime;
using Microsoft.Extensions.Logging.Abstractions;

namespace Emunet.Engine.Tests.Devices;

/// <summary>The stream-socket device against a real Unix socket client speaking QEMU's framing.</summary>
public sealed class StreamDeviceTests : IDisposable
{
    private readonly string _dir = Directory.CreateTempSubdirectory("emunet-dev-").FullName;
    private readonly EventLoop _loop = new();
    private readonly Counters _counters = new();
    private readonly RecordingHandler _handler = new();
    private readonly StreamDevice _device;
    private readonly Thread _thread;

    public StreamDeviceTests()
    {
        _device = new StreamDevice(_loop, Path.Combine(_dir, "s.sock"), _counters, NullLogger.Instance) { Handler = _handler };
        _device.Start();
        _thread = new Thread(_loop.Run) { IsBackground = true };
        _thread.Start();
    }

    private Socket Connect()
    {
        var s = new Socket(AddressFamily.Unix, SocketType.Stream, ProtocolType.Unspecified);
        s.Connect(new UnixDomainSocketEndPoint(Path.Combine(_dir, "s.sock")));
        s.ReceiveTimeout = 5000;
        return s;
    }

    private static byte[] Framed(params byte[][] frames)
    {
        var ms = new MemoryStream();
        foreach (var f in frames)
        {
            var len = new byte[4];
            BinaryPrimitives.WriteUInt32BigEndian(len, (uint)f.Length);
            ms.Write(len);
            ms.Write(f);
        }
        return ms.ToArray();
    }

    [Fact]
    public void Frames_split_across_writes_arrive_whole_and_in_order()
    {
        using var s = Connect();
        var a = Enumerable.Range(0, 60).Select(i => (byte)i).ToArray();
        var b = Enumerable.Range(0, 1500).Select(i => (byte)(i * 7)).ToArray();
        var bytes = Framed(a, b);
        // One byte at a time for the first frame's header, then the rest.
        foreach (var x in bytes[..3]) s.Send([x]);
        s.Send(bytes[3..]);
        Assert.True(_handler.WaitFrames(2), "frames did not arrive");
        Assert.Equal(a, _handler.Frames.ElementAt(0));
        Assert.Equal(b, _handler.Frames.ElementAt(1));
    }

    [Fact]
    public async Task Transmitted_frames_reach_the_emulator_with_length_prefix()
    {
        using var s = Connect();
        Assert.True(_handler.Connected.Wait(5000));
        var payload = new byte[] { 1, 2, 3, 4, 5 };
        await _loop.InvokeAsync(() =>
        {
            var lease = _device.BeginTransmit(100);
            payload.CopyTo(lease.Buffer);
            lease.Commit(payload.Length);
            return 0;
        });
        var got = new byte[9];
        int n = 0;
        while (n < 9) n += s.Receive(got, n, 9 - n, SocketFlags.None);
        Assert.Equal(Framed(payload), got);
    }

    [Fact]
    public void Oversized_length_drops_the_connection_and_a_new_emulator_can_attach()
    {
        using (var s = Connect())
        {
            var bad = new byte[4];
            BinaryPrimitives.WriteUInt32BigEndian(bad, StreamDevice.MaxFrameLength + 1);
            s.Send(bad);
            Assert.True(_handler.Disconnected.Wait(5000), "the device kept a desynchronised stream");
            Assert.Equal(1, _counters.Drops(DropReason.DeviceProtocolError));
            Assert.Equal(0, s.Receive(new byte[1])); // closed by the device
        }
        using var again = Connect();
        again.Send(Framed([9, 9, 9]));
        Assert.True(_handler.WaitFrames(1));
        Assert.Equal([9, 9, 9], _handler.Frames.Last());
    }

    [Fact]
    public void A_socket_path_already_served_is_refused_with_a_clear_error()
    {
        var path = Path.Combine(_dir, "s.sock");
        using var second = new StreamDevice(new EventLoop(), path, new Counters(), NullLogger.Instance);
        var e = Assert.Throws<EngineStartException>(second.Start);
        Assert.Contains("already serving", e.Message);
    }

    [Fact]
    public void A_stale_socket_file_left_by_a_dead_engine_is_replaced()
    {
        // A socket inode nobody listens on: hard-link a bound socket's file, then close the socket.
        var path = Path.Combine(_dir, "stale.sock");
        using (var dead = new Socket(AddressFamily.Unix, SocketType.Stream, ProtocolType.Unspecified))
        {
            dead.Bind(new UnixDomainSocketEndPoint(Path.Combine(_dir, "bound.sock")));
            Assert.Equal(0, link(Path.Combine(_dir, "bound.sock"), path));
        }
        Assert.True(Emunet.Engine.Interop.Libc.IsSocket(path));
        using var loop = new EventLoop();
        using var device = new StreamDevice(loop, path, new Counters(), NullLogger.Instance);
        device.Start();
        using var client = new Socket(AddressFamily.Unix, SocketType.Stream, ProtocolType.Unspecified);
        client.Connect(new UnixDomainSocketEndPoint(path));
        Assert.Equal("stream:unix:" + path, device.Description);
    }

    [Fact]
    public void A_regular_file_at_the_socket_path_is_never_replaced()
    {
        var path = Path.Combine(_dir, "precious.txt");
        File.WriteAllText(path, "keep me");
        using var loop = new EventLoop();
        using var device = new StreamDevice(loop, path, new Counters(), NullLogger.Instance);
        var e = Assert.Throws<EngineStartException>(device.Start);
        Assert.Contains("is not a socket", e.Message);
        Assert.Equal("keep me", File.ReadAllText(path));
    }

    [System.Runtime.InteropServices.DllImport("libc", SetLastError = true)]
    private static extern int link(string oldPath, string newPath);

    public void Dispose()
    {
        _loop.Stop();
        _thread.Join();
        _device.Dispose();
        _loop.Dispose();
        Directory.Delete(_dir, true);
    }

    private sealed class RecordingHandler : IFrameHandler
    {
        public readonly ConcurrentQueue<byte[]> Frames = new();
        public readonly ManualResetEventSlim Connected = new();
        public readonly ManualResetEventSlim Disconnected = new();
        private readonly SemaphoreSlim _frames = new(0);

        public void OnFrame(ReadOnlySpan<byte> frame)
        {
            Frames.Enqueue(frame.ToArray());
            _frames.Release();
        }

        public bool WaitFrames(int n)
        {
            for (int i = 0; i < n; i++)
                if (!_frames.Wait(5000)) return false;
            return true;
        }

        public void OnDeviceConnected() => Connected.Set();
        public void OnDeviceDisconnected() => Disconnected.Set();
        public void OnTransmitReady() { }
    }
}
