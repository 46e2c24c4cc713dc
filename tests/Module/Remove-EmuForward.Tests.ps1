Describe 'Remove-EmuForward' -Tag CI {
    BeforeAll {
        . (Join-Path $PSScriptRoot 'Common.ps1')
        $null = Start-EmuNet -Name rm1
    }
    AfterAll { Remove-TestRunDir }

    It 'removes a forward piped from New-EmuForward and frees its host port' {
        $f = New-EmuForward -Port 0 -GuestPort 80
        Test-TcpPortFree $f.HostPort | Should -BeFalse
        $f | Remove-EmuForward -Confirm:$false
        Get-EmuForward -Port $f.HostPort | Should -BeNullOrEmpty
        Test-TcpPortFree $f.HostPort | Should -BeTrue
    }

    It 'removes by -Port, and returns the forward with -PassThru' {
        $f = New-EmuForward -Port 0 -GuestPort 80
        $removed = Remove-EmuForward $f.HostPort -Force -PassThru
        $removed.HostPort | Should -Be $f.HostPort
        Get-EmuForward | Should -BeNullOrEmpty
    }

    It 'binds Port, Protocol and Instance by property name' {
        $f = New-EmuForward -Port 0 -GuestPort 53 -Protocol Udp
        [pscustomobject]@{ Port = $f.HostPort; Protocol = 'Udp'; Instance = 'rm1' } | Remove-EmuForward -Force
        Get-EmuForward | Should -BeNullOrEmpty
    }

    It 'writes ForwardNotFound per missing item and goes on with the rest' {
        $f = New-EmuForward -Port 0 -GuestPort 80
        $missing = [pscustomobject]@{ Port = 1; Instance = 'rm1' }
        $missing, [pscustomobject]@{ Port = $f.HostPort; Instance = 'rm1' } |
            Remove-EmuForward -Force -ErrorVariable errs -ErrorAction SilentlyContinue
        $errs.Count | Should -Be 1
        $errs[0].FullyQualifiedErrorId | Should -BeLike 'Emunet.ForwardNotFound,*'
        Get-EmuForward | Should -BeNullOrEmpty
    }

    It 'fails with ForwardNotFound under -ErrorAction Stop' {
        { Remove-EmuForward 1 -Force -ErrorAction Stop } | Should -Throw -ErrorId 'Emunet.ForwardNotFound,*'
    }

    It 'keeps the forward with -WhatIf' {
        $f = New-EmuForward -Port 0 -GuestPort 80
        $f | Remove-EmuForward -WhatIf
        (Get-EmuForward -Port $f.HostPort).HostPort | Should -Be $f.HostPort
        $f | Remove-EmuForward -Force
    }
}
