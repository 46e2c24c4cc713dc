using System.Text;
using Emunet.GuestRig;

// The main job: boot the test guest and show it reaching a page served on the host's loopback through 10.0.2.2.
var page = Encoding.UTF8.GetBytes("<h1>Hello from the host</h1>\n");
using var http = new LoopbackHttpServer();
http.Serve("/", page);
Console.WriteLine($"host: serving a page on http://127.0.0.1:{http.Port}/");
Console.WriteLine("host: booting the test guest (QEMU, TCG) on QEMU's user network...");
var result = await QemuGuest.RunAsync(new GuestOptions
{
    NetworkArgs = GuestNetwork.User(),
    Script = $"""
        . /run/lease.env
        echo "guest: DHCP lease $ip via $router, DNS $dns"
        echo "guest: GET http://10.0.2.2:{http.Port}/"
        wget -q -O - http://10.0.2.2:{http.Port}/
        """,
});
foreach (var line in result.Output.Split('\n')) Console.WriteLine(line);
Console.WriteLine(result.ExitCode == 0 ? "demo: the guest reached the host page." : $"demo: the guest failed (exit {result.ExitCode}).");
return result.ExitCode == 0 ? 0 : 1;
