using System.Buffers.Binary;
using System.Diagnostics;
using System.Net.Sockets;
using System.Text.Json;
using Emunet.Engine.Control;

namespace Emunet.Tool.Tests;

/// <summary>
/// The native engine (build/native/emunet, NativeAOT, made by scripts/publish-native.sh from scripts/setup.sh): the
/// trimmed executable runs an instance, serves its own CLI over the control socket (the JSON replies go through
/// trimmed serializers), answers a frame on its stream link and stops cleanly. The benchmark's smoke run drives a real
/// guest through the same executable.
/// </summary>
public sealed class NativeEngineTests
{
    private static string NativeEngine()
    {
        string path = Path.Combine(PackageTests.RepoRoot(), "build", "native", "emunet");
        Assert.True(File.Exists(path), $"{path} is not built: bash scripts/publish-native.sh (scripts/setup.sh runs it)");
        return path;
    }

    private static (int Code, string Out) Cli(string engine, string run, params string[] args)
    {
        var psi = new ProcessStartInfo(engine) { RedirectStandardOutput = true, RedirectStandardError = true };
        foreach (string a in args) psi.ArgumentList.Add(a);
        psi.Environment[RuntimeDirectory.OverrideVariable] = run;
        using var p = Process.Start(psi)!;
        var stderr = p.StandardError.ReadToEndAsync();
        string stdout = p.StandardOutput.ReadToEnd();
        Assert.True(p.WaitForExit(30_000), $"emunet {string.Join(' ', args)} did not finish");
        return (p.ExitCode, stdout + stderr.Result);
    }

    /// <summary>An ARP request from the guest (10.0.2.15) for the gateway 10.0.2.2, in the stream link's framing.</summary>
    private static byte[] FramedArpRequest(byte[] guestMac)
    {
        var frame = new byte[42];
        frame.AsSpan(0, 6).Fill(0xff);
        guestMac.CopyTo(frame, 6);
        BinaryPrimitives.WriteUInt16BigEndian(frame.AsSpan(12), 0x0806);
        BinaryPrimitives.WriteUInt16BigEndian(frame.AsSpan(14), 1);      // Ethernet
        BinaryPrimitives.WriteUInt16BigEndian(frame.AsSpan(16), 0x0800); // IPv4
        frame[18] = 6;
        frame[19] = 4;
        BinaryPrimitives.WriteUInt16BigEndian(frame.AsSpan(20), 1);      // request
        guestMac.CopyTo(frame, 22);
        new byte[] { 10, 0, 2, 15 }.CopyTo(frame, 28);
        new byte[] { 10, 0, 2, 2 }.CopyTo(frame, 38);
        var framed = new byte[4 + frame.Length];
        BinaryPrimitives.WriteUInt32BigEndian(framed, (uint)frame.Length);
        frame.CopyTo(framed, 4);
        return framed;
    }

    private static byte[] ReadFrame(Socket s)
    {
        var header = new byte[4];
        ReadExactly(s, header);
        var frame = new byte[BinaryPrimitives.ReadUInt32BigEndian(header)];
        ReadExactly(s, frame);
        return frame;
    }

    private static void ReadExactly(Socket s, byte[] buf)
    {
        for (int got = 0; got < buf.Length;)
        {
            int n = s.Receive(buf, got, buf.Length - got, SocketFlags.None);
            if (n == 0) throw new EndOfStreamException("the engine closed the stream link");
            got += n;
        }
    }

    [Fact]
    public async Task Native_engine_runs_serves_its_cli_answers_on_its_link_and_stops()
    {
        string engine = NativeEngine();
        using var tmp = new TempFolder();
        string run = tmp.File("run"), device = tmp.File("dev.sock"), control = Path.Combine(run, "native.sock");
        var psi = new ProcessStartInfo(engine) { RedirectStandardError = true, RedirectStandardOutput = true };
        foreach (string a in new[] { "run", "--name", "native", "--socket", device, "--forward", "tcp:0:80" }) psi.ArgumentList.Add(a);
        psi.Environment[RuntimeDirectory.OverrideVariable] = run;
        using var p = Process.Start(psi)!;
        var stderr = p.StandardError.ReadToEndAsync();
        try
        {
            Wait.Until(() => p.HasExited || File.Exists(device) && RuntimeDirectory.IsLive(control), "the native engine's sockets", TimeSpan.FromSeconds(20));
            if (p.HasExited) Assert.Fail("the native engine exited early: " + await stderr);

            var version = Cli(engine, run, "--version");
            Assert.Equal(0, version.Code);
            Assert.Equal("0.1.0", version.Out.Trim());

            var add = Cli(engine, run, "forward", "add", "tcp:0:81", "--instance", "native");
            Assert.True(add.Code == 0, add.Out);
            var list = Cli(engine, run, "forward", "list", "--instance", "native", "--json");
            Assert.True(list.Code == 0, list.Out);
            using (var doc = JsonDocument.Parse(list.Out))
            {
                var guestPorts = doc.RootElement.EnumerateArray().Select(f => f.GetProperty("guestPort").GetInt32()).Order().ToArray();
                Assert.Equal([80, 81], guestPorts);
                Assert.All(doc.RootElement.EnumerateArray(), f => Assert.Equal("127.0.0.1", f.GetProperty("address").GetString()));
            }

            // The stream link: an ARP request for the gateway is answered with the gateway's address.
            var mac = new byte[] { 0x52, 0x54, 0x00, 0x12, 0x34, 0x56 };
            using (var link = new Socket(AddressFamily.Unix, SocketType.Stream, ProtocolType.Unspecified) { ReceiveTimeout = 10_000 })
            {
                link.Connect(new UnixDomainSocketEndPoint(device));
                link.Send(FramedArpRequest(mac));
                byte[] reply;
                do reply = ReadFrame(link); // the engine may greet the guest first (e.g. a router advertisement)
                while (BinaryPrimitives.ReadUInt16BigEndian(reply.AsSpan(12)) != 0x0806);
                Assert.Equal(mac, reply[..6]);
                Assert.Equal(2, BinaryPrimitives.ReadUInt16BigEndian(reply.AsSpan(20))); // reply
                Assert.Equal(new byte[] { 10, 0, 2, 2 }, reply[28..32]);
                Assert.Equal(new byte[] { 10, 0, 2, 15 }, reply[38..42]);

                var stats = Cli(engine, run, "stats", "--instance", "native", "--json");
                Assert.True(stats.Code == 0, stats.Out);
                using var doc = JsonDocument.Parse(stats.Out);
                Assert.Equal(2, doc.RootElement.GetProperty("forwards").GetInt32());
                Assert.True(doc.RootElement.GetProperty("framesFromGuest").GetInt64() >= 1, stats.Out);
            }

            var stop = Cli(engine, run, "stop", "--instance", "native");
            Assert.True(stop.Code == 0, stop.Out);
            Assert.True(p.WaitForExit(15_000), "the native engine did not stop");
            Assert.True(p.ExitCode == 0, await stderr);
            Assert.False(File.Exists(control));
            Assert.False(File.Exists(device));
        }
        finally
        {
            if (!p.HasExited) p.Kill(entireProcessTree: true);
        }
    }
}
