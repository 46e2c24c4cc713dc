using System.Buffers.Binary;
using Emunet.Engine.Capture;

namespace Emunet.Engine.Tests.Engine;

/// <summary>The live capture's ring: whole records or none, in order across the wrap, counted drops, an end.</summary>
public sealed class LiveCaptureRingTests
{
    private static byte[] Frame(int length, byte fill)
    {
        var f = new byte[length];
        f.AsSpan().Fill(fill);
        return f;
    }

    private static async Task<byte[]> ReadAll(LiveCapture live)
    {
        var all = new MemoryStream();
        var chunk = new byte[100_000];
        int n;
        while ((n = await live.ReadAsync(chunk, CancellationToken.None)) > 0) all.Write(chunk, 0, n);
        return all.ToArray();
    }

    [Fact]
    public async Task Records_are_whole_in_order_and_a_full_ring_drops_whole_frames()
    {
        var live = new LiveCapture();
        const int length = 60_000;
        int fit = (LiveCapture.Capacity - 24) / (16 + length);
        for (int i = 0; i < fit + 5; i++) live.OnFrame(Frame(length, (byte)i), DateTime.UtcNow.Ticks);
        Assert.Equal(fit, live.FramesWritten);
        Assert.Equal(5, live.FramesDropped);

        // Read half, then write more: the ring wraps and the records stay whole and in order.
        var first = new byte[(fit / 2) * (16 + length) + 24];
        int got = 0;
        while (got < first.Length) got += await live.ReadAsync(first.AsMemory(got), CancellationToken.None);
        for (int i = 0; i < fit / 2; i++) live.OnFrame(Frame(length, (byte)(200 + i % 50)), DateTime.UtcNow.Ticks);
        live.Close();
        live.OnFrame(Frame(10, 1), DateTime.UtcNow.Ticks); // after the end: ignored
        var rest = await ReadAll(live);

        var stream = first.Concat(rest).ToArray();
        Assert.Equal(0xa1b2c3d4u, BinaryPrimitives.ReadUInt32LittleEndian(stream));
        int offset = 24, index = 0;
        var fills = new List<byte>();
        while (offset < stream.Length)
        {
            int captured = BinaryPrimitives.ReadInt32LittleEndian(stream.AsSpan(offset + 8));
            Assert.Equal(length, captured);
            Assert.Equal(length, BinaryPrimitives.ReadInt32LittleEndian(stream.AsSpan(offset + 12)));
            byte fill = stream[offset + 16];
            Assert.True(stream.AsSpan(offset + 16, captured).IndexOfAnyExcept(fill) < 0, $"record {index} is torn");
            fills.Add(fill);
            offset += 16 + captured;
            index++;
        }
        Assert.Equal(stream.Length, offset);
        var expected = Enumerable.Range(0, fit).Select(i => (byte)i).Concat(Enumerable.Range(0, fit / 2).Select(i => (byte)(200 + i % 50)));
        Assert.Equal(expected, fills);
    }

    [Fact]
    public async Task A_waiting_reader_wakes_for_a_frame_and_ends_at_close()
    {
        var live = new LiveCapture();
        var header = new byte[24];
        Assert.Equal(24, await live.ReadAsync(header, CancellationToken.None));
        var buffer = new byte[1000];
        var pending = live.ReadAsync(buffer, CancellationToken.None).AsTask();
        Assert.False(pending.IsCompleted);
        live.OnFrame(Frame(42, 7), DateTime.UtcNow.Ticks);
        Assert.Equal(16 + 42, await pending.WaitAsync(TimeSpan.FromSeconds(10)));
        var end = live.ReadAsync(buffer, CancellationToken.None).AsTask();
        live.Close();
        Assert.Equal(0, await end.WaitAsync(TimeSpan.FromSeconds(10)));
    }
}
