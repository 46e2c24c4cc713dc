using System.Diagnostics;
using System.Text;
using Emunet.GuestRig;

// The main job, as a user does it: an engine started from PowerShell (Start-EmuNet), a real Linux guest attached to
// it (QEMU -netdev stream), a server inside the guest, `New-EmuForward -Port 10977` opening a host port straight into
// the guest (client → Emunet → app, no adb), a host client talking to it, and `Get-EmuConnection | Format-Table`
// showing the whole path. The guest also reaches a page on the host through 10.0.2.2.
int port = args.Length > 0 && int.TryParse(args[0], out int p) ? p : 10977;
string module = Path.Combine(RepoPaths.Build, "module", "Emunet", "Emunet.psd1");
if (!File.Exists(module)) return Fail($"The module is not laid out at {module}; run scripts/build-module.sh (demo.sh does).");
string name = $"demo{Environment.ProcessId}";
string sock = Path.Combine(Directory.CreateTempSubdirectory("emunet-demo-").FullName, "guest.sock");

using var http = new LoopbackHttpServer();
http.Serve("/", Encoding.UTF8.GetBytes("<h1>Hello from the host</h1>\n"));

Step($"Start-EmuNet -Name {name} -Socket {sock}");
if (Pwsh($"Start-EmuNet -Name {name} -Socket '{sock}' | Format-List Name, ProcessId, Device, ControlSocket") != 0)
    return Fail("Start-EmuNet failed.");
try
{
    using var control = new GuestControl();
    Step("booting the test guest (QEMU, TCG) on Emunet: -netdev stream,addr.path=" + sock);
    using var guest = QemuGuest.Start(new GuestOptions
    {
        NetworkArgs = GuestNetwork.StreamUnix(sock),
        Script = $"""
            . /run/lease.env
            echo "guest: DHCP lease $ip via $router, DNS $dns, MTU $mtu"
            echo "guest: GET http://10.0.2.2:{http.Port}/ (the host's loopback)"
            wget -q -O - http://10.0.2.2:{http.Port}/
            mkdir -p /www && echo "Hello from the app inside the guest" > /www/index.html
            httpd -p {port} -h /www
            while ! netstat -ltn | grep -q ':{port} '; do usleep 50000; done
            echo "guest: app listening on port {port}"
            {control.WaitLine}
            """,
    });
    await guest.WaitForLineAsync(l => l.Contains("app listening"), TimeSpan.FromMinutes(2));
    foreach (var line in guest.Lines) Console.WriteLine("  " + line);

    Step($"New-EmuForward -Port {port}; a host client talks to the app; Get-EmuConnection | Format-Table");
    int rc = Pwsh($$"""
        New-EmuForward -Port {{port}} -Instance {{name}} | Format-Table | Out-String -Width 160
        $held = [System.Net.Sockets.TcpClient]::new('127.0.0.1', {{port}})   # one connection kept open to show it
        $page = Invoke-WebRequest -Uri http://127.0.0.1:{{port}}/ -UseBasicParsing
        "host client got: $($page.Content.Trim())"
        $deadline = [DateTime]::UtcNow.AddSeconds(20)
        while (-not (Get-EmuConnection -Instance {{name}} -Port {{port}} -State Established) -and [DateTime]::UtcNow -lt $deadline) { Start-Sleep -Milliseconds 50 }
        Get-EmuConnection -Instance {{name}} | Format-Table | Out-String -Width 160
        $held.Dispose()
        if ($page.Content -notmatch 'inside the guest') { exit 1 }
        """);
    await control.SendAsync("done", TimeSpan.FromSeconds(30));
    var result = await guest.WaitForExitAsync();
    if (rc != 0 || result.ExitCode != 0) return Fail($"the forward did not work (pwsh {rc}, guest {result.ExitCode}).");
}
finally
{
    Step($"Stop-EmuNet {name}");
    Pwsh($"Stop-EmuNet -Name {name} -Confirm:$false");
}
Console.WriteLine("demo: done — the guest reached the host, and a host client reached the app in the guest through Emunet.");
return 0;

int Pwsh(string script)
{
    var psi = new ProcessStartInfo("dotnet") { WorkingDirectory = RepoPaths.Root };
    foreach (var a in new[] { "tool", "run", "pwsh", "-NoProfile", "-NonInteractive", "-Command",
                 $"$ErrorActionPreference = 'Stop'; if ([Console]::IsOutputRedirected) {{ $PSStyle.OutputRendering = 'PlainText' }}; Import-Module '{module}'; {script}" })
        psi.ArgumentList.Add(a);
    using var proc = Process.Start(psi)!;
    proc.WaitForExit();
    return proc.ExitCode;
}

static void Step(string what)
{
    Console.WriteLine();
    Console.WriteLine("==> " + what);
}

static int Fail(string why)
{
    Console.Error.WriteLine("demo: " + why);
    return 1;
}
