using System.Net.Sockets;
using System.Text.Json;

namespace Emunet.Engine.Control;

/// <summary>A control request failed; <see cref="Code"/> is one of <see cref="ControlErrorCodes"/>.</summary>
public sealed class ControlException : Exception
{
    public ControlException(string code, string message, Exception? inner = null) : base(message, inner) => Code = code;

    public string Code { get; }
}

/// <summary>
/// A blocking client of one instance's control socket (the tool and the PowerShell module use it). One request at a
/// time; not thread-safe. Every call either returns the op's result or throws <see cref="ControlException"/>.
/// </summary>
public sealed class ControlClient : IDisposable
{
    public static readonly TimeSpan DefaultTimeout = TimeSpan.FromSeconds(15);

    /// <summary>The reply buffer's first size; it doubles as a reply needs (10 000 flows take about 4 MiB).</summary>
    public const int InitialReplyBytes = 64 * 1024;

    /// <summary>The longest reply line read; a longer one is a protocol error (no engine sends one: 1 million flows fit).</summary>
    public const int MaxReplyBytes = 512 * 1024 * 1024;

    private readonly Socket _socket;
    private byte[] _buffer = new byte[InitialReplyBytes];
    private int _start, _filled;
    private long _nextId = 1;

    private ControlClient(Socket socket, string socketPath)
    {
        _socket = socket;
        SocketPath = socketPath;
    }

    public string SocketPath { get; }

    /// <exception cref="ControlException">Code <see cref="ControlErrorCodes.Unreachable"/>.</exception>
    public static ControlClient Connect(string socketPath, TimeSpan? timeout = null)
    {
        var socket = new Socket(AddressFamily.Unix, SocketType.Stream, ProtocolType.Unspecified);
        try
        {
            socket.Connect(new UnixDomainSocketEndPoint(socketPath));
        }
        catch (SocketException e)
        {
            socket.Dispose();
            throw new ControlException(ControlErrorCodes.Unreachable, $"Cannot reach the Emunet control socket '{socketPath}': {e.Message}.", e);
        }
        int ms = (int)(timeout ?? DefaultTimeout).TotalMilliseconds;
        socket.ReceiveTimeout = ms;
        socket.SendTimeout = ms;
        return new ControlClient(socket, socketPath);
    }

    /// <summary>Connects to instance <paramref name="name"/>, or to the only one running when it is null.</summary>
    public static ControlClient ConnectInstance(string? name, TimeSpan? timeout = null) =>
        Connect(RuntimeDirectory.SocketPathFor(RuntimeDirectory.ResolveInstance(name)), timeout);

    /// <summary>Sends <paramref name="request"/> (its <c>v</c> and <c>id</c> are set here) and returns the successful reply.</summary>
    public ControlResponse Send(ControlRequest request)
    {
        request.V = ControlProtocol.Version;
        long id = _nextId++;
        request.Id = JsonSerializer.SerializeToElement(id, ControlJsonContext.Default.Int64);
        byte[] json = JsonSerializer.SerializeToUtf8Bytes(request, ControlJsonContext.Default.ControlRequest);
        var line = new byte[json.Length + 1];
        json.CopyTo(line, 0);
        line[^1] = (byte)'\n';
        try
        {
            _socket.Send(line);
        }
        catch (SocketException e)
        {
            throw Failed(e);
        }

        ControlResponse? response;
        try { response = JsonSerializer.Deserialize(ReadLine(), ControlJsonContext.Default.ControlResponse); }
        catch (JsonException e) { throw new ControlException(ControlErrorCodes.ProtocolError, $"The engine's reply is not valid JSON: {e.Message}", e); }
        if (response is null) throw new ControlException(ControlErrorCodes.ProtocolError, "The engine sent an empty reply.");
        if (!response.Ok)
            throw new ControlException(response.Error?.Code ?? ControlErrorCodes.ProtocolError, response.Error?.Message ?? "The engine refused the request.");
        if (response.Id is not { ValueKind: JsonValueKind.Number } rid || rid.GetInt64() != id)
            throw new ControlException(ControlErrorCodes.ProtocolError, "The engine's reply does not match the request.");
        return response;
    }

    private ControlException Failed(SocketException e) => e.SocketErrorCode == SocketError.TimedOut
        ? new ControlException(ControlErrorCodes.Timeout, $"The Emunet instance at '{SocketPath}' did not answer in time.", e)
        : new ControlException(ControlErrorCodes.Unreachable, $"The connection to '{SocketPath}' failed: {e.Message}.", e);

    private ReadOnlySpan<byte> ReadLine()
    {
        while (true)
        {
            int nl = Array.IndexOf(_buffer, (byte)'\n', _start, _filled - _start);
            if (nl >= 0)
            {
                var line = _buffer.AsSpan(_start, nl - _start);
                _start = nl + 1;
                return line;
            }
            if (_start > 0)
            {
                Buffer.BlockCopy(_buffer, _start, _buffer, 0, _filled - _start);
                _filled -= _start;
                _start = 0;
            }
            if (_filled == _buffer.Length)
            {
                if (_buffer.Length >= MaxReplyBytes)
                    throw new ControlException(ControlErrorCodes.ProtocolError, $"The engine's reply is longer than {MaxReplyBytes / (1024 * 1024)} MiB.");
                Array.Resize(ref _buffer, Math.Min(_buffer.Length * 2, MaxReplyBytes));
            }
            int n;
            try { n = _socket.Receive(_buffer, _filled, _buffer.Length - _filled, SocketFlags.None); }
            catch (SocketException e) { throw Failed(e); }
            if (n == 0) throw new ControlException(ControlErrorCodes.Unreachable, $"The Emunet instance at '{SocketPath}' closed the connection.");
            _filled += n;
        }
    }

    public InstanceDto Info() => Send(new ControlRequest { Op = ControlProtocol.Ops.Info }).Instance ?? throw Missing("instance");

    public ForwardDto AddForward(string spec) =>
        Send(new ControlRequest { Op = ControlProtocol.Ops.ForwardAdd, Spec = spec }).Forward ?? throw Missing("forward");

    /// <summary>Adds every forward a list or range spec stands for (all or none); one for a plain spec.</summary>
    public List<ForwardDto> AddForwards(string spec)
    {
        var reply = Send(new ControlRequest { Op = ControlProtocol.Ops.ForwardAdd, Spec = spec });
        return reply.Forwards ?? [reply.Forward ?? throw Missing("forward")];
    }

    public List<ForwardDto> ListForwards() =>
        Send(new ControlRequest { Op = ControlProtocol.Ops.ForwardList }).Forwards ?? throw Missing("forwards");

    /// <summary>Removes the forward on <paramref name="protocol"/> <paramref name="address"/>:<paramref name="port"/>; a null
    /// address finds the forward on that port whatever its address (an error names them when several share it).</summary>
    public ForwardDto RemoveForward(string protocol, string? address, int port, bool force) =>
        Send(new ControlRequest { Op = ControlProtocol.Ops.ForwardRemove, Protocol = protocol, Address = address, Port = port, Force = force }).Forward
        ?? throw Missing("forward");

    public List<ConnectionDto> ListConnections(string? protocol = null, int? port = null, string? state = null) =>
        Send(new ControlRequest { Op = ControlProtocol.Ops.ConnectionsList, Protocol = protocol, Port = port, State = state }).Connections
        ?? throw Missing("connections");

    public StatsDto Stats() => Send(new ControlRequest { Op = ControlProtocol.Ops.Stats }).Stats ?? throw Missing("stats");

    public CaptureDto StartCapture(string path) =>
        Send(new ControlRequest { Op = ControlProtocol.Ops.CaptureStart, Path = path }).Capture ?? throw Missing("capture");

    public CaptureDto StopCapture() => Send(new ControlRequest { Op = ControlProtocol.Ops.CaptureStop }).Capture ?? throw Missing("capture");

    /// <summary>Adds a guest-to-host remap: one spec (<c>tcp:8000:9000</c>), or adb's pair (<c>tcp:8000</c>, <c>tcp:9000</c>).</summary>
    public RemapDto AddRemap(string spec, string? target = null) =>
        Send(new ControlRequest { Op = ControlProtocol.Ops.RemapAdd, Spec = spec, Target = target }).Remap ?? throw Missing("remap");

    public List<RemapDto> ListRemaps() => Send(new ControlRequest { Op = ControlProtocol.Ops.RemapList }).Remaps ?? throw Missing("remaps");

    /// <summary>Removes the remap of the guest's <paramref name="protocol"/> <paramref name="guestPort"/> (on the gateway alias unless <paramref name="guestAddress"/> names another).</summary>
    public RemapDto RemoveRemap(string protocol, int guestPort, string? guestAddress = null) =>
        Send(new ControlRequest { Op = ControlProtocol.Ops.RemapRemove, Protocol = protocol, Port = guestPort, Address = guestAddress }).Remap
        ?? throw Missing("remap");

    /// <summary>
    /// Starts a live capture and copies its pcap bytes to <paramref name="destination"/> until the engine stops, the
    /// token is cancelled, or the destination closes (a reader such as Wireshark quit). The connection is the
    /// capture's from then on: dispose the client after. Returns the bytes copied.
    /// </summary>
    public async Task<long> StreamCaptureAsync(Stream destination, CancellationToken cancellationToken)
    {
        Send(new ControlRequest { Op = ControlProtocol.Ops.CaptureStream });
        _socket.ReceiveTimeout = 0;
        long copied = 0;
        // Bytes that came with the reply line are the start of the stream.
        if (_filled > _start)
        {
            await destination.WriteAsync(_buffer.AsMemory(_start, _filled - _start), cancellationToken).ConfigureAwait(false);
            // Flushed at once like every later chunk: these may be all the frames for a while (a reader would wait).
            await destination.FlushAsync(cancellationToken).ConfigureAwait(false);
            copied += _filled - _start;
            _start = _filled = 0;
        }
        var chunk = new byte[64 * 1024];
        try
        {
            while (true)
            {
                int n = await _socket.ReceiveAsync(chunk, SocketFlags.None, cancellationToken).ConfigureAwait(false);
                if (n == 0) break;
                await destination.WriteAsync(chunk.AsMemory(0, n), cancellationToken).ConfigureAwait(false);
                await destination.FlushAsync(cancellationToken).ConfigureAwait(false);
                copied += n;
            }
        }
        catch (OperationCanceledException) when (cancellationToken.IsCancellationRequested) { }
        catch (SocketException e) when (e.SocketErrorCode is SocketError.ConnectionReset or SocketError.Shutdown) { }
        return copied;
    }

    /// <summary>Asks the instance to stop; returns once it has acknowledged.</summary>
    public void Shutdown() => Send(new ControlRequest { Op = ControlProtocol.Ops.Shutdown });

    /// <summary>
    /// Asks the instance to stop and waits until it is gone: its control socket removed (the engine removes it last,
    /// after its listeners and device socket) and its process exited, when that is another process than this one.
    /// </summary>
    /// <returns>False when the instance was still there after <paramref name="timeout"/>.</returns>
    public bool ShutdownAndWait(TimeSpan timeout)
    {
        int pid = Info().ProcessId;
        Shutdown();
        var wait = System.Diagnostics.Stopwatch.StartNew();
        while (File.Exists(SocketPath) || (pid != Environment.ProcessId && IsProcessAlive(pid)))
        {
            if (wait.Elapsed > timeout) return false;
            Thread.Sleep(20);
        }
        return true;
    }

    /// <summary>True while process <paramref name="pid"/> exists and is not a zombie (Linux /proc).</summary>
    public static bool IsProcessAlive(int pid)
    {
        try
        {
            string stat = File.ReadAllText($"/proc/{pid}/stat");
            int close = stat.LastIndexOf(')');
            return close > 0 && close + 2 < stat.Length && stat[close + 2] != 'Z';
        }
        catch (IOException) { return false; }
        catch (UnauthorizedAccessException) { return true; }
    }

    private static ControlException Missing(string member) =>
        new(ControlErrorCodes.ProtocolError, $"The engine's reply has no '{member}' member.");

    public void Dispose() => _socket.Dispose();
}
