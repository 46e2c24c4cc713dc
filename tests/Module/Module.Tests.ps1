Describe 'Emunet module' -Tag CI {
    BeforeAll { . (Join-Path $PSScriptRoot 'Common.ps1') }
    AfterAll { Remove-TestRunDir }

    It 'exports exactly its cmdlets' {
        (Get-Command -Module Emunet).Name | Sort-Object | Should -Be @(
            'Get-EmuConnection', 'Get-EmuForward', 'Get-EmuNet', 'Get-EmuStat', 'New-EmuForward', 'Remove-EmuForward',
            'Start-EmuCapture', 'Start-EmuNet', 'Stop-EmuCapture', 'Stop-EmuNet')
    }

    It 'uses approved verbs' {
        $approved = (Get-Verb).Verb
        foreach ($c in Get-Command -Module Emunet) { $approved | Should -Contain $c.Verb }
    }

    It 'has help with examples and described parameters for <_>' -ForEach @(
        'Start-EmuNet', 'Stop-EmuNet', 'Get-EmuNet', 'New-EmuForward', 'Get-EmuForward', 'Remove-EmuForward', 'Get-EmuConnection',
        'Get-EmuStat', 'Start-EmuCapture', 'Stop-EmuCapture') {
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

    It 'is laid out with the engine tool beside it' {
        $base = (Get-Module Emunet).ModuleBase
        Test-Path (Join-Path $base 'Emunet.Tool.dll') | Should -BeTrue
        Test-Path (Join-Path $base 'Emunet.Tool.runtimeconfig.json') | Should -BeTrue
        Test-Path (Join-Path $base 'en-US/Emunet.Module.dll-Help.xml') | Should -BeTrue
    }
}
