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
        $text | Should -Match 'Instance\s+Protocol\s+Address\s+HostPort\s+Guest\s+GuestPort'
        $text | Should -Match 'first link'   # a forward that names no guest address reaches the first link's guest
    }

    It 'fails with AmbiguousInstance when several run and -Instance is left out' {
        $null = Start-EmuNet -Name getf2
        try {
            { Get-EmuForward -ErrorAction Stop } | Should -Throw -ErrorId 'Emunet.AmbiguousInstance,*'
            Get-EmuForward -Instance getf2 | Should -BeNullOrEmpty
        } finally { Stop-EmuNet getf2 -Confirm:$false }
    }

    It 'fails with NoInstance when none runs' {
        $saved = $env:EMUNET_RUNTIME_DIR
        $env:EMUNET_RUNTIME_DIR = Join-Path $RunDir 'empty'
        try { { Get-EmuForward -ErrorAction Stop } | Should -Throw -ErrorId 'Emunet.NoInstance,*' } finally { $env:EMUNET_RUNTIME_DIR = $saved }
    }

    It 'writes a non-terminating error for an instance that does not run' {
        $out = Get-EmuForward -Instance nope -ErrorAction SilentlyContinue -ErrorVariable errs
        $out | Should -BeNullOrEmpty
        $errs | Should -HaveCount 1
        $errs[0].FullyQualifiedErrorId | Should -BeLike 'Emunet.InstanceNotFound,*'
    }

    It 'goes on past a dead instance in the pipeline' {
        $out = [pscustomobject]@{ Name = 'nope' }, (Get-EmuNet getf1) | Get-EmuForward -ErrorAction SilentlyContinue -ErrorVariable errs
        $out | Should -HaveCount 2
        $errs | Should -HaveCount 1
    }

    It 'lists the forwards of the instances piped from Get-EmuNet' {
        (Get-EmuNet getf1 | Get-EmuForward).Instance | Should -Be @('getf1', 'getf1')
    }

    It 'says which instance it asks with -Verbose' {
        $verbose = Get-EmuForward -Verbose 4>&1 | Where-Object { $_ -is [System.Management.Automation.VerboseRecord] }
        $verbose.Message | Should -Contain "Instance 'getf1' has 2 forward(s)."
    }

    It 'lists hundreds of forwards' {
        $null = Start-EmuNet -Name getf3
        try {
            1..400 | ForEach-Object { $null = New-EmuForward -Port 0 -GuestPort $_ -Instance getf3 }
            @(Get-EmuForward -Instance getf3).Count | Should -Be 400
        } finally { Stop-EmuNet getf3 -Confirm:$false }
    }
}
