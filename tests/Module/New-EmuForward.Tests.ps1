Describe 'New-EmuForward' -Tag CI {
    BeforeAll {
        . (Join-Path $PSScriptRoot 'Common.ps1')
        $null = Start-EmuNet -Name new1
    }
    AfterAll { Remove-TestRunDir }

    It 'listens on the host port asked for' {
        $port = Get-FreeTcpPort
        $f = New-EmuForward -Port $port -GuestPort 80
        $f | Should -BeOfType ([Emunet.Module.EmuForward])
        $f.Instance | Should -Be 'new1'
        $f.Protocol | Should -Be 'Tcp'
        $f.Address | Should -Be '127.0.0.1'
        $f.HostPort | Should -Be $port
        $f.GuestPort | Should -Be 80
        $f.Spec | Should -Be "tcp:127.0.0.1:${port}:80"
        $client = [System.Net.Sockets.TcpClient]::new()
        try { $client.Connect('127.0.0.1', $port); $client.Connected | Should -BeTrue } finally { $client.Dispose() }
    }

    It 'listens on IPv6 loopback with -Address ::1, its host endpoint in brackets' {
        $f = New-EmuForward -Port 0 -GuestPort 80 -Address ::1 -WarningAction SilentlyContinue
        $f.Address | Should -Be '::1'
        $f.HostEndPoint | Should -BeOfType ([System.Net.IPEndPoint])
        $f.HostEndPoint.Address | Should -Be ([System.Net.IPAddress]::IPv6Loopback)
        $f.HostEndPoint.Port | Should -Be $f.HostPort
        "$($f.HostEndPoint)" | Should -Be "[::1]:$($f.HostPort)"
        $f.Spec | Should -Be "tcp:[::1]:$($f.HostPort):80"
        $u = New-EmuForward -Port 0 -GuestPort 53 -Protocol Udp -Address ::1 -WarningAction SilentlyContinue
        $u.Spec | Should -Be "udp:[::1]:$($u.HostPort):53"
        $client = [System.Net.Sockets.TcpClient]::new([System.Net.Sockets.AddressFamily]::InterNetworkV6)
        try { $client.Connect([System.Net.IPAddress]::IPv6Loopback, $f.HostPort); $client.Connected | Should -BeTrue } finally { $client.Dispose() }
        @(Get-EmuForward | Where-Object { "$($_.HostEndPoint)" -eq "[::1]:$($u.HostPort)" }) | Should -HaveCount 1
        { New-EmuForward -Port 0 -GuestPort 80 -Address 'fe80::1%2' -ErrorAction Stop } | Should -Throw -ErrorId 'Emunet.InvalidArgument,*'
        { New-EmuForward -Port 0 -GuestPort 80 -Address 'not-an-address' -ErrorAction Stop } | Should -Throw -ErrorId 'Emunet.InvalidArgument,*'
    }

    It 'warns that no guest is attached, whose clients are reset at once' {
        $f = New-EmuForward -Port 0 -GuestPort 80 -WarningVariable warned -WarningAction SilentlyContinue
        $warned | Should -HaveCount 1
        "$warned" | Should -BeLike '*No guest is attached*reset at once*'
        $client = [System.Net.Sockets.TcpClient]::new('127.0.0.1', $f.HostPort)
        try {
            $stream = $client.GetStream()
            $stream.ReadTimeout = 5000
            { $stream.ReadByte() } | Should -Throw '*reset*'
        } finally { $client.Dispose() }
    }

    It 'aims at another link''s guest with -GuestAddress, and refuses an address no link has' {
        $a = Join-Path $RunDir 'radio-gn.sock'
        $b = Join-Path $RunDir 'wifi-gn.sock'
        $null = Start-EmuNet -Name new2 -Socket $a, $b
        try {
            $f = New-EmuForward -Port 0 -GuestPort 80 -GuestAddress 10.0.2.16 -Instance new2 -WarningAction SilentlyContinue
            $f.GuestAddress | Should -Be '10.0.2.16'
            $f.Spec | Should -Be "tcp:127.0.0.1:$($f.HostPort):10.0.2.16:80"
            $s = New-EmuForward -Spec 'tcp:0:81,0:82' -GuestAddress 10.0.2.16 -Instance new2 -WarningAction SilentlyContinue
            $s.GuestAddress | Should -Be @('10.0.2.16', '10.0.2.16')
            (New-EmuForward -Port 0 -GuestPort 83 -Instance new2 -WarningAction SilentlyContinue).GuestAddress | Should -BeNullOrEmpty
            { New-EmuForward -Port 0 -GuestPort 80 -GuestAddress 10.0.2.17 -Instance new2 -ErrorAction Stop } |
                Should -Throw -ExpectedMessage '*no guest link of this engine has the address 10.0.2.17*'
            { New-EmuForward -Port 0 -GuestPort 80 -GuestAddress 10.0.2 -Instance new2 -ErrorAction Stop } |
                Should -Throw -ErrorId 'Emunet.InvalidArgument,*'
        }
        finally { Stop-EmuNet new2 -Confirm:$false }
    }

    It 'with -Wait, gives up cleanly when the guest never accepts, keeping the forward' {
        $f = New-EmuForward -Port 0 -GuestPort 8099 -Wait -TimeoutSeconds 2 -ErrorVariable failed -ErrorAction SilentlyContinue
        $f | Should -BeNullOrEmpty
        $failed | Should -HaveCount 1
        $failed[0].FullyQualifiedErrorId | Should -BeLike 'Emunet.GuestNotReady,*'
        @(Get-EmuForward | Where-Object GuestPort -eq 8099) | Should -HaveCount 1
    }

    It 'takes the guest port from -Port when -GuestPort is left out' {
        $port = Get-FreeTcpPort
        (New-EmuForward $port).GuestPort | Should -Be $port
    }

    It 'takes any free port with -Port 0' {
        $f = New-EmuForward -Port 0 -GuestPort 22
        $f.HostPort | Should -BeGreaterThan 0
        Test-TcpPortFree $f.HostPort | Should -BeFalse
    }

    It 'opens UDP forwards' {
        $f = New-EmuForward -Port 0 -GuestPort 53 -Protocol Udp
        $f.Protocol | Should -Be 'Udp'
        $u = [System.Net.Sockets.UdpClient]::new()
        try { { $u.Client.Bind([System.Net.IPEndPoint]::new([System.Net.IPAddress]::Loopback, $f.HostPort)) } | Should -Throw } finally { $u.Dispose() }
    }

    It 'writes PortInUse when another program holds the port' {
        $holder = [System.Net.Sockets.TcpListener]::new([System.Net.IPAddress]::Loopback, 0)
        $holder.Start()
        try {
            { New-EmuForward -Port $holder.LocalEndpoint.Port -ErrorAction Stop } | Should -Throw -ErrorId 'Emunet.PortInUse,*'
        } finally { $holder.Stop() }
    }

    It 'writes ForwardConflict for a forward the instance already has' {
        $f = New-EmuForward -Port 0 -GuestPort 81
        { New-EmuForward -Port $f.HostPort -GuestPort 82 -ErrorAction Stop } | Should -Throw -ErrorId 'Emunet.ForwardConflict,*'
    }

    It 'refuses -Port 0 without -GuestPort' {
        { New-EmuForward -Port 0 -ErrorAction Stop } | Should -Throw -ErrorId 'Emunet.InvalidArgument,*'
    }

    It 'refuses an address that is not IPv4 or IPv6' {
        { New-EmuForward -Port 0 -GuestPort 80 -Address 'nonsense' -ErrorAction Stop } | Should -Throw -ErrorId 'Emunet.InvalidArgument,*'
    }

    It 'adds nothing with -WhatIf' {
        $before = @(Get-EmuForward).Count
        New-EmuForward -Port 0 -GuestPort 99 -WhatIf | Should -BeNullOrEmpty
        @(Get-EmuForward).Count | Should -Be $before
    }

    It 'names the choices when several instances run and -Instance is left out' {
        $null = Start-EmuNet -Name new2
        try {
            { New-EmuForward -Port 0 -GuestPort 80 -ErrorAction Stop } | Should -Throw -ErrorId 'Emunet.AmbiguousInstance,*' -ExpectedMessage '*new1, new2*'
            (New-EmuForward -Port 0 -GuestPort 80 -Instance new2).Instance | Should -Be 'new2'
        } finally { Stop-EmuNet new2 -Confirm:$false }
    }

    It 'writes InstanceNotFound for an instance that does not run' {
        { New-EmuForward -Port 0 -GuestPort 80 -Instance nosuch -ErrorAction Stop } | Should -Throw -ErrorId 'Emunet.InstanceNotFound,*'
    }

    It 'adds a range and a list given as -Spec, whole or not at all' {
        $first = Get-FreeTcpPort
        while (-not ((Test-TcpPortFree ($first + 1)) -and (Test-TcpPortFree ($first + 2)))) { $first = Get-FreeTcpPort }
        $added = New-EmuForward -Spec "tcp:${first}-$($first + 1):9000-9001", 'udp:0:53'
        $added | Should -HaveCount 3
        ($added | Select-Object -First 2).GuestPort | Should -Be @(9000, 9001)
        $added[2].Protocol | Should -Be 'Udp'
        { New-EmuForward -Spec "tcp:$($first + 2)-$($first + 1)" -ErrorAction Stop } | Should -Throw -ErrorId 'Emunet.InvalidArgument,*' -ExpectedMessage '*ends before it starts*'
        $added | Remove-EmuForward -Force
    }
}
