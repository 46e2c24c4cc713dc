Describe 'Get-EmuForward' -Tag CI {
    BeforeAll {
        . (Join-Path $PSScriptRoot 'Common.ps1')
        $null = Start-EmuNet -Name getf1
        $tcp = New-EmuForward -Port 0 -GuestPort 80
        $udp = New-EmuForward -Port 0 -GuestPort 53 -Protocol Udp
    }
    AfterAll { Remove-TestRunDir }

    It 'lists every forward of the instance' {
        $all = Get-EmuForward
        $all | Should -HaveCount 2
        $all[0] | Should -BeOfType ([Emunet.Module.EmuForward])
        ($all.HostPort | Sort-Object) | Should -Be (@($tcp.HostPort, $udp.HostPort) | Sort-Object)
    }

    It 'filters by port and protocol' {
        (Get-EmuForward -Port $tcp.HostPort).GuestPort | Should -Be 80
        (Get-EmuForward -Protocol Udp).HostPort | Should -Be $udp.HostPort
        Get-EmuForward -Port 1 | Should -BeNullOrEmpty
    }

    It 'completes forward ports' {
        $line = 'Get-EmuForward -Port '
        $r = TabExpansion2 -inputScript $line -cursorColumn $line.Length
        $r.CompletionMatches.CompletionText | Should -Contain ([string]$tcp.HostPort)
    }

    It 'shows the forward table view' {
        $text = Get-EmuForward | Out-String -Width 200
        $text | Should -Match 'Instance\s+Protocol\s+Address\s+HostPort\s+GuestPort'
    }

    It 'fails with AmbiguousInstance when several run and -Instance is left out' {
        $null = Start-EmuNet -Name getf2
        try {
            { Get-EmuForward } | Should -Throw -ErrorId 'Emunet.AmbiguousInstance,*'
            Get-EmuForward -Instance getf2 | Should -BeNullOrEmpty
        } finally { Stop-EmuNet getf2 -Confirm:$false }
    }

    It 'fails with NoInstance when none runs' {
        $saved = $env:EMUNET_RUNTIME_DIR
        $env:EMUNET_RUNTIME_DIR = Join-Path $RunDir 'empty'
        try { { Get-EmuForward } | Should -Throw -ErrorId 'Emunet.NoInstance,*' } finally { $env:EMUNET_RUNTIME_DIR = $saved }
    }
}
