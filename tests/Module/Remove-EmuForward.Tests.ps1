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

    It 'keeps the forward with -WhatIf even with -Force' {
        $f = New-EmuForward -Port 0 -GuestPort 80
        Remove-EmuForward -Port $f.HostPort -WhatIf -Force
        $f | Remove-EmuForward -WhatIf -Force
        (Get-EmuForward -Port $f.HostPort).HostPort | Should -Be $f.HostPort
        Test-TcpPortFree $f.HostPort | Should -BeFalse
        $f | Remove-EmuForward -Force
    }

    It 'leaves open connections with -Force, and resets them only with -ResetConnections' {
        $kept = New-EmuForward -Port 0 -GuestPort 80
        $reset = New-EmuForward -Port 0 -GuestPort 80
        $guest = Connect-SilentGuest rm1
        $c1 = Connect-Tcp $kept.HostPort
        $c2 = Connect-Tcp $reset.HostPort
        try {
            Wait-Until { @(Get-EmuConnection -Port $kept.HostPort).Count -eq 1 -and @(Get-EmuConnection -Port $reset.HostPort).Count -eq 1 } 'both flows'
            $kept | Remove-EmuForward -Force
            Get-EmuForward -Port $kept.HostPort | Should -BeNullOrEmpty
            @(Get-EmuConnection -Port $kept.HostPort).Count | Should -Be 1
            $reset | Remove-EmuForward -ResetConnections -Confirm:$false
            Get-EmuConnection -Port $reset.HostPort | Should -BeNullOrEmpty
            @(Get-EmuConnection -Port $kept.HostPort).Count | Should -Be 1
        } finally { $c1.Dispose(); $c2.Dispose(); $guest.Dispose() }
    }

    It 'finds the forward on a port whatever its address when -Address is left out' {
        $f = New-EmuForward -Port 0 -GuestPort 80 -Address 127.0.0.2
        Remove-EmuForward -Port $f.HostPort -Force -PassThru | ForEach-Object Address | Should -Be '127.0.0.2'
        Get-EmuForward -Port $f.HostPort | Should -BeNullOrEmpty
    }

    It 'names the forwards when several share the port and -Address is left out' {
        $a = New-EmuForward -Port 0 -GuestPort 80 -Address 127.0.0.2
        $b = New-EmuForward -Port $a.HostPort -GuestPort 80 -Address 127.0.0.3
        try {
            { Remove-EmuForward -Port $a.HostPort -Force -ErrorAction Stop } | Should -Throw -ErrorId 'Emunet.InvalidArgument,*' -ExpectedMessage '*127.0.0.2*127.0.0.3*'
            Remove-EmuForward -Port $a.HostPort -Address 127.0.0.3 -Force
            (Get-EmuForward -Port $a.HostPort).Address | Should -Be '127.0.0.2'
        } finally { Get-EmuForward | Remove-EmuForward -Force }
    }
}
