Describe 'Start-EmuNet' -Tag CI {
    BeforeAll { . (Join-Path $PSScriptRoot 'Common.ps1') }
    AfterAll { Remove-TestRunDir }

    It 'starts a background engine and returns its instance' {
        $i = Start-EmuNet -Name start1
        $i | Should -BeOfType ([Emunet.Module.EmuInstance])
        $i.Name | Should -Be 'start1'
        $i.ProcessId | Should -BeGreaterThan 0
        $i.ProcessId | Should -Not -Be $PID
        $i.Device | Should -Be "stream:unix:$(Join-Path $RunDir 'net/start1.sock')"
        $i.ControlSocket | Should -Be (Join-Path $RunDir 'start1.sock')
        (Get-Process -Id $i.ProcessId).HasExited | Should -BeFalse
    }

    It 'starts a vhost-user engine with -VhostUser' {
        $sock = Join-Path $RunDir 'vhost5.sock'
        $i = Start-EmuNet -Name start5 -VhostUser $sock
        $i.Device | Should -Be "vhost-user:$sock"
        (Get-Item $sock).UnixFileMode | Should -Be ([System.IO.UnixFileMode]'UserRead, UserWrite')
    }

    It 'makes the runtime folder 0700 and the control socket 0600' {
        (Get-Item $RunDir).UnixFileMode | Should -Be ([System.IO.UnixFileMode]'UserRead, UserWrite, UserExecute')
        (Get-Item (Join-Path $RunDir 'start1.sock')).UnixFileMode | Should -Be ([System.IO.UnixFileMode]'UserRead, UserWrite')
    }

    It 'opens the forwards given at start on real host ports' {
        $port = Get-FreeTcpPort
        $null = Start-EmuNet -Name start2 -Forward "tcp:${port}:80"
        $f = Get-EmuForward -Instance start2
        $f.HostPort | Should -Be $port
        $f.GuestPort | Should -Be 80
        Test-TcpPortFree $port | Should -BeFalse
    }

    It 'refuses a name already running' {
        { Start-EmuNet -Name start1 } | Should -Throw -ErrorId 'Emunet.InstanceExists,*'
    }

    It 'refuses an invalid name' {
        { Start-EmuNet -Name '../evil' } | Should -Throw -ErrorId 'Emunet.InvalidArgument,*'
    }

    It 'reports an engine that cannot start, with the reason from its log' {
        { Start-EmuNet -Name start3 -Forward 'sctp:99' } | Should -Throw -ErrorId 'Emunet.StartFailed,*' -ExpectedMessage '*not tcp or udp*'
        Get-EmuNet -Name start3 -ErrorAction SilentlyContinue | Should -BeNullOrEmpty
    }

    It 'supports -WhatIf' {
        Start-EmuNet -Name start4 -WhatIf | Should -BeNullOrEmpty
        Test-Path (Join-Path $RunDir 'start4.sock') | Should -BeFalse
    }
}
