using Emunet.Engine.Control;
using Microsoft.Extensions.Logging.Abstractions;

namespace Emunet.Tool.Tests;

[Collection(RuntimeDirCollection.Name)]
public sealed class RuntimeDirectoryTests
{
    [Theory]
    [InlineData("default", true)]
    [InlineData("pixel-7_a.1", true)]
    [InlineData("", false)]
    [InlineData(".hidden", false)]
    [InlineData("-opt", false)]
    [InlineData("a/b", false)]
    [InlineData("../x", false)]
    [InlineData("sp ace", false)]
    [InlineData("ünï", false)]
    public void Names_are_plain_file_names(string name, bool valid) => Assert.Equal(valid, RuntimeDirectory.IsValidName(name));

    [Fact]
    public void A_name_longer_than_the_limit_is_refused()
    {
        Assert.True(RuntimeDirectory.IsValidName(new string('a', RuntimeDirectory.MaxNameLength)));
        Assert.False(RuntimeDirectory.IsValidName(new string('a', RuntimeDirectory.MaxNameLength + 1)));
    }

    [Fact]
    public void The_override_wins_and_the_folder_is_made_private()
    {
        using var scope = new RuntimeDirScope();
        Assert.Equal(scope.Path, RuntimeDirectory.GetPath());
        Assert.False(Directory.Exists(scope.Path));
        RuntimeDirectory.Ensure();
        Assert.Equal(UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.UserExecute, File.GetUnixFileMode(scope.Path));
        Assert.Equal(Path.Combine(scope.Path, "x.sock"), RuntimeDirectory.SocketPathFor("x"));
        Assert.Equal(Path.Combine(scope.Path, "net", "x.sock"), RuntimeDirectory.DeviceSocketPathFor("x"));
    }

    [Fact]
    public void Xdg_runtime_dir_is_used_when_there_is_no_override()
    {
        string? savedOverride = Environment.GetEnvironmentVariable(RuntimeDirectory.OverrideVariable);
        string? savedXdg = Environment.GetEnvironmentVariable("XDG_RUNTIME_DIR");
        using var folder = new TempFolder();
        try
        {
            Environment.SetEnvironmentVariable(RuntimeDirectory.OverrideVariable, null);
            Environment.SetEnvironmentVariable("XDG_RUNTIME_DIR", folder.Path);
            Assert.Equal(Path.Combine(folder.Path, "emunet"), RuntimeDirectory.GetPath());
            Environment.SetEnvironmentVariable("XDG_RUNTIME_DIR", null);
            Assert.Equal(Path.Combine(Environment.GetFolderPath(Environment.SpecialFolder.UserProfile), ".emunet", "run"), RuntimeDirectory.GetPath());
        }
        finally
        {
            Environment.SetEnvironmentVariable(RuntimeDirectory.OverrideVariable, savedOverride);
            Environment.SetEnvironmentVariable("XDG_RUNTIME_DIR", savedXdg);
        }
    }

    [Fact]
    public void A_socket_path_over_the_unix_limit_is_refused_with_the_fix()
    {
        string? saved = Environment.GetEnvironmentVariable(RuntimeDirectory.OverrideVariable);
        try
        {
            Environment.SetEnvironmentVariable(RuntimeDirectory.OverrideVariable, "/tmp/" + new string('d', 100));
            var e = Assert.Throws<ArgumentException>(() => RuntimeDirectory.SocketPathFor("name"));
            Assert.Contains(RuntimeDirectory.OverrideVariable, e.Message);
        }
        finally { Environment.SetEnvironmentVariable(RuntimeDirectory.OverrideVariable, saved); }
    }

    [Fact]
    public async Task Instances_are_resolved_by_name_or_when_only_one_runs()
    {
        using var scope = new RuntimeDirScope();
        var none = Assert.Throws<ControlException>(() => RuntimeDirectory.ResolveInstance(null));
        Assert.Equal(ControlErrorCodes.NoInstance, none.Code);

        RuntimeDirectory.Ensure();
        await using var a = new ControlServer(new FakeEngine(), RuntimeDirectory.SocketPathFor("alpha"), NullLogger.Instance);
        a.Start();
        Assert.Equal("alpha", RuntimeDirectory.ResolveInstance(null));
        Assert.Equal("alpha", RuntimeDirectory.ResolveInstance("alpha"));

        await using var b = new ControlServer(new FakeEngine(), RuntimeDirectory.SocketPathFor("beta"), NullLogger.Instance);
        b.Start();
        var ambiguous = Assert.Throws<ControlException>(() => RuntimeDirectory.ResolveInstance(null));
        Assert.Equal(ControlErrorCodes.AmbiguousInstance, ambiguous.Code);
        Assert.Contains("alpha, beta", ambiguous.Message);
        Assert.Equal("beta", RuntimeDirectory.ResolveInstance("beta"));

        var missing = Assert.Throws<ControlException>(() => RuntimeDirectory.ResolveInstance("gamma"));
        Assert.Equal(ControlErrorCodes.InstanceNotFound, missing.Code);
        Assert.Contains("alpha, beta", missing.Message);
        Assert.Equal(ControlErrorCodes.InstanceNotFound, Assert.Throws<ControlException>(() => RuntimeDirectory.ResolveInstance("../x")).Code);
    }

    [Fact]
    public async Task Listing_removes_sockets_nobody_answers_on_and_ignores_device_sockets()
    {
        using var scope = new RuntimeDirScope();
        RuntimeDirectory.Ensure();
        await using var live = new ControlServer(new FakeEngine(), RuntimeDirectory.SocketPathFor("live"), NullLogger.Instance);
        live.Start();
        string stale = RuntimeDirectory.SocketPathFor("dead");
        File.WriteAllText(stale, "");
        await using var device = new ControlServer(new FakeEngine(), RuntimeDirectory.DeviceSocketPathFor("live"), NullLogger.Instance);
        device.Start();

        Assert.Equal(["live"], RuntimeDirectory.ListInstances(removeStale: false));
        Assert.True(File.Exists(stale));
        Assert.Equal(["live"], RuntimeDirectory.ListInstances());
        Assert.False(File.Exists(stale));
        Assert.True(File.Exists(RuntimeDirectory.DeviceSocketPathFor("live")));
    }
}
