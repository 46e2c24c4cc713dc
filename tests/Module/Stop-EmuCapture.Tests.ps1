Describe 'Stop-EmuCapture' -Tag CI {
    BeforeAll {
        . (Join-Path $PSScriptRoot 'Common.ps1')
        $null = Start-EmuNet -Name caps1
    }
    AfterAll { Remove-TestRunDir }

    It 'stops the capture and returns the file written, a valid empty pcap' {
        $file = Join-Path $RunDir 'stop.pcap'
        $null = Start-EmuCapture $file
        $c = Stop-EmuCapture
        $c.Running | Should -BeFalse
        $c.File | Should -Be $file
        $bytes = [IO.File]::ReadAllBytes($file)
        $bytes.Length | Should -Be 24
        [BitConverter]::ToUInt32($bytes, 0) | Should -Be 0xa1b2c3d4u
    }

    It 'returns no file when no capture runs' {
        (Stop-EmuCapture).File | Should -BeNullOrEmpty
    }

    It 'takes instances from Get-EmuNet' {
        (Get-EmuNet caps1 | Stop-EmuCapture).Instance | Should -Be 'caps1'
    }
}
