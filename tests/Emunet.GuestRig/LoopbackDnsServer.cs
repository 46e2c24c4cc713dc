using System.Buffers.Binary;
using System.Net;
using System.Net.Sockets;

namespace Emunet.GuestRig;

/// <summary>
/// A tiny authoritative DNS server on 127.0.0.1 (UDP and TCP, same port) for guest tests: answers A queries for the
/// names it was given, NXDOMAIN for other names, and an empty answer for other types. Counts the queries it got.
/// </summary>
public sealed class LoopbackDnsServer : IDisposable
{
    private readonly Dictionary<string, IPAddress> _records = new(StringComparer.OrdinalIgnoreCase);
    private readonly UdpClient _udp;
    private readonly TcpListener _tcp;
    private readonly CancellationTokenSource _stop = new();
    private int _udpQueries;
    private int _tcpQueries;

    public LoopbackDnsServer()
    {
        // Same port for UDP and TCP: bind UDP on an ephemeral port, then TCP on that one (retry on the rare clash).
        for (int attempt = 0; ; attempt++)
        {
            var udp = new UdpClient(new IPEndPoint(IPAddress.Loopback, 0));
            int port = ((IPEndPoint)udp.Client.LocalEndPoint!).Port;
            var tcp = new TcpListener(IPAddress.Loopback, port);
            try
            {
                tcp.Start();
                _udp = udp;
                _tcp = tcp;
                break;
            }
            catch (SocketException) when (attempt < 20)
            {
                udp.Dispose();
            }
        }
        _ = Task.Run(UdpLoop);
        _ = Task.Run(TcpLoop);
    }

    public int Port => ((IPEndPoint)_udp.Client.LocalEndPoint!).Port;
    public int UdpQueries => Volatile.Read(ref _udpQueries);
    public int TcpQueries => Volatile.Read(ref _tcpQueries);

    public void Add(string name, IPAddress address) => _records[name.TrimEnd('.')] = address;

    private async Task UdpLoop()
    {
        while (!_stop.IsCancellationRequested)
        {
            UdpReceiveResult r;
            try { r = await _udp.ReceiveAsync(_stop.Token); }
            catch (Exception) { return; }
            Interlocked.Increment(ref _udpQueries);
            var answer = Answer(r.Buffer);
            if (answer is not null) await _udp.SendAsync(answer, r.RemoteEndPoint);
        }
    }

    private async Task TcpLoop()
    {
        while (!_stop.IsCancellationRequested)
        {
            TcpClient c;
            try { c = await _tcp.AcceptTcpClientAsync(_stop.Token); }
            catch (Exception) { return; }
            _ = Task.Run(async () =>
            {
                using var client = c;
                var s = client.GetStream();
                var len = new byte[2];
                try
                {
                    while (true)
                    {
                        await s.ReadExactlyAsync(len);
                        var q = new byte[BinaryPrimitives.ReadUInt16BigEndian(len)];
                        await s.ReadExactlyAsync(q);
                        Interlocked.Increment(ref _tcpQueries);
                        var a = Answer(q);
                        if (a is null) return;
                        var framed = new byte[2 + a.Length];
                        BinaryPrimitives.WriteUInt16BigEndian(framed, (ushort)a.Length);
                        a.CopyTo(framed, 2);
                        await s.WriteAsync(framed);
                    }
                }
                catch (Exception) { }
            });
        }
    }

    private byte[]? Answer(byte[] q)
    {
        if (q.Length < 12 || BinaryPrimitives.ReadUInt16BigEndian(q.AsSpan(4)) != 1) return null;
        int i = 12;
        var labels = new List<string>();
        while (i < q.Length && q[i] != 0)
        {
            int l = q[i];
            if (l > 63 || i + 1 + l > q.Length) return null;
            labels.Add(System.Text.Encoding.ASCII.GetString(q, i + 1, l));
            i += 1 + l;
        }
        if (i + 5 > q.Length) return null;
        int qEnd = i + 5;
        ushort qtype = BinaryPrimitives.ReadUInt16BigEndian(q.AsSpan(i + 1));
        string name = string.Join('.', labels);
        bool known = _records.TryGetValue(name, out var addr);
        bool answerA = known && qtype == 1;
        var r = new byte[qEnd + (answerA ? 16 : 0)];
        Array.Copy(q, r, qEnd);
        r[2] = (byte)(0x84 | (q[2] & 0x01)); // QR, AA, RD copied
        r[3] = (byte)(known ? 0x00 : 0x03);   // NOERROR or NXDOMAIN
        BinaryPrimitives.WriteUInt16BigEndian(r.AsSpan(6), (ushort)(answerA ? 1 : 0));
        BinaryPrimitives.WriteUInt16BigEndian(r.AsSpan(8), 0);
        BinaryPrimitives.WriteUInt16BigEndian(r.AsSpan(10), 0);
        if (answerA)
        {
            var a = r.AsSpan(qEnd);
            BinaryPrimitives.WriteUInt16BigEndian(a, 0xc00c);
            BinaryPrimitives.WriteUInt16BigEndian(a[2..], 1);
            BinaryPrimitives.WriteUInt16BigEndian(a[4..], 1);
            BinaryPrimitives.WriteUInt32BigEndian(a[6..], 60);
            BinaryPrimitives.WriteUInt16BigEndian(a[10..], 4);
            addr!.TryWriteBytes(a[12..], out _);
        }
        return r;
    }

    public void Dispose()
    {
        _stop.Cancel();
        _udp.Dispose();
        _tcp.Stop();
    }
}
