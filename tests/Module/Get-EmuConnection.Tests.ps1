Describe 'Get-EmuConnection' -Tag CI {
    BeforeAll {
        . (Join-Path $PSScriptRoot 'Common.ps1')
        $null = Start-EmuNet -Name conn1
    }
    AfterAll { Remove-TestRunDir }

    It 'declares typed output' {
        (Get-Command Get-EmuConnection).OutputType.Type | Should -Be ([Emunet.Module.EmuConnection])
        $props = [Emunet.Module.EmuConnection].GetProperties().Name
        foreach ($p in 'Instance', 'Protocol', 'Direction', 'GuestEndPoint', 'GuestPeerEndPoint', 'HostLocalEndPoint',
                       'HostRemoteEndPoint', 'State', 'BytesFromGuest', 'BytesToGuest', 'Age', 'Forward') {
            $props | Should -Contain $p
        }
    }

    It 'returns no flows and no error while no guest is attached' {
        Get-EmuConnection -ErrorVariable errs | Should -BeNullOrEmpty
        $errs | Should -BeNullOrEmpty
    }

    It 'accepts every filter' {
        Get-EmuConnection -Instance conn1 -Protocol Tcp -Port 80 -State Established | Should -BeNullOrEmpty
    }

    It 'refuses a protocol it does not know' {
        { Get-EmuConnection -Protocol Sctp } | Should -Throw -ErrorId 'CannotConvertArgumentNoMessage,Emunet.Module.GetEmuConnectionCommand'
    }

    It 'has a table view' {
        (Get-FormatData -TypeName Emunet.Module.EmuConnection).FormatViewDefinition[0].Control.GetType().Name | Should -Be 'TableControl'
    }

    It 'fails with AmbiguousInstance when several run and -Instance is left out' {
        $null = Start-EmuNet -Name conn2
        try { { Get-EmuConnection -ErrorAction Stop } | Should -Throw -ErrorId 'Emunet.AmbiguousInstance,*' }
        finally { Stop-EmuNet conn2 -Confirm:$false }
    }

    Context 'with forwarded flows' {
        BeforeAll {
            $guest = Connect-SilentGuest conn1
            $a = New-EmuForward -Port 0 -GuestPort 80 -Instance conn1
            $b = New-EmuForward -Port 0 -GuestPort 81 -Instance conn1
            $ca = Connect-Tcp $a.HostPort
            $cb = Connect-Tcp $b.HostPort
            Wait-Until { @(Get-EmuConnection -Instance conn1).Count -eq 2 } 'two forwarded flows'
        }
        AfterAll { $ca.Dispose(); $cb.Dispose(); $guest.Dispose() }

        It 'lists only the flows of the forward piped to it' {
            $flows = Get-EmuForward -Port $a.HostPort -Instance conn1 | Get-EmuConnection
            $flows | Should -HaveCount 1
            $flows.Forward | Should -Be $a.Spec
            $flows.HostLocalEndPoint.Port | Should -Be $a.HostPort
        }

        It 'lists the flows of the instance piped to it' {
            (Get-EmuNet conn1 | Get-EmuConnection) | Should -HaveCount 2
        }

        It 'shows ToGuest, FromGuest and Age at 80 columns' {
            $text = Get-EmuConnection -Instance conn1 | Out-String -Width 80
            $header = ($text -split "`n" | Where-Object { $_ -match '^Proto' })
            $header | Should -Match 'ToGuest'
            $header | Should -Match 'FromGuest'
            $header | Should -Match 'Age'
            $text | Should -Match ([regex]::Escape("127.0.0.1:$($a.HostPort)"))
            ($text -split "`n" | Where-Object { $_.TrimEnd().Length -gt 80 }) | Should -BeNullOrEmpty
        }

        It 'writes the flows every interval with -Watch, with rates from the second sample' {
            $samples = Get-EmuConnection -Instance conn1 -Watch -IntervalSeconds 0.1 -MaxSamples 2
            $samples | Should -HaveCount 4
            $samples[0].BytesToGuestPerSecond | Should -BeNullOrEmpty
            $samples[3].BytesToGuestPerSecond | Should -Be 0
        }

        It 'says how many flows it got with -Verbose' {
            $verbose = Get-EmuConnection -Instance conn1 -Verbose 4>&1 | Where-Object { $_ -is [System.Management.Automation.VerboseRecord] }
            $verbose.Message | Should -Contain "Instance 'conn1' returned 2 flow(s)."
        }
    }
}
