using System.CommandLine;

namespace Emunet.Tool;

/// <summary>
/// <c>emunet completion bash|zsh|pwsh</c>: a script that completes emunet's commands, options and values in that shell.
/// Each script asks the tool itself through System.CommandLine's suggest directive
/// (<c>emunet "[suggest:POSITION]" "COMMAND LINE"</c>), so completion always matches the installed version.
/// </summary>
internal static partial class EmunetCli
{
    internal const string BashCompletion = """
        # emunet completion for bash. Add to ~/.bashrc:  eval "$(emunet completion bash)"
        _emunet_complete() {
            local IFS=$'\n'
            local line="${COMP_LINE:0:COMP_POINT}"
            line="${line#"${COMP_WORDS[0]}"}"
            line="${line#"${line%%[! ]*}"}"
            COMPREPLY=( $(compgen -W "$("${COMP_WORDS[0]}" "[suggest:${#line}]" "$line" 2>/dev/null)" -- "${COMP_WORDS[COMP_CWORD]}") )
        }
        complete -o default -F _emunet_complete emunet

        """;

    internal const string ZshCompletion = """
        # emunet completion for zsh. Add to ~/.zshrc (after compinit):  eval "$(emunet completion zsh)"
        _emunet_complete() {
            local line="${BUFFER[1,CURSOR]}"
            line="${line#${words[1]}}"
            line="${line## }"
            local -a suggestions
            suggestions=("${(@f)$(${words[1]} "[suggest:${#line}]" "$line" 2>/dev/null)}")
            compadd -- "${suggestions[@]}"
        }
        compdef _emunet_complete emunet

        """;

    internal const string PwshCompletion = """
        # emunet completion for PowerShell. Add to $PROFILE:  emunet completion pwsh | Out-String | Invoke-Expression
        Register-ArgumentCompleter -Native -CommandName emunet -ScriptBlock {
            param($wordToComplete, $commandAst, $cursorPosition)
            $line = $commandAst.ToString()
            if ($line.Length -gt $cursorPosition - $commandAst.Extent.StartOffset) { $line = $line.Substring(0, $cursorPosition - $commandAst.Extent.StartOffset) }
            $exe = $commandAst.CommandElements[0].ToString()
            $line = $line.Substring($exe.Length).TrimStart()
            if ($wordToComplete -eq '' -and -not $line.EndsWith(' ') -and $line -ne '') { $line += ' ' }
            & $exe "[suggest:$($line.Length)]" $line 2>$null | Where-Object { $_ -like "$wordToComplete*" } | ForEach-Object {
                [System.Management.Automation.CompletionResult]::new($_, $_, 'ParameterValue', $_)
            }
        }

        """;

    private static readonly Argument<string> ShellArgument = new("shell")
    {
        Description = "bash, zsh or pwsh.",
    };

    private static Command BuildCompletionCommand()
    {
        ShellArgument.AcceptOnlyFromAmong("bash", "zsh", "pwsh");
        var command = new Command("completion",
            "Print a shell completion script: eval \"$(emunet completion bash)\" in ~/.bashrc, eval \"$(emunet completion zsh)\" in ~/.zshrc, emunet completion pwsh | Out-String | Invoke-Expression in $PROFILE.")
        {
            ShellArgument,
        };
        command.SetAction(r =>
        {
            r.InvocationConfiguration.Output.Write(r.GetValue(ShellArgument) switch
            {
                "bash" => BashCompletion,
                "zsh" => ZshCompletion,
                _ => PwshCompletion,
            });
            return 0;
        });
        return command;
    }
}
