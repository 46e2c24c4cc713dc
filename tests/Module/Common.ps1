# Shared by every *.Tests.ps1 here: a private runtime folder (so tests never see a user's instances) and the
# laid-out module from build/module/Emunet.
$RepoRoot = (Resolve-Path (Join-Path $PSScriptRoot '../..')).Path
$RunDir = Join-Path ([IO.Path]::GetTempPath()) ("emunet-pester-" + [Guid]::NewGuid().ToString('N').Substring(0, 8))
$env:EMUNET_RUNTIME_DIR = $RunDir
# EMUNET_TEST_MODULE runs the tests against another layout (an installed module, or an older build to compare with).
$ModuleManifest = if ($env:EMUNET_TEST_MODULE) { $env:EMUNET_TEST_MODULE } else { Join-Path $RepoRoot 'build/module/Emunet/Emunet.psd1' }
Import-Module $ModuleManifest -Force

function Get-FreeTcpPort {
    $l = [System.Net.Sockets.TcpListener]::new([System.Net.IPAddress]::Loopback, 0)
    $l.Start()
    try { $l.LocalEndpoint.Port } finally { $l.Stop() }
}

function Test-TcpPortFree([int] $Port) {
    $l = [System.Net.Sockets.TcpListener]::new([System.Net.IPAddress]::Loopback, $Port)
    try { $l.Start(); $true } catch { $false } finally { $l.Stop() }
}

function Remove-TestRunDir {
    Get-EmuNet -ErrorAction SilentlyContinue | Stop-EmuNet -Confirm:$false -ErrorAction SilentlyContinue
    Remove-Item -Recurse -Force $RunDir -ErrorAction SilentlyContinue
    Remove-Item Env:EMUNET_RUNTIME_DIR -ErrorAction SilentlyContinue
}

# True once process $Id has exited (a zombie waiting to be reaped counts as exited).
function Test-ProcessGone([int] $Id) {
    $status = Get-Content "/proc/$Id/status" -ErrorAction SilentlyContinue
    -not $status -or ($status -match '^State:\s+Z')
}

# Waits until $Condition is true, or fails after $TimeoutSeconds naming $What.
function Wait-Until([scriptblock] $Condition, [string] $What, [int] $TimeoutSeconds = 10) {
    $deadline = [DateTime]::UtcNow.AddSeconds($TimeoutSeconds)
    while (-not (& $Condition)) {
        if ([DateTime]::UtcNow -gt $deadline) { throw "Timed out after $TimeoutSeconds s waiting for: $What" }
        Start-Sleep -Milliseconds 20
    }
}

# Opens a TCP connection to 127.0.0.1:$Port (a forward); the caller disposes it.
function Connect-Tcp([int] $Port) {
    $c = [System.Net.Sockets.TcpClient]::new([System.Net.Sockets.AddressFamily]::InterNetwork)
    $c.Connect('127.0.0.1', $Port)
    $c
}

# Attaches a stand-in guest to instance $Name's default device socket: it announces itself (one gratuitous ARP, so the
# engine knows its MAC) and then answers nothing, so forwarded connections wait in SYN-SENT. Without any guest, the
# engine resets forwarded clients at once. The caller disposes the returned socket (the guest detaches).
function Connect-SilentGuest([string] $Name) {
    $path = Join-Path $RunDir "net/$Name.sock"
    $s = [System.Net.Sockets.Socket]::new([System.Net.Sockets.AddressFamily]::Unix, [System.Net.Sockets.SocketType]::Stream, [System.Net.Sockets.ProtocolType]::Unspecified)
    $s.Connect([System.Net.Sockets.UnixDomainSocketEndPoint]::new($path))
    # Ethernet broadcast from 52:54:00:12:34:56, ARP request: 10.0.2.15 announcing itself.
    $frame = [byte[]](0xff,0xff,0xff,0xff,0xff,0xff, 0x52,0x54,0x00,0x12,0x34,0x56, 0x08,0x06,
        0x00,0x01, 0x08,0x00, 6, 4, 0x00,0x01, 0x52,0x54,0x00,0x12,0x34,0x56, 10,0,2,15, 0,0,0,0,0,0, 10,0,2,15)
    $framed = [byte[]](0, 0, 0, $frame.Length) + $frame
    $null = $s.Send($framed)
    Wait-Until { (Get-EmuNet -Name $Name).GuestMac } "instance $Name to learn the stand-in guest's MAC"
    $s
}
