using System.Net.Sockets;
using System.Text.Json;
using Emunet.Engine.Forwarding;
using Emunet.Engine.Stack.Nat;
using Microsoft.Extensions.Logging;

namespace Emunet.Engine.Control;

/// <summary>The requests: one line parsed, dispatched to <see cref="IEngineControl"/>, its outcome or error encoded.</summary>
public sealed partial class ControlServer
{
    internal static byte[] Encode(ControlResponse response)
    {
        byte[] json = JsonSerializer.SerializeToUtf8Bytes(response, ControlJsonContext.Default.ControlResponse);
        var line = new byte[json.Length + 1];
        json.CopyTo(line, 0);
        line[^1] = (byte)'\n';
        return line;
    }

    /// <summary>Parses and runs one request line; never throws.</summary>
    internal async Task<ControlResponse> HandleLineAsync(ReadOnlyMemory<byte> line, CancellationToken token)
    {
        ControlRequest? request;
        try
        {
            request = JsonSerializer.Deserialize(line.Span, ControlJsonContext.Default.ControlRequest);
        }
        catch (JsonException e)
        {
            return ControlResponse.Failure(null, ControlErrorCodes.BadJson, $"The request is not a valid JSON object: {e.Message}");
        }
        if (request is null) return ControlResponse.Failure(null, ControlErrorCodes.BadJson, "The request is not a JSON object.");
        if (request.V != ControlProtocol.Version)
        {
            return ControlResponse.Failure(request.Id, ControlErrorCodes.UnsupportedVersion,
                $"Protocol version {request.V} is not supported; send \"v\":{ControlProtocol.Version}.");
        }
        try
        {
            var reply = await DispatchAsync(request, token).ConfigureAwait(false);
            reply.Id = request.Id;
            return reply;
        }
        catch (OperationCanceledException) when (token.IsCancellationRequested) { throw; }
        catch (Exception e)
        {
            var (code, message) = Classify(e);
            // Out of descriptors, rendering a stack trace would load assemblies, which takes descriptors the runtime
            // then cannot get (it aborts): the line says what happened without the trace.
            if (IsOutOfDescriptors(e)) _logger.LogWarning(Events.RequestFailed, "Control request {Op} failed: the process is out of file descriptors", request.Op);
            else if (code == ControlErrorCodes.Internal) _logger.LogWarning(Events.RequestFailed, e, "Control request {Op} failed", request.Op);
            return ControlResponse.Failure(request.Id, code, message);
        }
    }

    private async Task<ControlResponse> DispatchAsync(ControlRequest r, CancellationToken token)
    {
        switch (r.Op)
        {
            case ControlProtocol.Ops.Info:
                return new ControlResponse { Ok = true, Instance = InstanceDto.From(_engine.Info) };

            case ControlProtocol.Ops.ForwardAdd:
            {
                if (!ForwardSpec.TryParseMany(r.Spec, out var specs, out string? error))
                    return ControlResponse.Failure(null, ControlErrorCodes.BadRequest, error!);
                if (specs.Count == 1)
                {
                    var added = await _engine.AddForwardAsync(specs[0], token).WaitAsync(token).ConfigureAwait(false);
                    return new ControlResponse { Ok = true, Forward = ForwardDto.From(added) };
                }
                return await AddAllAsync(specs, token).ConfigureAwait(false);
            }

            case ControlProtocol.Ops.ForwardList:
            {
                var list = await _engine.ListForwardsAsync(token).WaitAsync(token).ConfigureAwait(false);
                var dtos = new List<ForwardDto>(list.Count);
                foreach (var f in list) dtos.Add(ForwardDto.From(f));
                return new ControlResponse { Ok = true, Forwards = dtos };
            }

            case ControlProtocol.Ops.ForwardRemove:
            {
                if (!EndPointText.TryParseForwardProtocol(r.Protocol ?? "tcp", out var protocol))
                    return ControlResponse.Failure(null, ControlErrorCodes.BadRequest, $"protocol '{r.Protocol}' is not tcp or udp.");
                if (r.Port is not { } port || port < 1 || port > 65535)
                    return ControlResponse.Failure(null, ControlErrorCodes.BadRequest, "port is required, between 1 and 65535.");
                System.Net.IPAddress address;
                if (r.Address is null)
                {
                    // No address: the forward on that port, whatever address it listens on.
                    var onPort = (await _engine.ListForwardsAsync(token).WaitAsync(token).ConfigureAwait(false))
                        .Where(f => f.Spec.Protocol == protocol && f.BoundPort == port).ToList();
                    if (onPort.Count > 1)
                    {
                        return ControlResponse.Failure(null, ControlErrorCodes.BadRequest,
                            $"Several {ForwardDto.ProtocolName(protocol)} forwards listen on port {port}: {string.Join(", ", onPort.Select(f => ForwardDto.From(f).Spec))}. Give the address too (e.g. {ForwardDto.ProtocolName(protocol)}:{DisplayText.EndPoint(onPort[0].Spec.HostAddress.ToString(), port)}).");
                    }
                    address = onPort.Count == 1 ? onPort[0].Spec.HostAddress : System.Net.IPAddress.Loopback;
                }
                else if (!EndPointText.TryParseAddress(r.Address, out address))
                    return ControlResponse.Failure(null, ControlErrorCodes.BadRequest, $"address '{r.Address}' is not an IPv4 or IPv6 address.");
                var removed = await _engine.RemoveForwardAsync(protocol, address, port, r.Force, token).WaitAsync(token).ConfigureAwait(false);
                if (removed is null)
                {
                    return ControlResponse.Failure(null, ControlErrorCodes.NotFound,
                        $"No {ForwardDto.ProtocolName(protocol)} forward listens on {(r.Address is null ? $"port {port}" : DisplayText.EndPoint(address.ToString(), port))}. List them with 'emunet forward list' (Get-EmuForward).");
                }
                return new ControlResponse { Ok = true, Forward = ForwardDto.From(removed) };
            }

            case ControlProtocol.Ops.ConnectionsList:
            {
                FlowProtocol? protocol = null;
                if (r.Protocol is not null)
                {
                    if (!EndPointText.TryParseProtocol(r.Protocol, out var p))
                        return ControlResponse.Failure(null, ControlErrorCodes.BadRequest, $"protocol '{r.Protocol}' is not tcp, udp or icmp.");
                    protocol = p;
                }
                if (r.Port is { } port && (port < 0 || port > 65535))
                    return ControlResponse.Failure(null, ControlErrorCodes.BadRequest, "port must be between 0 and 65535.");
                var all = await _engine.ListConnectionsAsync(token).WaitAsync(token).ConfigureAwait(false);
                var dtos = new List<ConnectionDto>();
                foreach (var c in all)
                    if (ConnectionDto.Matches(c, protocol, r.Port, r.State)) dtos.Add(ConnectionDto.From(c));
                return new ControlResponse { Ok = true, Connections = dtos };
            }

            case ControlProtocol.Ops.Stats:
                return new ControlResponse { Ok = true, Stats = StatsDto.From(await _engine.GetStatisticsAsync(token).WaitAsync(token).ConfigureAwait(false)) };

            case ControlProtocol.Ops.CaptureStart:
            {
                if (string.IsNullOrWhiteSpace(r.Path))
                    return ControlResponse.Failure(null, ControlErrorCodes.BadRequest, "path is required: the pcap file to write.");
                string full = System.IO.Path.GetFullPath(r.Path);
                try { await _engine.StartCaptureAsync(full, token).WaitAsync(token).ConfigureAwait(false); }
                catch (Exception e) when (e is IOException or UnauthorizedAccessException)
                {
                    return ControlResponse.Failure(null, ControlErrorCodes.CaptureFailed, $"Cannot write the capture file '{full}': {e.Message}");
                }
                return new ControlResponse { Ok = true, Capture = new CaptureDto { File = full, Running = true } };
            }

            case ControlProtocol.Ops.RemapAdd:
            {
                var added = await _engine.AddRemapAsync(r.Spec ?? "", r.Target, token).WaitAsync(token).ConfigureAwait(false);
                return new ControlResponse { Ok = true, Remap = RemapDto.From(added) };
            }

            case ControlProtocol.Ops.RemapList:
            {
                var list = await _engine.ListRemapsAsync(token).WaitAsync(token).ConfigureAwait(false);
                return new ControlResponse { Ok = true, Remaps = list.Select(RemapDto.From).ToList() };
            }

            case ControlProtocol.Ops.RemapRemove:
            {
                if (!Stack.GuestRemap.TryProtocol(r.Protocol ?? "tcp", out var protocol))
                    return ControlResponse.Failure(null, ControlErrorCodes.BadRequest, $"protocol '{r.Protocol}' is not tcp or udp.");
                if (r.Port is not { } port || port < 1 || port > 65535)
                    return ControlResponse.Failure(null, ControlErrorCodes.BadRequest, "port (the guest port of the remap) is required, between 1 and 65535.");
                Wire.IPv4Address? address = null;
                if (r.Address is not null)
                {
                    if (!Wire.IPv4Address.TryParseDottedQuad(r.Address, out var a))
                        return ControlResponse.Failure(null, ControlErrorCodes.BadRequest, $"address '{r.Address}' is not an IPv4 address of the guest network.");
                    address = Wire.IPv4Address.From(a);
                }
                var removed = await _engine.RemoveRemapAsync(protocol, address, port, token).WaitAsync(token).ConfigureAwait(false);
                if (removed is null)
                    return ControlResponse.Failure(null, ControlErrorCodes.NotFound,
                        $"No remap of the guest's {(r.Protocol ?? "tcp").ToLowerInvariant()} port {port}{(address is null ? "" : $" on {address}")}; 'emunet reverse list' shows them.");
                return new ControlResponse { Ok = true, Remap = RemapDto.From(removed) };
            }

            case ControlProtocol.Ops.CaptureStream:
            {
                var live = await _engine.OpenLiveCaptureAsync(token).WaitAsync(token).ConfigureAwait(false);
                return new ControlResponse { Ok = true, Capture = new CaptureDto { File = "-", Running = true }, StreamAfterSend = live };
            }

            case ControlProtocol.Ops.CaptureStop:
            {
                string? file = await _engine.StopCaptureAsync(token).WaitAsync(token).ConfigureAwait(false);
                return new ControlResponse { Ok = true, Capture = new CaptureDto { File = file, Running = false } };
            }

            case ControlProtocol.Ops.Shutdown:
                // The reply goes out first; the connection loop then asks the engine to stop.
                return new ControlResponse { Ok = true, ShutdownAfterSend = true };

            case null:
                return ControlResponse.Failure(null, ControlErrorCodes.BadRequest, "op is required.");

            default:
                return ControlResponse.Failure(null, ControlErrorCodes.UnknownOp,
                    $"Unknown op '{r.Op}'. Known ops: {string.Join(", ", ControlProtocol.Ops.All)}.");
        }
    }

    /// <summary>
    /// A list or range: every forward, or none. On the first failure the ones added are removed again and the error
    /// names the forward that failed.
    /// </summary>
    private async Task<ControlResponse> AddAllAsync(IReadOnlyList<ForwardSpec> specs, CancellationToken token)
    {
        var added = new List<ForwardInfo>(specs.Count);
        foreach (var spec in specs)
        {
            try
            {
                added.Add(await _engine.AddForwardAsync(spec, token).WaitAsync(token).ConfigureAwait(false));
            }
            catch (Exception e) when (e is not OperationCanceledException || !token.IsCancellationRequested)
            {
                foreach (var f in added)
                    await _engine.RemoveForwardAsync(f.Spec.Protocol, f.Spec.HostAddress, f.BoundPort, force: false, token).WaitAsync(token).ConfigureAwait(false);
                var (code, message) = Classify(e);
                return ControlResponse.Failure(null, code, $"{spec}: {message} None of the {specs.Count} forwards was added.");
            }
        }
        var dtos = added.ConvertAll(ForwardDto.From);
        return new ControlResponse { Ok = true, Forward = dtos[0], Forwards = dtos };
    }

    private static bool IsOutOfDescriptors(Exception e)
    {
        for (Exception? x = e; x is not null; x = x.InnerException)
            if (x is SocketException { SocketErrorCode: SocketError.TooManyOpenSockets }) return true;
        return false;
    }

    /// <summary>Maps an engine failure onto a stable code and a message that names the fix.</summary>
    public static (string Code, string Message) Classify(Exception e)
    {
        for (Exception? x = e; x is not null; x = x.InnerException)
        {
            if (x is SocketException se)
            {
                return se.SocketErrorCode switch
                {
                    SocketError.AddressAlreadyInUse => (ControlErrorCodes.PortInUse,
                        $"The host port is already in use ({e.Message}). Choose another port, or 0 for any free one."),
                    SocketError.AccessDenied => (ControlErrorCodes.PermissionDenied,
                        $"Binding the host port was refused ({e.Message}). Ports below 1024 need privileges; choose a higher one."),
                    SocketError.AddressNotAvailable => (ControlErrorCodes.BadRequest,
                        $"The host address is not on this machine ({e.Message})."),
                    SocketError.TooManyOpenSockets => (ControlErrorCodes.Internal,
                        "The engine is out of file descriptors (its open-file limit is spent). Raise the limit (ulimit -n) before starting it, or remove forwards or close connections."),
                    _ => (ControlErrorCodes.Internal, e.Message),
                };
            }
        }
        return e switch
        {
            FormatException or ArgumentException => (ControlErrorCodes.BadRequest, e.Message),
            NotSupportedException => (ControlErrorCodes.NotSupported, e.Message),
            InvalidOperationException => (ControlErrorCodes.Conflict, e.Message),
            _ => (ControlErrorCodes.Internal, $"{e.GetType().Name}: {e.Message}"),
        };
    }
}
