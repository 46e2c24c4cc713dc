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

    It 'passes -Mtu, -DnsUpstream and -NoHostLoopback to the engine' {
        $i = Start-EmuNet -Name start6 -Mtu 1500 -DnsUpstream 127.0.0.53:53, 127.0.0.1 -NoHostLoopback
        $argv = (Get-Content -Raw "/proc/$($i.ProcessId)/cmdline") -split "`0"
        $argv | Should -Contain '--no-host-loopback'
        $argv[[array]::IndexOf($argv, '--mtu') + 1] | Should -Be '1500'
        ($argv | Where-Object { $_ -eq '--dns-upstream' }) | Should -HaveCount 2
        $argv | Should -Contain '127.0.0.53:53'
    }

    It 'applies -Restrict, -Allow and -Deny (allow rules first) and shows the policy on the instance' {
        $i = Start-EmuNet -Name start11 -Restrict -Allow 192.0.2.0/24:443 -Deny 192.0.2.0/24, 198.51.100.7 -BufferBudgetMiB 16
        $i.OutboundPolicy | Should -BeLike 'restricted*'
        $i.OutboundPolicy | Should -BeLike '*first match wins: allow 192.0.2.0/24:443, then deny 192.0.2.0/24, then deny 198.51.100.7/32, else allow*'
        (Get-EmuStat -Instance start11).BufferBudget | Should -Be (16MB)
    }

    It 'dials an emulator that listens with -Connect' {
        $emulator = [System.Net.Sockets.TcpListener]::new([System.Net.IPAddress]::Loopback, 0)
        $emulator.Start()
        try {
            $port = $emulator.LocalEndpoint.Port
            $i = Start-EmuNet -Name start13 -Connect "tcp:127.0.0.1:$port"
            $i.Device | Should -Be "stream:connect:tcp:127.0.0.1:$port"
            $i.EmulatorArguments -join ' ' | Should -Be "-netdev socket,id=n0,listen=127.0.0.1:$port -device virtio-net-pci,netdev=n0"
            $accept = $emulator.AcceptSocketAsync()
            $accept.Wait(10000) | Should -BeTrue
            $accept.Result.Dispose()
        }
        finally { $emulator.Stop() }
    }

    It 'reports the engine refusing a rule that is not ADDR[/PREFIX][:PORT[-PORT]]' {
        { Start-EmuNet -Name start12 -Deny 10.0.0 } | Should -Throw -ErrorId 'Emunet.StartFailed,*' -ExpectedMessage '*--deny*'
    }

    It 'reports the engine refusing a -DnsUpstream that is not an address' {
        { Start-EmuNet -Name start7 -DnsUpstream nonsense } | Should -Throw -ErrorId 'Emunet.StartFailed,*' -ExpectedMessage '*--dns-upstream*'
    }

    It 'refuses an -Mtu out of range before starting anything' {
        { Start-EmuNet -Name start8 -Mtu 100 } | Should -Throw -ErrorId 'ParameterArgumentValidationError,Emunet.Module.StartEmuNetCommand'
        Test-Path (Join-Path $RunDir 'start8.sock') | Should -BeFalse
    }

    It 'supports -WhatIf' {
        Start-EmuNet -Name start4 -WhatIf | Should -BeNullOrEmpty
        Test-Path (Join-Path $RunDir 'start4.sock') | Should -BeFalse
    }
}
