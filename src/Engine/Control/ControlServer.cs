using System.Net.Sockets;
using System.Runtime.InteropServices;
using Microsoft.Extensions.Logging;

namespace Emunet.Engine.Control;

/// <summary>
/// Theory of operation: the control plane of one instance. It listens on a Unix stream socket (0600, in the 0700
/// runtime folder) and serves each client on its own task with async socket calls; it never touches stack state,
/// only <see cref="IEngineControl"/>, which marshals every call to the engine's owner thread and answers snapshots.
/// A client sends lines (see <see cref="ControlProtocol"/>); requests on one connection are answered in order.
/// Untrusted input rules: a line is read into a fixed buffer of <see cref="ControlProtocol.MaxRequestBytes"/>;
/// a longer one is answered with <c>line_too_long</c> and the connection closed; malformed JSON, an unknown op or a
/// bad field get an error reply and the connection stays usable; an exception from the engine becomes an error
/// reply. A client that goes away mid-line or mid-reply only ends its own task. No client can lock the others out:
/// one idle for <see cref="IdleTimeout"/> is closed, a line must arrive whole within <see cref="LineTimeout"/> of its
/// first byte (a client trickling a byte at a time is closed), and when all <see cref="MaxClients"/> slots are taken a
/// new client takes the slot of the one idle longest (at least <see cref="EvictAfterIdle"/>); only when every client
/// is busy is it told <c>too_many_clients</c>. An accept that fails backs off instead of spinning (50 ms doubling to
/// 2 s, logged once per episode). Out of file descriptors, a client would otherwise get no answer at all; so the server
/// holds a reserve descriptor (<c>/dev/null</c>, the libev/nginx trick): on EMFILE/ENFILE it closes the reserve, accepts
/// the waiting client into the freed slot, tells it <c>too_many_clients</c> naming the descriptor limit, closes it and
/// reopens the reserve. A CLI always hears why, even when the engine's descriptors are spent.
/// The class is split by concern: this file holds the socket, the clients and their slots; ControlServer.Requests.cs
/// parses and runs each request line.
/// </summary>
public sealed partial class ControlServer : IAsyncDisposable
{
    /// <summary>The event IDs of the control server's log messages (2xx; the tool's own are 1xx).</summary>
    public static class Events
    {
        public static readonly EventId Listening = new(201, "ControlListening");
        public static readonly EventId AcceptFailed = new(202, "ControlAcceptFailed");
        public static readonly EventId ClientFailed = new(203, "ControlClientFailed");
        public static readonly EventId RequestFailed = new(204, "ControlRequestFailed");
        public static readonly EventId ClientsLingered = new(205, "ControlClientsLingered");
    }

    /// <summary>Clients served at once; one more is told <c>too_many_clients</c> and closed.</summary>
    public const int MaxClients = 32;

    /// <summary>How long a refused client has to read its answer and close before the server closes it.</summary>
    private static readonly TimeSpan RefuseLinger = TimeSpan.FromSeconds(1);

    /// <summary>A client idle this long is closed.</summary>
    public TimeSpan IdleTimeout { get; init; } = TimeSpan.FromSeconds(60);
    /// <summary>A request line must arrive whole within this long of its first byte.</summary>
    public TimeSpan LineTimeout { get; init; } = TimeSpan.FromSeconds(10);
    /// <summary>A client idle at least this long gives its slot to a new one when all are taken.</summary>
    public TimeSpan EvictAfterIdle { get; init; } = TimeSpan.FromSeconds(1);

    /// <summary>One connected client: when it last finished a request, whether it is mid-request, how to close it.</summary>
    private sealed class ClientSlot
    {
        public readonly CancellationTokenSource Close = new();
        public long IdleSince = Environment.TickCount64;
        public volatile bool Busy;
    }

    private readonly IEngineControl _engine;
    private readonly ILogger _logger;
    private readonly CancellationTokenSource _stop = new();
    private readonly List<Task> _clientTasks = new();
    private readonly List<ClientSlot> _slots = new();
    private Socket? _listener;
    private SafeHandle? _reserve;
    private Task? _acceptTask;
    private int _clients;
    private int _disposed;

    public ControlServer(IEngineControl engine, string socketPath, ILogger logger)
    {
        _engine = engine;
        _logger = logger;
        SocketPath = socketPath;
    }

    public string SocketPath { get; }

    /// <summary>Binds the socket and starts accepting. A stale socket file (nobody answers) is replaced; a live one is
    /// an error naming the fix.</summary>
    /// <exception cref="IOException">The socket cannot be bound.</exception>
    public void Start()
    {
        if (RuntimeDirectory.IsLive(SocketPath))
            throw new IOException($"Another Emunet instance already serves '{SocketPath}'. Stop it, or use another instance name (--name).");
        if (File.Exists(SocketPath)) File.Delete(SocketPath);
        string? dir = Path.GetDirectoryName(SocketPath);
        if (!string.IsNullOrEmpty(dir) && !Directory.Exists(dir)) RuntimeDirectory.CreatePrivateFolder(dir);

        var listener = new Socket(AddressFamily.Unix, SocketType.Stream, ProtocolType.Unspecified);
        try
        {
            listener.Bind(new UnixDomainSocketEndPoint(SocketPath));
            // The folder is 0700 already, so the window before the chmod exposes nothing.
            if (!OperatingSystem.IsWindows()) File.SetUnixFileMode(SocketPath, UnixFileMode.UserRead | UnixFileMode.UserWrite);
            listener.Listen(MaxClients);
        }
        catch (SocketException e)
        {
            listener.Dispose();
            throw new IOException($"Cannot listen on the control socket '{SocketPath}': {e.Message}. Check that its folder is writable.", e);
        }
        _listener = listener;
        _reserve = OpenReserve();
        _acceptTask = Task.Run(AcceptLoopAsync);
        if (_logger.IsEnabled(LogLevel.Debug)) _logger.LogDebug(Events.Listening, "Control API listening on {Path}", SocketPath);
    }

    private async Task AcceptLoopAsync()
    {
        var token = _stop.Token;
        int acceptBackoffMs = 0;
        bool failing = false; // logged once per episode of failed accepts
        while (!token.IsCancellationRequested)
        {
            Socket client;
            try { client = await _listener!.AcceptAsync(token).ConfigureAwait(false); }
            catch (OperationCanceledException) { return; }
            catch (ObjectDisposedException) { return; }
            catch (SocketException e)
            {
                if (token.IsCancellationRequested) return;
                bool outOfDescriptors = e.SocketErrorCode == SocketError.TooManyOpenSockets;
                if (!failing)
                {
                    failing = true;
                    if (outOfDescriptors)
                        _logger.LogWarning(Events.AcceptFailed, "The process is out of file descriptors: control clients are told so and closed until one is free. Raise the limit (ulimit -n) or close connections.");
                    else
                        _logger.LogWarning(Events.AcceptFailed, "Control socket accept failed: {Message}; retrying every 50 to 2000 ms", e.Message);
                }
                if (outOfDescriptors && await AnswerWithReserveAsync(token).ConfigureAwait(false)) continue;
                // No reserve (or another thread took its slot): wait rather than spin, as every accept fails at once.
                acceptBackoffMs = acceptBackoffMs == 0 ? 50 : Math.Min(acceptBackoffMs * 2, 2000);
                try { await Task.Delay(acceptBackoffMs, token).ConfigureAwait(false); } catch (OperationCanceledException) { return; }
                continue;
            }
            acceptBackoffMs = 0;
            failing = false;
            _reserve ??= OpenReserve(); // given back after an episode: take it again while descriptors are free

            if (Interlocked.Increment(ref _clients) > MaxClients && !EvictIdlest())
            {
                Interlocked.Decrement(ref _clients);
                _ = RefuseAsync(client);
                continue;
            }
            var slot = new ClientSlot();
            lock (_slots) _slots.Add(slot);
            var task = Task.Run(() => ServeClientAsync(client, slot, token));
            lock (_clientTasks)
            {
                _clientTasks.RemoveAll(t => t.IsCompleted);
                _clientTasks.Add(task);
            }
        }
    }

    /// <summary>
    /// All slots are taken: closes the client idle longest (at least <see cref="EvictAfterIdle"/>) so the new one gets
    /// its slot, as a kept-free slot would. False when every client is busy or only just finished a request.
    /// </summary>
    private bool EvictIdlest()
    {
        ClientSlot? idlest = null;
        long now = Environment.TickCount64;
        lock (_slots)
        {
            foreach (var c in _slots)
                if (!c.Busy && now - c.IdleSince >= EvictAfterIdle.TotalMilliseconds && (idlest is null || c.IdleSince < idlest.IdleSince))
                    idlest = c;
            if (idlest is null) return false;
            _slots.Remove(idlest);
        }
        // Its task ends and gives back its count; the new client is counted already, so one slot moves over.
        Interlocked.Decrement(ref _clients);
        idlest.Close.Cancel();
        return true;
    }

    private static Task RefuseAsync(Socket client) => RefuseAsync(client,
        $"The control socket serves at most {MaxClients} clients at once; try again when one has closed.");

    private static async Task RefuseAsync(Socket client, string message)
    {
        using (client)
        {
            try
            {
                using var timeout = new CancellationTokenSource(TimeSpan.FromSeconds(5));
                await client.SendAsync(Encode(ControlResponse.Failure(null, ControlErrorCodes.TooManyClients, message)), SocketFlags.None, timeout.Token).ConfigureAwait(false);
                // Closed at once, a client still sending its request would get EPIPE instead of reading the answer:
                // wait briefly for it to close first, reading (and dropping) what it sends.
                client.Shutdown(SocketShutdown.Send);
                timeout.CancelAfter(RefuseLinger);
                var sink = new byte[512];
                while (await client.ReceiveAsync(sink, SocketFlags.None, timeout.Token).ConfigureAwait(false) > 0) { }
            }
            catch (SocketException) { }
            catch (OperationCanceledException) { }
        }
    }

    /// <summary>A descriptor held only so that it can be given up for one accept when the process has none left.</summary>
    private SafeHandle? OpenReserve()
    {
        try { return File.OpenHandle("/dev/null", FileMode.Open, FileAccess.Read); }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException or PlatformNotSupportedException)
        {
            return null; // out of descriptors already, or no /dev/null: the accept loop only backs off
        }
    }

    /// <summary>
    /// Out of descriptors: frees the reserve, accepts the waiting client into its slot, tells it why it cannot be
    /// served and closes it, then takes the reserve back. False when there is no reserve or the slot was taken first.
    /// </summary>
    private async Task<bool> AnswerWithReserveAsync(CancellationToken token)
    {
        var reserve = Interlocked.Exchange(ref _reserve, null);
        if (reserve is null) return false;
        reserve.Dispose();
        Socket client;
        try
        {
            using var wait = CancellationTokenSource.CreateLinkedTokenSource(token);
            wait.CancelAfter(TimeSpan.FromSeconds(1));
            client = await _listener!.AcceptAsync(wait.Token).ConfigureAwait(false);
        }
        catch (Exception e) when (e is SocketException or OperationCanceledException or ObjectDisposedException)
        {
            _reserve = OpenReserve();
            return false;
        }
        await RefuseAsync(client, "The engine is out of file descriptors (its open-file limit is spent) and cannot serve this request. " +
            "Raise the limit (ulimit -n) before starting it, or close connections or forwards: each gives its descriptor back.").ConfigureAwait(false);
        _reserve = OpenReserve();
        return _reserve is not null;
    }

    private async Task ServeClientAsync(Socket client, ClientSlot slot, CancellationToken serverToken)
    {
        var buffer = new byte[ControlProtocol.MaxRequestBytes + 1];
        int filled = 0;
        long lineStarted = 0;
        using var closing = CancellationTokenSource.CreateLinkedTokenSource(serverToken, slot.Close.Token);
        var token = closing.Token;
        try
        {
            using (client)
            {
                while (!token.IsCancellationRequested)
                {
                    // Idle, the client has IdleTimeout to start a line; mid-line, what is left of LineTimeout.
                    var wait = filled == 0 ? IdleTimeout : LineTimeout - TimeSpan.FromMilliseconds(Environment.TickCount64 - lineStarted);
                    if (wait <= TimeSpan.Zero) return;
                    using var timeout = CancellationTokenSource.CreateLinkedTokenSource(token);
                    timeout.CancelAfter(wait);
                    int n;
                    try { n = await client.ReceiveAsync(buffer.AsMemory(filled), SocketFlags.None, timeout.Token).ConfigureAwait(false); }
                    catch (OperationCanceledException) when (!token.IsCancellationRequested) { return; } // idle or trickling: closed
                    if (n == 0) return; // EOF: a half-written request is dropped with the connection.
                    if (filled == 0) lineStarted = Environment.TickCount64;
                    filled += n;
                    slot.Busy = true;

                    int start = 0;
                    while (true)
                    {
                        int nl = Array.IndexOf(buffer, (byte)'\n', start, filled - start);
                        if (nl < 0) break;
                        int end = nl > start && buffer[nl - 1] == (byte)'\r' ? nl - 1 : nl;
                        if (end > start)
                        {
                            var reply = await HandleLineAsync(buffer.AsMemory(start, end - start), token).ConfigureAwait(false);
                            if (reply.StreamAfterSend is { } live)
                            {
                                // The connection becomes the live capture's: never idle, never evicted.
                                using (live)
                                {
                                    await client.SendAsync(Encode(reply), SocketFlags.None, token).ConfigureAwait(false);
                                    await StreamCaptureAsync(client, live, token).ConfigureAwait(false);
                                }
                                return;
                            }
                            await client.SendAsync(Encode(reply), SocketFlags.None, token).ConfigureAwait(false);
                            if (reply.ShutdownAfterSend) { _engine.RequestShutdown(); return; }
                        }
                        start = nl + 1;
                    }

                    if (start > 0)
                    {
                        Buffer.BlockCopy(buffer, start, buffer, 0, filled - start);
                        filled -= start;
                        lineStarted = Environment.TickCount64;
                    }
                    if (filled == 0)
                    {
                        slot.Busy = false;
                        slot.IdleSince = Environment.TickCount64;
                    }
                    if (filled > ControlProtocol.MaxRequestBytes)
                    {
                        await client.SendAsync(Encode(ControlResponse.Failure(null, ControlErrorCodes.LineTooLong,
                            $"A request line is at most {ControlProtocol.MaxRequestBytes} bytes; this connection is closed.")), SocketFlags.None, token).ConfigureAwait(false);
                        return;
                    }
                }
            }
        }
        catch (OperationCanceledException) { }
        catch (SocketException) { }
        catch (ObjectDisposedException) { }
        catch (Exception e)
        {
            _logger.LogWarning(Events.ClientFailed, e, "Control client failed");
        }
        finally
        {
            bool removed;
            lock (_slots) removed = _slots.Remove(slot);
            // An evicted client is out of the list already: its count moved to the client that took its slot.
            if (removed) Interlocked.Decrement(ref _clients);
        }
    }

    /// <summary>
    /// Sends a live capture's pcap bytes until the engine ends it or the client is done: the client says nothing more
    /// on this connection, so any byte or its half-close ends the capture (what it holds is still sent, whole records
    /// only), and a send that fails (the client went away) ends it at once.
    /// </summary>
    private static async Task StreamCaptureAsync(Socket client, Capture.ILiveCaptureStream live, CancellationToken token)
    {
        using var done = CancellationTokenSource.CreateLinkedTokenSource(token);
        var watch = Task.Run(async () =>
        {
            var one = new byte[1];
            try { await client.ReceiveAsync(one, SocketFlags.None, done.Token).ConfigureAwait(false); }
            catch (Exception e) when (e is SocketException or OperationCanceledException or ObjectDisposedException) { }
            live.Dispose();
        });
        var chunk = new byte[64 * 1024];
        try
        {
            while (true)
            {
                int n = await live.ReadAsync(chunk, done.Token).ConfigureAwait(false);
                if (n == 0) break;
                await client.SendAsync(chunk.AsMemory(0, n), SocketFlags.None, done.Token).ConfigureAwait(false);
            }
            client.Shutdown(SocketShutdown.Send);
        }
        catch (OperationCanceledException) { }
        catch (SocketException) { }
        finally
        {
            done.Cancel();
            await watch.ConfigureAwait(false);
        }
    }

    /// <summary>Stops accepting, closes every client and removes the socket file.</summary>
    public async ValueTask DisposeAsync()
    {
        if (Interlocked.Exchange(ref _disposed, 1) != 0) return;
        _stop.Cancel();
        _listener?.Dispose();
        Interlocked.Exchange(ref _reserve, null)?.Dispose();
        if (_acceptTask is not null) await _acceptTask.ConfigureAwait(false);
        Task[] tasks;
        lock (_clientTasks) tasks = _clientTasks.ToArray();
        try { await Task.WhenAll(tasks).WaitAsync(TimeSpan.FromSeconds(5)).ConfigureAwait(false); }
        catch (TimeoutException) { _logger.LogWarning(Events.ClientsLingered, "Control clients did not finish within 5 s"); }
        if (_listener is not null)
        {
            try { File.Delete(SocketPath); } catch (IOException) { }
        }
        _stop.Dispose();
    }
}
