#!/usr/bin/env pwsh
# Runs the module's Pester tests (tag CI) against the laid-out module in build/module/Emunet.
# Lays the module out first (scripts/build-module.sh) unless -NoBuild; restores Pester 5.7.1 from NuGet if missing.
# Prints one line per test and a closing "Pester: N passed, N failed"; exits non-zero on any failure.
# -Path runs only the files given (e.g. -Path Remove-EmuForward.Tests.ps1), for iterating on one cmdlet.
param(
    [switch] $NoBuild,
    [string[]] $Path,
    [string] $Configuration = 'Release'
)
$ErrorActionPreference = 'Stop'
$repo = (Resolve-Path (Join-Path $PSScriptRoot '../..')).Path

if (-not $NoBuild) {
    & bash (Join-Path $repo 'scripts/build-module.sh') $Configuration
    if ($LASTEXITCODE -ne 0) { Write-Host 'Pester: 0 passed, 1 failed'; exit 1 }
}

$packages = if ($env:NUGET_PACKAGES) { $env:NUGET_PACKAGES } else { Join-Path ([Environment]::GetFolderPath('UserProfile')) '.nuget/packages' }
$pester = Join-Path $packages 'pester/5.7.1/tools/Pester.psd1'
if (-not (Test-Path $pester)) {
    & dotnet restore (Join-Path $PSScriptRoot 'PesterRestore.csproj') -nologo -v q
    if ($LASTEXITCODE -ne 0 -or -not (Test-Path $pester)) { Write-Host 'Pester: 0 passed, 1 failed'; exit 1 }
}
Import-Module $pester -Force

$config = New-PesterConfiguration
$config.Run.Path = if ($Path) { $Path -split "," | ForEach-Object { if ([IO.Path]::IsPathRooted($_)) { $_ } else { Join-Path $PSScriptRoot $_ } } } else { $PSScriptRoot }
$config.Run.PassThru = $true
$config.Filter.Tag = 'CI'
# Pester's own summary is replaced by the lines below, so that only the closing line carries the counts.
$config.Output.Verbosity = 'None'
$result = Invoke-Pester -Configuration $config

foreach ($test in $result.Tests) {
    $mark = switch ($test.Result) { 'Passed' { '[+]' } 'Failed' { '[-]' } default { '[?]' } }
    Write-Host ("{0} {1} ({2:0} ms)" -f $mark, $test.ExpandedPath, $test.Duration.TotalMilliseconds)
    if ($test.Result -eq 'Failed') {
        foreach ($e in $test.ErrorRecord) { Write-Host ("    " + ($e.ToString() -replace "`n", "`n    ")) }
    }
}
foreach ($c in $result.Containers) {
    if ($c.Result -eq 'Failed' -and $c.ErrorRecord) {
        Write-Host "[-] $($c.Item): $($c.ErrorRecord -join '; ')"
    }
}
$failed = $result.FailedCount + $result.FailedBlocksCount + $result.FailedContainersCount
Write-Host "Pester: $($result.PassedCount) passed, $failed failed"
if ($failed -gt 0 -or $result.PassedCount -eq 0) { exit 1 }
exit 0
