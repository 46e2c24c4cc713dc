Describe 'Start-EmuCapture' -Tag CI {
    BeforeAll {
        . (Join-Path $PSScriptRoot 'Common.ps1')
        $null = Start-EmuNet -Name capa1
    }
    AfterAll { Remove-TestRunDir }

    It 'starts writing a pcap file, relative to the current location' {
        Push-Location $RunDir
        try { $c = Start-EmuCapture ./a.pcap } finally { Pop-Location }
        $c | Should -BeOfType ([Emunet.Module.EmuCapture])
        $c.Running | Should -BeTrue
        $c.File | Should -Be (Join-Path $RunDir 'a.pcap')
        (Get-EmuStat).CaptureFile | Should -Be $c.File
        Test-Path $c.File | Should -BeTrue
    }

    It 'writes CaptureRunning when a capture already runs' {
        { Start-EmuCapture (Join-Path $RunDir 'b.pcap') -ErrorAction Stop } | Should -Throw -ErrorId 'Emunet.CaptureRunning,*'
        $null = Stop-EmuCapture
    }

    It 'writes CaptureFailed for a file it cannot create' {
        { Start-EmuCapture (Join-Path $RunDir 'no/such/dir/x.pcap') -ErrorAction Stop } | Should -Throw -ErrorId 'Emunet.CaptureFailed,*'
    }

    It 'starts nothing with -WhatIf' {
        Start-EmuCapture (Join-Path $RunDir 'c.pcap') -WhatIf | Should -BeNullOrEmpty
        (Get-EmuStat).CaptureFile | Should -BeNullOrEmpty
    }
}
