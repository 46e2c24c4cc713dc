using System.Buffers.Binary;
using Emunet.Engine.Devices;

namespace Emunet.Engine.Tests.Devices;

public sealed class FrameQueueTests
{
    private static void Put(FrameQueue q, params byte[] frame)
    {
        var room = q.Reserve(frame.Length, out int token);
        Assert.Equal(frame.Length, room.Length);
        frame.CopyTo(room);
        Assert.True(q.TryCommit(token, frame.Length, out var committed));
        Assert.Equal(frame, committed.ToArray());
    }

    [Fact]
    public void Frames_are_queued_in_stream_framing_and_peeked_in_order()
    {
        var q = new FrameQueue(64);
        Put(q, 1, 2, 3);
        Put(q, 9);
        Assert.Equal(new byte[] { 0, 0, 0, 3, 1, 2, 3, 0, 0, 0, 1, 9 }, q.Queued.ToArray());
        Assert.True(q.TryPeek(out var first));
        Assert.Equal(new byte[] { 1, 2, 3 }, first.ToArray());
        q.Pop();
        Assert.True(q.TryPeek(out var second));
        Assert.Equal(new byte[] { 9 }, second.ToArray());
        q.Pop();
        Assert.True(q.IsEmpty);
        Assert.False(q.TryPeek(out _));
        Assert.Equal(64, q.Space);
    }

    [Fact]
    public void Commit_takes_less_than_reserved_and_only_the_open_reservation_commits()
    {
        var q = new FrameQueue(64);
        var a = q.Reserve(20, out int stale);
        a[0] = 41;
        var b = q.Reserve(20, out int token); // a new reservation ends the last one
        b[0] = 42;
        Assert.False(q.TryCommit(stale, 5, out _));
        Assert.True(q.TryCommit(token, 5, out var frame));
        Assert.Equal(5, frame.Length);
        Assert.Equal(42, frame[0]);
        Assert.Equal(9, q.Count);
        Assert.False(q.TryCommit(token, 5, out _)); // no reservation left
    }

    [Fact]
    public void A_refused_reservation_leaves_nothing_to_commit()
    {
        var q = new FrameQueue(16);
        q.Reserve(4, out int first);
        Assert.True(q.Reserve(100, out int refused).IsEmpty);
        Assert.False(q.TryCommit(first, 4, out _));
        Assert.False(q.TryCommit(refused, 4, out _));
        Assert.True(q.IsEmpty);
    }

    [Fact]
    public void Room_is_made_by_moving_the_queue_to_the_front_and_refused_when_full()
    {
        var q = new FrameQueue(32);
        Put(q, new byte[10]);          // 14 bytes
        Put(q, new byte[10]);          // 28 bytes
        Assert.True(q.Reserve(1, out _).IsEmpty);  // 4 + 1 > 4 left
        q.Pop();                        // head at 14
        Put(q, Enumerable.Repeat((byte)7, 10).ToArray()); // needs a move to the front
        Assert.Equal(28, q.Count);
        Assert.Equal(10u, BinaryPrimitives.ReadUInt32BigEndian(q.Queued));
        q.Pop();
        Assert.True(q.TryPeek(out var last));
        Assert.All(last.ToArray(), x => Assert.Equal(7, x));
    }

    [Fact]
    public void Consuming_part_of_the_bytes_keeps_the_rest_and_a_pending_reservation_stays_valid()
    {
        var q = new FrameQueue(64);
        Put(q, 1, 2, 3, 4);
        q.Consume(3);
        Assert.Equal(new byte[] { 4, 1, 2, 3, 4 }, q.Queued.ToArray());
        var room = q.Reserve(2, out int token);
        room[0] = 5; room[1] = 6;
        q.Consume(5); // the socket took everything queued while a frame is being written
        Assert.True(q.TryCommit(token, 2, out _));
        Assert.Equal(new byte[] { 0, 0, 0, 2, 5, 6 }, q.Queued.ToArray());
    }
}
