using Emunet.Engine.Runtime;

namespace Emunet.Engine.Tests.Runtime;

public sealed class EventLoopTimerTests
{
    /// <summary>A client that, while the loop runs timers, asks for a wake-up on behalf of work of its own.</summary>
    private sealed class AsksDuringThePass(EventLoop loop) : ITimerClient
    {
        public int Calls;
        public readonly ManualResetEventSlim Again = new();

        public long OnTimer(long nowMs)
        {
            if (++Calls == 1) loop.WakeAt(nowMs + 30);
            else Again.Set();
            return long.MaxValue; // it keeps no deadline of its own
        }
    }

    [Fact]
    public async Task A_wake_up_asked_for_during_the_timer_pass_is_kept()
    {
        using var loop = new EventLoop();
        var client = new AsksDuringThePass(loop);
        loop.AddTimerClient(client);
        var thread = new Thread(loop.Run) { IsBackground = true };
        thread.Start();
        await loop.InvokeAsync(() => { loop.WakeAt(loop.NowMs); return 0; }).WaitAsync(TimeSpan.FromSeconds(5));
        Assert.True(client.Again.Wait(5000), "the wake-up asked for during the first pass was lost");
        loop.Stop();
        thread.Join();
    }
}
