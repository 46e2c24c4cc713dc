# The cmdlets against a real engine with the real test guest attached (QEMU, -netdev stream): a forward into a server
# inside the guest, a data round trip, the connection listed with the right endpoints, removal, and errors by ID.
Describe 'Emunet cmdlets with a real guest' -Tag CI {
    BeforeAll {
        . (Join-Path $PSScriptRoot 'Common.ps1')
        $guestDir = Join-Path $RepoRoot 'build/guest'
        if (-not (Test-Path (Join-Path $guestDir 'vmlinuz'))) { throw "The test guest is missing: run tests/guest/build-guest.sh (scripts/setup.sh does)." }
        $work = Join-Path $RunDir 'guest'
        $null = New-Item -ItemType Directory -Force -Path (Join-Path $work 'root')
        $sock = Join-Path $RunDir 'guest.sock'
        $script:instance = Start-EmuNet -Name pguest -Socket $sock

        # The guest: an echo server on 10977 (socat), nothing on 10978; it stays up until killed.
        @'
socat TCP-LISTEN:10977,reuseaddr,fork EXEC:cat &
while ! netstat -ltn | grep -q ':10977 '; do usleep 50000; done
echo ready
sleep 600
'@ | Set-Content -NoNewline (Join-Path $work 'root/test.sh')
        & bash -c "cd '$work/root' && chmod 755 test.sh && echo test.sh | cpio -o -H newc --quiet > ../extra.cpio && cat '$guestDir/initramfs.cpio' ../extra.cpio > ../initrd.cpio"
        $script:out = Join-Path $work 'out.log'
        $qemuArgs = @('-accel', 'tcg,thread=multi', '-m', '512', '-nodefaults', '-no-user-config', '-display', 'none', '-no-reboot',
            '-kernel', "$guestDir/vmlinuz", '-initrd', "$work/initrd.cpio", '-append', 'console=ttyS0 quiet panic=-1',
            '-serial', "file:$work/console.log", '-serial', "file:$script:out",
            '-netdev', "stream,id=n0,server=off,addr.type=unix,addr.path=$sock", '-device', 'virtio-net-pci,netdev=n0,romfile=')
        $psi = [System.Diagnostics.ProcessStartInfo]::new('qemu-system-x86_64')
        foreach ($a in $qemuArgs) { $psi.ArgumentList.Add($a) }
        $psi.RedirectStandardInput = $true
        $script:qemu = [System.Diagnostics.Process]::Start($psi)
        $deadline = [DateTime]::UtcNow.AddSeconds(120)
        while (-not ((Test-Path $script:out) -and (Select-String -Path $script:out -Pattern '^ready' -Quiet))) {
            if ([DateTime]::UtcNow -gt $deadline -or $script:qemu.HasExited) { throw "The guest did not get ready: $(Get-Content -Raw $script:out -ErrorAction SilentlyContinue)" }
            Start-Sleep -Milliseconds 100
        }

        function Send-Echo([int] $Port, [string] $Text) {
            $c = [System.Net.Sockets.TcpClient]::new([System.Net.Sockets.AddressFamily]::InterNetwork)
            $c.Connect('127.0.0.1', $Port)
            $s = $c.GetStream()
            $bytes = [Text.Encoding]::ASCII.GetBytes($Text)
            $s.Write($bytes, 0, $bytes.Length)
            $buf = [byte[]]::new($bytes.Length)
            $s.ReadTimeout = 30000
            $n = 0
            while ($n -lt $buf.Length) { $r = $s.Read($buf, $n, $buf.Length - $n); if ($r -eq 0) { break }; $n += $r }
            [pscustomobject]@{ Client = $c; Stream = $s; Reply = [Text.Encoding]::ASCII.GetString($buf, 0, $n) }
        }
    }

    AfterAll {
        if ($script:qemu -and -not $script:qemu.HasExited) { $script:qemu.Kill($true); $script:qemu.WaitForExit(5000) }
        Remove-TestRunDir
    }

    It 'forwards a host port into the guest app and carries data both ways' {
        $f = New-EmuForward -Port 0 -GuestPort 10977 -Instance pguest
        $text = 'emunet-' * 5000
        $e = Send-Echo $f.HostPort $text
        try { $e.Reply | Should -Be $text } finally { $e.Client.Dispose() }
        $f | Remove-EmuForward -Confirm:$false
    }

    It 'lists the forwarded connection with its whole path' {
        $f = New-EmuForward -Port 0 -GuestPort 10977 -Instance pguest
        $e = Send-Echo $f.HostPort 'ping'
        try {
            $e.Reply | Should -Be 'ping'
            $c = Get-EmuConnection -Instance pguest -Protocol Tcp | Where-Object Direction -eq 'Forwarded'
            $c | Should -HaveCount 1
            $c | Should -BeOfType ([Emunet.Module.EmuConnection])
            $c.Instance | Should -Be 'pguest'
            $c.State | Should -Be 'ESTABLISHED'
            $c.GuestEndPoint.ToString() | Should -Be '10.0.2.15:10977'
            $c.GuestPeerEndPoint.Address.ToString() | Should -Be '10.0.2.2'
            $c.HostLocalEndPoint.ToString() | Should -Be "127.0.0.1:$($f.HostPort)"
            $c.HostRemoteEndPoint.ToString() | Should -Be $e.Client.Client.LocalEndPoint.ToString()
            $c.BytesToGuest | Should -Be 4
            $c.BytesFromGuest | Should -Be 4
            $c.Forward | Should -Be $f.Spec
            (Get-EmuConnection -Instance pguest -State Established -Protocol Tcp | Where-Object Direction -eq 'Forwarded') | Should -HaveCount 1
            ($c | Format-Table | Out-String -Width 200) | Should -Match '10\.0\.2\.15:10977'
        }
        finally { $e.Client.Dispose() }
        $f | Remove-EmuForward -Confirm:$false
    }

    It 'keeps open connections when a forward is removed, and closes its listener' {
        $f = New-EmuForward -Port 0 -GuestPort 10977 -Instance pguest
        $e = Send-Echo $f.HostPort 'one'
        try {
            Remove-EmuForward -Instance pguest -Port $f.HostPort -Confirm:$false
            Get-EmuForward -Instance pguest | Where-Object HostPort -eq $f.HostPort | Should -BeNullOrEmpty
            { [System.Net.Sockets.TcpClient]::new('127.0.0.1', $f.HostPort) } | Should -Throw
            $two = [Text.Encoding]::ASCII.GetBytes('two')
            $e.Stream.Write($two, 0, 3)
            $buf = [byte[]]::new(3); $n = 0
            while ($n -lt 3) { $r = $e.Stream.Read($buf, $n, 3 - $n); if ($r -eq 0) { break }; $n += $r }
            [Text.Encoding]::ASCII.GetString($buf, 0, $n) | Should -Be 'two'
        }
        finally { $e.Client.Dispose() }
    }

    It 'resets the host client at once when the guest port is closed' {
        $f = New-EmuForward -Port 0 -GuestPort 10978 -Instance pguest
        $c = [System.Net.Sockets.TcpClient]::new([System.Net.Sockets.AddressFamily]::InterNetwork)
        try {
            $c.Connect('127.0.0.1', $f.HostPort)
            $s = $c.GetStream(); $s.ReadTimeout = 30000
            $err = $null
            try { $null = $s.Read([byte[]]::new(1), 0, 1) } catch { $err = $_.Exception }
            $err | Should -Not -BeNullOrEmpty
            while ($err -and $err -isnot [System.Net.Sockets.SocketException]) { $err = $err.InnerException }
            $err.SocketErrorCode | Should -Be 'ConnectionReset'
        }
        finally { $c.Dispose() }
        $f | Remove-EmuForward -Confirm:$false
    }

    It 'names the port with Emunet.PortInUse when another program holds it' {
        $l = [System.Net.Sockets.TcpListener]::new([System.Net.IPAddress]::Loopback, 0)
        $l.Start()
        try {
            $port = $l.LocalEndpoint.Port
            { New-EmuForward -Port $port -GuestPort 10977 -Instance pguest -ErrorAction Stop } | Should -Throw -ErrorId 'Emunet.PortInUse*'
        }
        finally { $l.Stop() }
    }

    It 'shows the guest as attached' {
        (Get-EmuNet -Name pguest).GuestConnected | Should -BeTrue
    }
}
