Describe 'Emunet module' -Tag CI {
    BeforeAll { . (Join-Path $PSScriptRoot 'Common.ps1') }
    AfterAll { Remove-TestRunDir }

    It 'exports exactly its cmdlets' {
        (Get-Command -Module Emunet).Name | Sort-Object | Should -Be @(
            'Get-EmuConnection', 'Get-EmuForward', 'Get-EmuNet', 'Get-EmuReverse', 'Get-EmuStat', 'New-EmuForward', 'New-EmuReverse',
            'Remove-EmuForward', 'Remove-EmuReverse', 'Start-EmuCapture', 'Start-EmuNet', 'Stop-EmuCapture', 'Stop-EmuNet')
    }

    It 'uses approved verbs' {
        $approved = (Get-Verb).Verb
        foreach ($c in Get-Command -Module Emunet) { $approved | Should -Contain $c.Verb }
    }

    It 'has help with examples and described parameters for <_>' -ForEach @(
        'Start-EmuNet', 'Stop-EmuNet', 'Get-EmuNet', 'New-EmuForward', 'Get-EmuForward', 'Remove-EmuForward', 'Get-EmuConnection',
        'Get-EmuStat', 'Start-EmuCapture', 'Stop-EmuCapture', 'New-EmuReverse', 'Get-EmuReverse', 'Remove-EmuReverse') {
        $help = Get-Help $_ -Full
        $help.Synopsis | Should -Not -BeNullOrEmpty
        # Without a MAML entry the synopsis would be the generated syntax line.
        $help.Synopsis | Should -Not -Match '^\s*\w+-\w+ \['
        @($help.Examples.Example).Count | Should -BeGreaterOrEqual 2
        $own = (Get-Command $_).Parameters.Keys | Where-Object { $_ -notin [System.Management.Automation.PSCmdlet]::CommonParameters -and $_ -notin [System.Management.Automation.PSCmdlet]::OptionalCommonParameters }
        foreach ($p in $own) {
            ($help.Parameters.Parameter | Where-Object Name -eq $p).Description | Should -Not -BeNullOrEmpty -Because "-$p of $_ needs a description"
        }
    }

    It 'has help that says what the cmdlet metadata says for <_>' -ForEach @(
        'Start-EmuNet', 'Stop-EmuNet', 'Get-EmuNet', 'New-EmuForward', 'Get-EmuForward', 'Remove-EmuForward', 'Get-EmuConnection',
        'Get-EmuStat', 'Start-EmuCapture', 'Stop-EmuCapture', 'New-EmuReverse', 'Get-EmuReverse', 'Remove-EmuReverse') {
        $cmd = Get-Command $_
        $help = Get-Help $_ -Full
        $own = $cmd.Parameters.Values | Where-Object { $_.Name -notin [System.Management.Automation.PSCmdlet]::CommonParameters -and $_.Name -notin [System.Management.Automation.PSCmdlet]::OptionalCommonParameters }
        foreach ($p in $own) {
            $h = $help.Parameters.Parameter | Where-Object Name -eq $p.Name
            $aliases = if ($p.Aliases.Count) { $p.Aliases -join ', ' } else { 'none' }
            $h.aliases | Should -Be $aliases -Because "the aliases of -$($p.Name)"
            $wild = [bool]($p.Attributes | Where-Object { $_ -is [System.Management.Automation.SupportsWildcardsAttribute] })
            $h.globbing | Should -Be $wild.ToString().ToLower() -Because "the wildcards of -$($p.Name)"
            $byValue = [bool]($p.ParameterSets.Values | Where-Object ValueFromPipeline)
            $h.pipelineInput -like '*ByValue*' | Should -Be $byValue -Because "the pipeline input of -$($p.Name)"
            $byName = [bool]($p.ParameterSets.Values | Where-Object ValueFromPipelineByPropertyName)
            $h.pipelineInput -like '*ByPropertyName*' | Should -Be $byName -Because "the pipeline input of -$($p.Name)"
        }
    }

    It 'shows aliases, wildcards and defaults in help' {
        (Get-Help Stop-EmuNet -Parameter Name).aliases | Should -Be 'Instance'
        (Get-Help Get-EmuNet -Parameter Name).globbing | Should -Be 'true'
        (Get-Help New-EmuForward -Parameter Address).defaultValue | Should -Be '127.0.0.1'
        (Get-Help Start-EmuNet -Parameter TimeoutSeconds).defaultValue | Should -Be '30'
    }

    It 'has help with examples from the development manifest at the repository root' {
        $host_ = [Environment]::ProcessPath
        [string[]] $first = if ((Split-Path -Leaf $host_) -eq 'dotnet') { @(Join-Path $PSHOME 'pwsh.dll') } else { @() }
        $count = & $host_ @first -NoProfile -NonInteractive -Command "Import-Module '$(Join-Path $RepoRoot 'Emunet.psd1')'; @((Get-Help New-EmuForward -Examples).Examples.Example).Count" 2>&1
        $LASTEXITCODE | Should -Be 0 -Because ($count -join "`n")
        [int]$count | Should -BeGreaterOrEqual 2
    }

    It 'is laid out with the engine tool beside it' {
        $base = (Get-Module Emunet).ModuleBase
        Test-Path (Join-Path $base 'Emunet.Tool.dll') | Should -BeTrue
        Test-Path (Join-Path $base 'Emunet.Tool.runtimeconfig.json') | Should -BeTrue
        Test-Path (Join-Path $base 'en-US/Emunet.Module.dll-Help.xml') | Should -BeTrue
    }
}
