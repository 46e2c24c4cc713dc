using System.Diagnostics;

namespace Emunet.Tool.Tests;

/// <summary>The suggest directive in-process, and the completion scripts run by real bash and PowerShell.</summary>
public sealed class CompletionTests : IDisposable
{
    private readonly TempFolder _tmp = new();

    public CompletionTests()
    {
        // `emunet` on PATH: this build of the tool.
        File.WriteAllText(_tmp.File("emunet"), $"#!/bin/sh\nexec dotnet '{typeof(EmunetCli).Assembly.Location}' \"$@\"\n");
        File.SetUnixFileMode(_tmp.File("emunet"), UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.UserExecute);
    }

    public void Dispose() => _tmp.Dispose();

    [Theory]
    [InlineData("for", "forward")]
    [InlineData("forward r", "remove")]
    [InlineData("connections --protocol ", "icmp")]
    [InlineData("completion ", "zsh")]
    public async Task The_suggest_directive_completes_commands_options_and_values(string line, string expected)
    {
        var (code, output, err) = await ToolCommandTests.Cli($"[suggest:{line.Length}]", line);
        Assert.True(code == 0, err);
        Assert.Contains(expected, output.Split('\n', StringSplitOptions.TrimEntries));
    }

    private (int Code, string Out) Shell(string file, params string[] args)
    {
        var psi = new ProcessStartInfo(file) { RedirectStandardOutput = true, RedirectStandardError = true, WorkingDirectory = PackageTests.RepoRoot() };
        foreach (string a in args) psi.ArgumentList.Add(a);
        psi.Environment["PATH"] = _tmp.Path + ":" + Environment.GetEnvironmentVariable("PATH");
        using var p = Process.Start(psi)!;
        var err = p.StandardError.ReadToEndAsync();
        string output = p.StandardOutput.ReadToEnd();
        if (!p.WaitForExit(60_000)) { p.Kill(true); Assert.Fail($"{file} did not finish within 60 s"); }
        return (p.ExitCode, output + err.Result);
    }

    [Fact]
    public void Bash_completes_through_the_script()
    {
        var (code, output) = Shell("bash", "-c", """
            eval "$(emunet completion bash)"
            COMP_LINE="emunet forward re"; COMP_POINT=${#COMP_LINE}; COMP_WORDS=(emunet forward re); COMP_CWORD=2
            _emunet_complete; echo "1:${COMPREPLY[*]}"
            COMP_LINE="emunet connections --protocol "; COMP_POINT=${#COMP_LINE}; COMP_WORDS=(emunet connections --protocol ""); COMP_CWORD=3
            _emunet_complete; echo "2:${COMPREPLY[*]}"
            """);
        Assert.True(code == 0, output);
        Assert.Contains("1:remove\n", output);
        Assert.Contains("2:icmp tcp udp\n", output);
    }

    [Fact]
    public void PowerShell_completes_through_the_script()
    {
        var (code, output) = Shell("dotnet", "tool", "run", "pwsh", "-NoProfile", "-NonInteractive", "-Command", """
            emunet completion pwsh | Out-String | Invoke-Expression
            foreach ($l in 'emunet forward re', 'emunet connections --protocol ', 'emunet cap') {
                'completes:' + ((TabExpansion2 -inputScript $l -cursorColumn $l.Length).CompletionMatches.CompletionText -join ',')
            }
            """);
        Assert.True(code == 0, output);
        Assert.Contains("completes:remove\n", output);
        Assert.Contains("completes:icmp,tcp,udp\n", output);
        Assert.Contains("completes:capture\n", output);
    }

    [Fact]
    public async Task The_zsh_script_registers_a_completer_that_asks_the_tool()
    {
        var (code, output, _) = await ToolCommandTests.Cli("completion", "zsh");
        Assert.Equal(0, code);
        Assert.Contains("compdef _emunet_complete emunet", output);
        Assert.Contains("\"[suggest:${#line}]\"", output);
        Assert.Equal((int)ExitCode.UsageError, (await ToolCommandTests.Cli("completion", "fish")).Code);
    }
}
