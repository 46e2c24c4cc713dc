# Shared by every *.Tests.ps1 here: a private runtime folder (so tests never see a user's instances) and the
# laid-out module from build/module/Emunet.
$RepoRoot = (Resolve-Path (Join-Path $PSScriptRoot '../..')).Path
$RunDir = Join-Path ([IO.Path]::GetTempPath()) ("emunet-pester-" + [Guid]::NewGuid().ToString('N').Substring(0, 8))
$env:EMUNET_RUNTIME_DIR = $RunDir
Import-Module (Join-Path $RepoRoot 'build/module/Emunet/Emunet.psd1') -Force

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
