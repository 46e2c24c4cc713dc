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

    It 'serves several links, each with its guest address, and lists them with their arguments' {
        $a = Join-Path $RunDir 'radio31.sock'
        $b = Join-Path $RunDir 'wifi31.sock'
        $i = Start-EmuNet -Name start31 -Socket $a, $b -GuestAddress 10.0.2.15, 10.0.2.30
        $i.Links | Should -HaveCount 2
        $i.Links.Device | Should -Be @("stream:unix:$a", "stream:unix:$b")
        $i.Links.GuestAddress | Should -Be @('10.0.2.15', '10.0.2.30')
        $i.EmulatorArguments | Should -Contain "stream,id=n1,server=off,addr.type=unix,addr.path=$b"
        $argv = (Get-Content -Raw "/proc/$($i.ProcessId)/cmdline") -split "`0"
        $argv[[array]::IndexOf($argv, '--guest-address') + 1] | Should -Be '10.0.2.15'
        (Get-EmuNet start31 | Out-String -Width 250) | Should -Match ([regex]::Escape("stream:unix:$b (10.0.2.30)"))
    }

    It 'gives the Android flags for two dial-out links' {
        $i = Start-EmuNet -Name start32 -Connect tcp:127.0.0.1:40013, tcp:127.0.0.1:40014
        $i.Links.GuestAddress | Should -Be @('10.0.2.15', '10.0.2.16')
        $i.AndroidArguments | Should -Be '-net-socket listen=127.0.0.1:40013 -wifi-socket listen=127.0.0.1:40014'
    }

    It 'refuses more guest addresses than links' {
        { Start-EmuNet -Name start33 -Socket (Join-Path $RunDir 'one33.sock') -GuestAddress 10.0.2.15, 10.0.2.16 } |
            Should -Throw -ErrorId 'Emunet.InvalidArgument,*'
    }

    It 'reports clashing guest addresses from the engine' {
        { Start-EmuNet -Name start34 -Socket (Join-Path $RunDir 'a34.sock'), (Join-Path $RunDir 'b34.sock') -GuestAddress 10.0.2.15, 10.0.2.15 } |
            Should -Throw -ErrorId 'Emunet.StartFailed,*' -ExpectedMessage '*Two guest links have the address 10.0.2.15*'
    }

    It 'runs the Android Emulator with -Android and returns its exit code' {
        # A stand-in emulator that prints its arguments and exits 3: the engine must have added both links.
        $emulator = Join-Path $RunDir 'emulator35'
        Set-Content -Path $emulator -Value "#!/bin/sh`necho ""args: `$*"" > '$RunDir/emulator35.out'`nexit 3"
        chmod +x $emulator
        $code = Start-EmuNet -Name start35 -Android -Emulator $emulator -ArgumentList '-avd', 'Pixel', '-qemu', '-m', '2G'
        $code | Should -Be 3
        $line = Get-Content (Join-Path $RunDir 'emulator35.out')
        $line -match '^args: -avd Pixel -net-socket listen=127\.0\.0\.1:(\d+) -wifi-socket listen=127\.0\.0\.1:(\d+) -qemu -m 2G$' | Should -BeTrue -Because "$line"
        foreach ($port in $Matches[1], $Matches[2]) { [int]$port | Should -Not -BeIn (5554..5585) }
        Get-EmuNet -Name start35 -ErrorAction SilentlyContinue | Should -BeNullOrEmpty
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
