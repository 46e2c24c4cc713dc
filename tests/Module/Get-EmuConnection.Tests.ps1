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
        try { { Get-EmuConnection } | Should -Throw -ErrorId 'Emunet.AmbiguousInstance,*' }
        finally { Stop-EmuNet conn2 -Confirm:$false }
    }
}
