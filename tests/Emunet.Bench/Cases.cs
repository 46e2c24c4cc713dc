namespace Emunet.Bench;

/// <summary>Where an iperf3 client runs, and which way data flows.</summary>
internal enum Route
{
    /// <summary>iperf3 client in the guest, server on host loopback reached as the gateway (10.0.2.2 → 127.0.0.1).</summary>
    GuestToHostServer,
    /// <summary>iperf3 client on the host, server in the guest, through the backend's port forward.</summary>
    HostThroughForward,
    /// <summary>Both ends inside the guest on its loopback: the limit.</summary>
    GuestLoopback,
    /// <summary>
    /// As <see cref="GuestToHostServer"/> over IPv6: the guest's SLAAC address to fec0::2, Emunet's alias of the host's
    /// ::1 (Emunet's backends only; the peers' IPv6 plans differ).
    /// </summary>
    GuestToHostServerIPv6,
}

/// <summary>
/// One iperf3 figure. <see cref="Reverse"/> is iperf3's -R (the server sends). A new case (an IPv6 target, UDP) is one
/// more entry in <see cref="Cases.Throughput"/> plus, when it needs one, a <see cref="Route"/> the session knows how to run.
/// </summary>
internal sealed record ThroughputCase(string Key, string Title, Route Route, bool Reverse, int Streams)
{
    /// <summary>The guest-loopback case with the same number of streams: this case's limit.</summary>
    public string LimitKey => $"loop-{Streams}";
}

/// <summary>What a backend or the limit is measured on; every figure of the table is one <see cref="Metric"/>.</summary>
internal static class Cases
{
    public static readonly IReadOnlyList<ThroughputCase> Throughput =
    [
        new("g2h-1", "guest→host, 1 stream", Route.GuestToHostServer, false, 1),
        new("g2h-4", "guest→host, 4 streams", Route.GuestToHostServer, false, 4),
        new("h2g-1", "host→guest, 1 stream", Route.GuestToHostServer, true, 1),
        new("h2g-4", "host→guest, 4 streams", Route.GuestToHostServer, true, 4),
        new("fin-1", "forward into the guest, 1 stream", Route.HostThroughForward, false, 1),
        new("fin-4", "forward into the guest, 4 streams", Route.HostThroughForward, false, 4),
        new("fout-1", "forward out of the guest, 1 stream", Route.HostThroughForward, true, 1),
        new("fout-4", "forward out of the guest, 4 streams", Route.HostThroughForward, true, 4),
        new("g2h6-1", "guest→host over IPv6 (fec0::2), 1 stream", Route.GuestToHostServerIPv6, false, 1),
        new("h2g6-1", "host→guest over IPv6 (fec0::2), 1 stream", Route.GuestToHostServerIPv6, true, 1),
    ];

    public static readonly IReadOnlyList<ThroughputCase> Limit =
    [
        new("loop-1", "guest loopback, 1 stream", Route.GuestLoopback, false, 1),
        new("loop-4", "guest loopback, 4 streams", Route.GuestLoopback, false, 4),
    ];

    /// <summary>Every row of a per-MTU table, in order.</summary>
    public static IEnumerable<Metric> PerMtu(IEnumerable<ThroughputCase> throughput) =>
    [
        new("mtu", "guest MTU", "bytes", Better.None, "0"),
        .. throughput.Select(c => new Metric(c.Key, c.Title, "Mbit/s", Better.Higher, "0", c.LimitKey)),
        new("conn-rate", "connections through a forward", "conn/s", Better.Higher, "0"),
        new("conn-p50", "connection time p50", "ms", Better.Lower, "0.00"),
        new("conn-p99", "connection time p99", "ms", Better.Lower, "0.00"),
        new("rr-p50", "1-byte request/response p50", "ms", Better.Lower, "0.000"),
        new("rr-p99", "1-byte request/response p99", "ms", Better.Lower, "0.000"),
        new("death", "guest app killed → host client sees it", "ms", Better.Lower, "0.00"),
        new("cpu-per-gib", "backend CPU per GiB moved", "CPU s/GiB", Better.Lower, "0.00"),
    ];

    /// <summary>Rows measured once per guest, whatever the MTU.</summary>
    public static readonly IReadOnlyList<Metric> PerGuest =
    [
        new("rss", "backend peak RSS", "MiB", Better.Lower, "0.0"),
        new("rss-private", "backend peak RSS without shared memory (guest RAM)", "MiB", Better.Lower, "0.0"),
        new("idle-cpu", "backend idle CPU", "% of a core", Better.Lower, "0.00"),
    ];
}

internal enum Better { None, Higher, Lower }

/// <summary>One figure; <paramref name="LimitKey"/> names the guest-loopback figure it is compared with, if any.</summary>
internal sealed record Metric(string Key, string Title, string Unit, Better Better, string Format, string? LimitKey = null);
