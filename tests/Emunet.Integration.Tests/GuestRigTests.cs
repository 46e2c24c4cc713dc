using System.Security.Cryptography;
using Emunet.GuestRig;

namespace Emunet.Integration.Tests;

/// <summary>The guest rig itself, on QEMU's built-in user networking: proves boot, DHCP, script, output and exit status.</summary>
public sealed class GuestRigTests
{
    [Fact]
    public async Task Guest_on_qemu_user_network_fetches_a_file_from_host_loopback_with_matching_sha256()
    {
        var body = RandomNumberGenerator.GetBytes(1 << 20);
        string sha = Convert.ToHexStringLower(SHA256.HashData(body));
        using var http = new LoopbackHttpServer();
        http.Serve("/blob", body);

        var result = await QemuGuest.RunAsync(new GuestOptions
        {
            NetworkArgs = GuestNetwork.User(),
            Script = $$"""
                set -e
                . /run/lease.env
                echo "lease ip=$ip router=$router"
                got=$(wget -q -O - http://10.0.2.2:{{http.Port}}/blob | sha256sum | cut -d' ' -f1)
                echo "sha=$got"
                [ "$got" = "{{sha}}" ]
                """,
        });

        Assert.True(result.ExitCode == 0, result.ToString());
        Assert.Contains("lease ip=10.0.2.15 router=10.0.2.2", result.Output);
        Assert.Contains($"sha={sha}", result.Output);
    }

    [Fact]
    public async Task Guest_script_exit_status_and_output_reach_the_host()
    {
        var result = await QemuGuest.RunAsync(new GuestOptions
        {
            NetworkArgs = GuestNetwork.User(),
            Dhcp = false,
            Script = "echo first line; echo second line >&2; exit 7",
        });
        Assert.Equal(7, result.ExitCode);
        Assert.Equal(["first line", "second line"], result.Output.Split('\n'));
    }
}
