using System.Collections.Concurrent;
using System.Diagnostics;
using System.Runtime.InteropServices;
using Emunet.Engine.Interop;

namespace Emunet.Engine.Runtime;

/// <summary>Something the loop calls when its file descriptor is ready. Always called on the loop's owner thread.</summary>
internal interface IPollable
{
    /// <param name="events">The epoll event bits (<see cref="Libc.EPOLLIN"/>, ...).</param>
    void OnPoll(uint events);
}

/// <summary>Something that batches work over one loop iteration (a device flushing its transmit queue).</summary>
internal interface IEndOfBatch
{
    /// <summary>Called on the owner thread after each batch of ready events has been handled.</summary>
    void OnEndOfBatch();
}

/// <summary>
/// A handler the loop can isolate: when its <see cref="IPollable.OnPoll"/> throws, the loop calls
/// <see cref="OnFault"/> so it drops just itself (one flow, one forward) instead of ending the engine.
/// </summary>
internal interface IFaultIsolated
{
    /// <summary>The handler threw <paramref name="error"/>; release what it holds. Must not throw.</summary>
    void OnFault(Exception error);
}

/// <summary>Where the loop reports a handler's exception it caught (counted and logged, rate-limited, by the engine).</summary>
internal delegate void FaultReporter(object handler, Exception error);

/// <summary>A part of the stack with deadlines (TCP retransmission, UDP idle expiry, ...).</summary>
internal interface ITimerClient
{
    /// <summary>Runs what is due at <paramref name="nowMs"/>; returns the next deadline in loop milliseconds, or <see cref="long.MaxValue"/>.</summary>
    long OnTimer(long nowMs);
}

/// <summary>
/// Theory of operation: one owner thread per engine instance holds all stack state (as passt and smoltcp do),
/// so the data path takes no locks. The thread sleeps in epoll_wait on every file descriptor the engine owns
/// (the device's socket, each host socket, the listeners) plus one eventfd through which other threads
/// (control API) hand work over with <see cref="Post"/>. Timers are deadlines: a client asks to be woken at a time
/// with <see cref="WakeAt"/>, the loop sleeps no longer than the earliest, and then asks every timer client for its
/// next one. Nothing polls while idle. After each batch of events, posted work and due timers, the end-of-turn hooks
/// run in two stages: producers first (<see cref="AddProducer"/>: TCP writes the turn's guest data to host sockets and
/// sends the turn's deferred ACKs), then the flushers (<see cref="AddEndOfBatch"/>: devices send what was queued), so
/// one turn's frames leave in one write.
/// </summary>
internal sealed unsafe class EventLoop : IDisposable
{
    private const int MaxEvents = 256;
    private readonly int _epfd;
    private readonly int _wakeFd;
    private readonly List<IPollable?> _handlers = new();
    private readonly Stack<int> _freeTokens = new();
    private readonly ConcurrentQueue<Action> _posted = new();
    private readonly List<ITimerClient> _timerClients = new();
    private readonly List<IEndOfBatch> _endOfBatch = new();
    private readonly List<IEndOfBatch> _producers = new();
    private readonly byte* _events;
    private readonly long _startTicks = Stopwatch.GetTimestamp();
    private long _nextDeadline = long.MaxValue;
    private volatile bool _stop;
    private FaultReporter? _faults;
    private int _ownerThreadId = -1;

    public EventLoop()
    {
        _epfd = Libc.epoll_create1(Libc.EPOLL_CLOEXEC);
        if (_epfd < 0) throw new InvalidOperationException($"epoll_create1 failed: errno {Marshal.GetLastPInvokeError()}");
        _wakeFd = Libc.eventfd(0, Libc.EFD_CLOEXEC | Libc.EFD_NONBLOCK);
        if (_wakeFd < 0) throw new InvalidOperationException($"eventfd failed: errno {Marshal.GetLastPInvokeError()}");
        _events = (byte*)NativeMemory.AllocZeroed((nuint)(MaxEvents * Libc.EpollEventSize));
        Ctl(Libc.EPOLL_CTL_ADD, _wakeFd, Libc.EPOLLIN, ulong.MaxValue);
    }

    /// <summary>
    /// The descriptors kept free at the top of the open-file limit, which every socket the engine obtains for a flow,
    /// a forward or an emulator is checked against (set once by the engine before anything binds; none by default).
    /// </summary>
    public DescriptorHeadroom Headroom { get; set; } = DescriptorHeadroom.Unlimited;

    /// <summary>Milliseconds since the loop was made; monotonic.</summary>
    public long NowMs => (long)Stopwatch.GetElapsedTime(_startTicks).TotalMilliseconds;

    public bool IsOwnerThread => Environment.CurrentManagedThreadId == _ownerThreadId;

    /// <summary>
    /// The owner-thread rule, checked in debug builds: once the loop runs, owner-only state may be touched from its
    /// thread alone (before it runs, start-up and tests drive the parts directly). Throws naming the caller.
    /// </summary>
    [Conditional("DEBUG")]
    public void AssertOwner([System.Runtime.CompilerServices.CallerMemberName] string caller = "")
    {
        if (_ownerThreadId != -1 && !IsOwnerThread)
            throw new InvalidOperationException($"{caller} belongs to the engine's owner thread; marshal the call with InvokeAsync.");
    }

    /// <summary>Watches <paramref name="fd"/> for <paramref name="events"/>; returns the token to modify or remove it with.</summary>
    public int Register(int fd, uint events, IPollable handler)
    {
        int token;
        if (_freeTokens.Count > 0) { token = _freeTokens.Pop(); _handlers[token] = handler; }
        else { token = _handlers.Count; _handlers.Add(handler); }
        try { Ctl(Libc.EPOLL_CTL_ADD, fd, events, (ulong)token); }
        catch (InvalidOperationException)
        {
            _handlers[token] = null; // an fd epoll refuses (e.g. a regular file) leaves no slot behind
            _freeTokens.Push(token);
            throw;
        }
        return token;
    }

    public void Modify(int token, int fd, uint events) => Ctl(Libc.EPOLL_CTL_MOD, fd, events, (ulong)token);

    /// <summary>Stops watching; call before the file descriptor is closed.</summary>
    public void Unregister(int token, int fd)
    {
        byte* ev = stackalloc byte[16];
        Libc.epoll_ctl(_epfd, Libc.EPOLL_CTL_DEL, fd, ev);
        _handlers[token] = null;
        _freeTokens.Push(token);
    }

    public void AddTimerClient(ITimerClient client) => _timerClients.Add(client);

    /// <summary>
    /// Where caught handler exceptions are reported. Without one, a handler's exception ends the loop (tests rely on
    /// seeing their failures); an engine sets one, so no flow, forward or capture can end it.
    /// </summary>
    public void SetFaultReporter(FaultReporter reporter) => _faults = reporter;

    /// <summary>Reports <paramref name="error"/> from <paramref name="handler"/> and isolates the handler; rethrows without a reporter.</summary>
    internal void Fault(object handler, Exception error)
    {
        if (_faults is null) System.Runtime.ExceptionServices.ExceptionDispatchInfo.Capture(error).Throw();
        try { (handler as IFaultIsolated)?.OnFault(error); }
        catch (Exception inner) { _faults(handler, inner); }
        _faults(handler, error);
    }

    public void AddEndOfBatch(IEndOfBatch hook) => _endOfBatch.Add(hook);

    /// <summary>
    /// A hook that may still produce frames at the end of a batch (TCP's deferred acknowledgements): producers run
    /// before every <see cref="AddEndOfBatch"/> hook, so what they emit leaves with the devices' flush of the same turn.
    /// </summary>
    public void AddProducer(IEndOfBatch hook) => _producers.Add(hook);

    /// <summary>Asks the loop to run the timer clients no later than <paramref name="deadlineMs"/>. Owner thread only.</summary>
    public void WakeAt(long deadlineMs)
    {
        if (deadlineMs < _nextDeadline) _nextDeadline = deadlineMs;
    }

    /// <summary>Runs <paramref name="work"/> on the owner thread. Thread-safe; not for the data path.</summary>
    public void Post(Action work)
    {
        _posted.Enqueue(work);
        Wake();
    }

    /// <summary>Runs <paramref name="work"/> on the owner thread and returns its result.</summary>
    public Task<T> InvokeAsync<T>(Func<T> work)
    {
        var tcs = new TaskCompletionSource<T>(TaskCreationOptions.RunContinuationsAsynchronously);
        Post(() =>
        {
            try { tcs.SetResult(work()); }
            catch (Exception e) { tcs.SetException(e); }
        });
        return tcs.Task;
    }

    public void Stop()
    {
        _stop = true;
        Wake();
    }

    private void Wake()
    {
        ulong one = 1;
        Libc.write(_wakeFd, (byte*)&one, 8);
    }

    /// <summary>Runs until <see cref="Stop"/>. The calling thread becomes the owner thread.</summary>
    public void Run()
    {
        _ownerThreadId = Environment.CurrentManagedThreadId;
        while (!_stop)
        {
            long now = NowMs;
            int timeout = -1;
            if (_nextDeadline != long.MaxValue)
            {
                long wait = _nextDeadline - now;
                timeout = wait <= 0 ? 0 : (int)Math.Min(wait, int.MaxValue);
            }
            int n = Libc.epoll_wait(_epfd, _events, MaxEvents, timeout);
            if (n < 0)
            {
                int errno = Marshal.GetLastPInvokeError();
                if (errno == Libc.EINTR) continue;
                throw new InvalidOperationException($"epoll_wait failed: errno {errno}");
            }
            for (int i = 0; i < n; i++)
            {
                Libc.ReadEpollEvent(_events + i * Libc.EpollEventSize, out uint events, out ulong data);
                if (data == ulong.MaxValue) { DrainWake(); continue; }
                var handler = (int)data < _handlers.Count ? _handlers[(int)data] : null;
                if (handler is null) continue;
                try { handler.OnPoll(events); }
                catch (Exception e) when (_faults is not null && e is not OutOfMemoryException) { Fault(handler, e); }
            }
            RunPosted();
            now = NowMs;
            if (now >= _nextDeadline) RunTimers(now);
            RunEndOfBatch(_producers);
            RunEndOfBatch(_endOfBatch);
        }
        RunPosted();
    }

    private void RunEndOfBatch(List<IEndOfBatch> hooks)
    {
        for (int i = 0; i < hooks.Count; i++)
        {
            try { hooks[i].OnEndOfBatch(); }
            catch (Exception e) when (_faults is not null && e is not OutOfMemoryException) { Fault(hooks[i], e); }
        }
    }

    private void RunTimers(long now)
    {
        // Deadlines a client asks for with WakeAt during this pass must survive it: start from none, keep the least.
        _nextDeadline = long.MaxValue;
        long next = long.MaxValue;
        foreach (var client in _timerClients)
        {
            long d;
            try { d = client.OnTimer(now); }
            catch (Exception e) when (_faults is not null && e is not OutOfMemoryException)
            {
                Fault(client, e);
                d = now + 1000; // ask again soon rather than never
            }
            if (d < next) next = d;
        }
        if (next < _nextDeadline) _nextDeadline = next;
    }

    private void RunPosted()
    {
        while (_posted.TryDequeue(out var work))
        {
            try { work(); }
            catch (Exception e) when (_faults is not null && e is not OutOfMemoryException) { Fault(work, e); }
        }
    }

    private void DrainWake()
    {
        ulong value;
        Libc.read(_wakeFd, (byte*)&value, 8);
    }

    private void Ctl(int op, int fd, uint events, ulong data)
    {
        byte* ev = stackalloc byte[16];
        Libc.WriteEpollEvent(ev, events, data);
        if (Libc.epoll_ctl(_epfd, op, fd, ev) < 0)
            throw new InvalidOperationException($"epoll_ctl({op}, fd {fd}) failed: errno {Marshal.GetLastPInvokeError()}");
    }

    public void Dispose()
    {
        Libc.close(_wakeFd);
        Libc.close(_epfd);
        NativeMemory.Free(_events);
    }
}
