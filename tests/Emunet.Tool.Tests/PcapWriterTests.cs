using System.Buffers.Binary;
using System.Diagnostics;
using Emunet.Engine.Capture;

namespace Emunet.Tool.Tests;

public sealed class PcapWriterTests
{
    private static readonly long T0 = new DateTime(2024, 5, 6, 7, 8, 9, DateTimeKind.Utc).AddTicks(1234560).Ticks;

    /// <summary>An Ethernet + IPv4 + UDP frame from 10.0.2.15:5000 to 10.0.2.3:53 carrying <paramref name="payload"/> bytes.</summary>
    private static byte[] UdpFrame(int payload)
    {
        var f = new byte[14 + 20 + 8 + payload];
        byte[] dst = [0x52, 0x55, 0x0a, 0x00, 0x02, 0x02], src = [0x52, 0x54, 0x00, 0x12, 0x34, 0x56];
        dst.CopyTo(f, 0); src.CopyTo(f, 6);
        f[12] = 0x08; f[13] = 0x00;
        var ip = f.AsSpan(14, 20);
        ip[0] = 0x45; BinaryPrimitives.WriteUInt16BigEndian(ip[2..], (ushort)(20 + 8 + payload));
        ip[8] = 64; ip[9] = 17;
        byte[] s = [10, 0, 2, 15], d = [10, 0, 2, 3];
        s.CopyTo(f, 26); d.CopyTo(f, 30);
        uint sum = 0;
        for (int i = 0; i < 20; i += 2) sum += BinaryPrimitives.ReadUInt16BigEndian(ip[i..]);
        while (sum > 0xffff) sum = (sum & 0xffff) + (sum >> 16);
        BinaryPrimitives.WriteUInt16BigEndian(ip[10..], (ushort)~sum);
        var udp = f.AsSpan(34, 8);
        BinaryPrimitives.WriteUInt16BigEndian(udp, 5000);
        BinaryPrimitives.WriteUInt16BigEndian(udp[2..], 53);
        BinaryPrimitives.WriteUInt16BigEndian(udp[4..], (ushort)(8 + payload));
        for (int i = 0; i < payload; i++) f[42 + i] = (byte)i;
        return f;
    }

    [Fact]
    public void Writes_the_classic_header_and_records()
    {
        var ms = new MemoryStream();
        using (var w = new PcapWriter(ms, leaveOpen: true))
        {
            w.Write(UdpFrame(10), T0);
            w.Write(UdpFrame(0), T0 + TimeSpan.TicksPerSecond);
            Assert.Equal(2, w.FramesWritten);
        }
        byte[] b = ms.ToArray();
        Assert.Equal(24 + 16 + 52 + 16 + 42, b.Length);
        Assert.Equal(0xa1b2c3d4u, BinaryPrimitives.ReadUInt32LittleEndian(b));
        Assert.Equal(2, BinaryPrimitives.ReadUInt16LittleEndian(b.AsSpan(4)));
        Assert.Equal(4, BinaryPrimitives.ReadUInt16LittleEndian(b.AsSpan(6)));
        Assert.Equal(PcapWriter.SnapLength, BinaryPrimitives.ReadInt32LittleEndian(b.AsSpan(16)));
        Assert.Equal(1, BinaryPrimitives.ReadInt32LittleEndian(b.AsSpan(20)));
        uint seconds = (uint)((T0 - DateTime.UnixEpoch.Ticks) / TimeSpan.TicksPerSecond);
        Assert.Equal(seconds, BinaryPrimitives.ReadUInt32LittleEndian(b.AsSpan(24)));
        Assert.Equal(123456u, BinaryPrimitives.ReadUInt32LittleEndian(b.AsSpan(28)));
        Assert.Equal(52, BinaryPrimitives.ReadInt32LittleEndian(b.AsSpan(32)));
        Assert.Equal(52, BinaryPrimitives.ReadInt32LittleEndian(b.AsSpan(36)));
        Assert.Equal(UdpFrame(10), b.AsSpan(40, 52).ToArray());
        Assert.Equal(seconds + 1, BinaryPrimitives.ReadUInt32LittleEndian(b.AsSpan(92)));
    }

    [Fact]
    public void Buffers_until_flushed()
    {
        var ms = new MemoryStream();
        using var w = new PcapWriter(ms, leaveOpen: true);
        w.Write(UdpFrame(100), T0);
        Assert.Equal(0, ms.Length);
        w.Flush();
        Assert.Equal(24 + 16 + 142, ms.Length);
    }

    [Fact]
    public void Frames_across_many_buffer_fills_all_arrive_in_order()
    {
        var ms = new MemoryStream();
        int frames = 3 * PcapWriter.BufferSize / 1000;
        using (var w = new PcapWriter(ms, leaveOpen: true))
            for (int i = 0; i < frames; i++) w.Write(UdpFrame(958 + i % 7), T0 + i);
        byte[] b = ms.ToArray();
        int offset = 24;
        for (int i = 0; i < frames; i++)
        {
            int len = BinaryPrimitives.ReadInt32LittleEndian(b.AsSpan(offset + 8));
            Assert.Equal(1000 + i % 7, len);
            Assert.Equal(UdpFrame(958 + i % 7), b.AsSpan(offset + 16, len).ToArray());
            offset += 16 + len;
        }
        Assert.Equal(b.Length, offset);
    }

    [Fact]
    public void A_frame_longer_than_the_buffer_is_written_whole()
    {
        var ms = new MemoryStream();
        // Longer than the buffer can hold with its record header, within the snap length.
        var big = new byte[PcapWriter.BufferSize - 8];
        Assert.True(big.Length <= PcapWriter.SnapLength);
        big[^1] = 0x77;
        using (var w = new PcapWriter(ms, leaveOpen: true))
        {
            w.Write(UdpFrame(1), T0);
            w.Write(big, T0);
            w.Write(UdpFrame(2), T0);
        }
        byte[] b = ms.ToArray();
        int second = 24 + 16 + 43;
        Assert.Equal(big.Length, BinaryPrimitives.ReadInt32LittleEndian(b.AsSpan(second + 8)));
        Assert.Equal(0x77, b[second + 16 + big.Length - 1]);
        Assert.Equal(UdpFrame(2), b.AsSpan(second + 16 + big.Length + 16).ToArray());
    }

    [Fact]
    public void Frames_over_the_snap_length_are_cut_and_keep_their_length()
    {
        var ms = new MemoryStream();
        using (var w = new PcapWriter(ms, leaveOpen: true)) w.Write(new byte[PcapWriter.SnapLength + 100], T0);
        byte[] b = ms.ToArray();
        Assert.Equal(PcapWriter.SnapLength, BinaryPrimitives.ReadInt32LittleEndian(b.AsSpan(32)));
        Assert.Equal(PcapWriter.SnapLength + 100, BinaryPrimitives.ReadInt32LittleEndian(b.AsSpan(36)));
        Assert.Equal(24 + 16 + PcapWriter.SnapLength, b.Length);
    }

    [Fact]
    public void Writing_after_dispose_throws()
    {
        var w = new PcapWriter(new MemoryStream());
        w.Dispose();
        Assert.Throws<ObjectDisposedException>(() => w.Write(UdpFrame(1), T0));
    }

    [Fact]
    public void Tshark_reads_the_capture_back()
    {
        using var folder = new TempFolder();
        string path = folder.File("c.pcap");
        using (var w = new PcapWriter(path))
        {
            Assert.Equal(path, w.FilePath);
            for (int i = 0; i < 5; i++) w.Write(UdpFrame(20 + i), T0 + i * TimeSpan.TicksPerMillisecond);
        }
        var psi = new ProcessStartInfo("tshark")
        {
            ArgumentList = { "-r", path, "-T", "fields", "-E", "separator=,", "-e", "frame.len", "-e", "eth.src", "-e", "ip.src", "-e", "ip.dst", "-e", "udp.dstport", "-e", "frame.time_epoch" },
            RedirectStandardOutput = true,
            RedirectStandardError = true,
        };
        using var p = Process.Start(psi)!;
        string output = p.StandardOutput.ReadToEnd();
        string error = p.StandardError.ReadToEnd();
        Assert.True(p.WaitForExit(30_000), "tshark did not finish");
        Assert.True(p.ExitCode == 0, $"tshark failed: {error}");
        var lines = output.Split('\n', StringSplitOptions.RemoveEmptyEntries);
        Assert.Equal(5, lines.Length);
        for (int i = 0; i < 5; i++)
        {
            var fields = lines[i].Split(',');
            Assert.Equal((62 + i).ToString(), fields[0]);
            Assert.Equal("52:54:00:12:34:56", fields[1]);
            Assert.Equal("10.0.2.15", fields[2]);
            Assert.Equal("10.0.2.3", fields[3]);
            Assert.Equal("53", fields[4]);
            double expected = (T0 + i * TimeSpan.TicksPerMillisecond - DateTime.UnixEpoch.Ticks) / (double)TimeSpan.TicksPerSecond;
            Assert.Equal(expected, double.Parse(fields[5], System.Globalization.CultureInfo.InvariantCulture), 5);
        }
    }
}

public sealed class CaptureTapTests
{
    [Fact]
    public void Records_only_while_running_and_restarts_into_a_new_file()
    {
        using var folder = new TempFolder();
        using var tap = new CaptureTap();
        byte[] frame = new byte[60];
        tap.OnFrame(frame, toGuest: true);
        Assert.False(tap.IsRunning);
        Assert.Null(tap.Stop());

        tap.Start(folder.File("a.pcap"));
        tap.OnFrame(frame, toGuest: true);
        tap.OnFrame(frame, toGuest: false);
        Assert.Equal(2, tap.FramesWritten);
        tap.Start(folder.File("b.pcap"));
        tap.OnFrame(frame, toGuest: true);
        Assert.Equal(folder.File("b.pcap"), tap.Stop());
        tap.OnFrame(frame, toGuest: true);

        Assert.Equal(24 + 2 * (16 + 60), new FileInfo(folder.File("a.pcap")).Length);
        Assert.Equal(24 + 16 + 60, new FileInfo(folder.File("b.pcap")).Length);
    }

    [Fact]
    public void A_file_that_cannot_be_created_leaves_the_running_capture_alone()
    {
        using var folder = new TempFolder();
        using var tap = new CaptureTap();
        tap.Start(folder.File("a.pcap"));
        Assert.ThrowsAny<IOException>(() => tap.Start(folder.File("missing/b.pcap")));
        Assert.Equal(folder.File("a.pcap"), tap.FilePath);
    }
}
