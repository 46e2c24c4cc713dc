Describe 'Stop-EmuNet' -Tag CI {
    BeforeAll { . (Join-Path $PSScriptRoot 'Common.ps1') }
    AfterAll { Remove-TestRunDir }

    It 'stops an instance by name: process gone, sockets and listeners closed' {
        $port = Get-FreeTcpPort
        $i = Start-EmuNet -Name stop1 -Forward "tcp:${port}:80"
        Test-TcpPortFree $port | Should -BeFalse
        Stop-EmuNet stop1 -Confirm:$false
        Test-Path $i.ControlSocket | Should -BeFalse
        Test-Path (Join-Path $RunDir 'net/stop1.sock') | Should -BeFalse
        Test-TcpPortFree $port | Should -BeTrue
        # Returned only once the engine process is gone, not merely its sockets.
        Test-ProcessGone $i.ProcessId | Should -BeTrue
    }

    It 'stops the only instance when no name is given' {
        $i = Start-EmuNet -Name stop6
        Stop-EmuNet -Confirm:$false
        Test-ProcessGone $i.ProcessId | Should -BeTrue
    }

    It 'stops what Get-EmuNet pipes to it' {
        $null = Start-EmuNet -Name stop2
        $null = Start-EmuNet -Name stop3
        Get-EmuNet | Stop-EmuNet -Confirm:$false
        Get-EmuNet | Should -BeNullOrEmpty
    }

    It 'leaves the instance running with -WhatIf' {
        $null = Start-EmuNet -Name stop4
        Stop-EmuNet stop4 -WhatIf
        (Get-EmuNet stop4).Name | Should -Be 'stop4'
        Stop-EmuNet stop4 -Confirm:$false
    }

    It 'writes InstanceNotFound for a name that does not run' {
        { Stop-EmuNet nosuch -Confirm:$false -ErrorAction Stop } | Should -Throw -ErrorId 'Emunet.InstanceNotFound,*'
    }

    It 'writes one error per missing name and stops the others' {
        $null = Start-EmuNet -Name stop5
        Stop-EmuNet nosuch, stop5 -Confirm:$false -ErrorVariable errs -ErrorAction SilentlyContinue
        $errs.Count | Should -Be 1
        $errs[0].FullyQualifiedErrorId | Should -BeLike 'Emunet.InstanceNotFound,*'
        Get-EmuNet | Should -BeNullOrEmpty
    }
}
