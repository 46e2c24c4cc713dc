Describe 'Get-EmuNet' -Tag CI {
    BeforeAll {
        . (Join-Path $PSScriptRoot 'Common.ps1')
        $null = Start-EmuNet -Name get1
        $null = Start-EmuNet -Name get2
    }
    AfterAll { Remove-TestRunDir }

    It 'lists the running instances' {
        $all = Get-EmuNet
        $all | Should -HaveCount 2
        $all.Name | Should -Be @('get1', 'get2')
        $all[0] | Should -BeOfType ([Emunet.Module.EmuInstance])
    }

    It 'filters by name with wildcards' {
        (Get-EmuNet 'get2').Name | Should -Be 'get2'
        (Get-EmuNet 'ge*') | Should -HaveCount 2
        Get-EmuNet 'zz*' | Should -BeNullOrEmpty
    }

    It 'writes InstanceNotFound for a name that does not run' {
        { Get-EmuNet nosuch -ErrorAction Stop } | Should -Throw -ErrorId 'Emunet.InstanceNotFound,*'
    }

    It 'removes a control socket nobody answers on' {
        # What an engine that was killed leaves: a socket path on which connect fails.
        $stale = Join-Path $RunDir 'dead.sock'
        Set-Content -Path $stale -Value ''
        Test-Path $stale | Should -BeTrue
        (Get-EmuNet).Name | Should -Not -Contain 'dead'
        Test-Path $stale | Should -BeFalse
    }

    It 'completes instance names' {
        $r = TabExpansion2 -inputScript 'Stop-EmuNet -Name ge' -cursorColumn 'Stop-EmuNet -Name ge'.Length
        $r.CompletionMatches.CompletionText | Should -Be @('get1', 'get2')
    }

    It 'gives the QEMU arguments that attach a guest' {
        $i = Get-EmuNet get1
        $i.EmulatorArguments | Should -Be @('-netdev', "stream,id=n0,server=off,addr.type=unix,addr.path=$(Join-Path $RunDir 'net/get1.sock')", '-device', 'virtio-net-pci,netdev=n0')
    }

    It 'says where it looks with -Verbose' {
        $verbose = Get-EmuNet -Verbose 4>&1 | Where-Object { $_ -is [System.Management.Automation.VerboseRecord] }
        $verbose.Message | Should -Contain "2 instance(s) answer in $RunDir."
    }

    It 'shows the instance table view' {
        $text = Get-EmuNet | Out-String -Width 200
        $text | Should -Match 'Name\s+ProcessId\s+Device\s+Guest\s+Started'
        $text | Should -Match 'get1'
    }
}
