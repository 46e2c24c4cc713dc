# The laid-out module as a gallery takes it: Publish-PSResource (PSResourceGet, shipped with PowerShell) to a local
# file repository, then saved from there and imported by a fresh PowerShell.
Describe 'Publishing the module' -Tag CI {
    BeforeAll {
        . (Join-Path $PSScriptRoot 'Common.ps1')
        $moduleDir = Split-Path -Parent $ModuleManifest
        $feed = Join-Path $RunDir 'feed'
        $saved = Join-Path $RunDir 'saved'
        $null = New-Item -ItemType Directory -Force -Path $feed, $saved
        $repoName = 'EmunetTest' + [Guid]::NewGuid().ToString('N').Substring(0, 8)
        Register-PSResourceRepository -Name $repoName -Uri $feed -Trusted
    }
    AfterAll {
        Unregister-PSResourceRepository -Name $repoName -ErrorAction SilentlyContinue
        Remove-TestRunDir
    }

    It 'declares what a gallery needs and the PowerShell that loads a .NET 10 assembly' {
        $m = Test-ModuleManifest (Join-Path $moduleDir 'Emunet.psd1')
        $m.PowerShellVersion | Should -Be ([version]'7.6')
        $m.ProjectUri.AbsoluteUri | Should -Match '^https://'
        $m.LicenseUri.AbsoluteUri | Should -Match '^https://'
        $m.ReleaseNotes | Should -Not -BeNullOrEmpty
        $m.Tags | Should -Contain 'QEMU'
    }

    It 'carries the same project, license and release notes as the Emunet.Tool package' {
        $props = [xml](Get-Content -Raw (Join-Path $RepoRoot 'Directory.Build.props'))
        $group = $props.Project.PropertyGroup
        $m = Test-ModuleManifest (Join-Path $moduleDir 'Emunet.psd1')
        $m.ProjectUri.AbsoluteUri.TrimEnd('/') | Should -Be $group.PackageProjectUrl
        $m.LicenseUri.AbsoluteUri | Should -BeLike "$($group.PackageProjectUrl)/*/LICENSE"
        $m.ReleaseNotes | Should -Be $group.PackageReleaseNotes
        $m.Version | Should -Be ([version]$group.Version)
    }

    It 'publishes to a local repository, and a fresh PowerShell imports what it saves from there' {
        Publish-PSResource -Path $moduleDir -Repository $repoName -ErrorAction Stop
        (Find-PSResource -Name Emunet -Repository $repoName).Version.ToString() | Should -Be '0.1.0'
        Save-PSResource -Name Emunet -Repository $repoName -Path $saved -TrustRepository -ErrorAction Stop
        $manifest = Get-ChildItem -Recurse -Filter Emunet.psd1 -Path $saved | Select-Object -First 1
        $manifest | Should -Not -BeNullOrEmpty
        # This PowerShell again: the pwsh local tool runs as 'dotnet pwsh.dll'.
        $host_ = [Environment]::ProcessPath
        [string[]] $first = if ((Split-Path -Leaf $host_) -eq 'dotnet') { @(Join-Path $PSHOME 'pwsh.dll') } else { @() }
        $names = & $host_ @first -NoProfile -NonInteractive -Command "Import-Module '$($manifest.FullName)'; (Get-Command -Module Emunet).Name -join ','" 2>&1
        $LASTEXITCODE | Should -Be 0 -Because ($names -join "`n")
        $names | Should -Match 'Start-EmuNet'
        $names | Should -Match 'Get-EmuStat'
    }
}
