Describe 'Get-EmuStat' -Tag CI {
    BeforeAll {
        . (Join-Path $PSScriptRoot 'Common.ps1')
        $null = Start-EmuNet -Name stat1 -Forward tcp:0:80
    }
    AfterAll { Remove-TestRunDir }

    It 'returns the counters of the only instance' {
        $s = Get-EmuStat
        $s | Should -BeOfType ([Emunet.Module.EmuStat])
        $s.Instance | Should -Be 'stat1'
        $s.Forwards | Should -Be 1
        $s.FramesFromGuest | Should -Be 0
        $s.CaptureFile | Should -BeNullOrEmpty
    }

    It 'takes instances from Get-EmuNet' {
        (Get-EmuNet stat1 | Get-EmuStat).Instance | Should -Be 'stat1'
    }

    It 'writes a non-terminating InstanceNotFound' {
        Get-EmuStat -Instance nosuch -ErrorAction SilentlyContinue -ErrorVariable errs | Should -BeNullOrEmpty
        $errs[0].FullyQualifiedErrorId | Should -BeLike 'Emunet.InstanceNotFound,*'
    }

    It 'writes a sample every interval with -Watch, rates from the second on' {
        $samples = Get-EmuStat -Watch -IntervalSeconds 0.1 -MaxSamples 3
        $samples | Should -HaveCount 3
        $samples[0].BytesToGuestPerSecond | Should -BeNullOrEmpty
        $samples[1].BytesToGuestPerSecond | Should -Be 0
        $samples[2].BytesFromGuestPerSecond | Should -Be 0
        # each sample is stamped when it was taken; sample n is due n intervals after the first, never before
        $samples[1].Timestamp | Should -BeGreaterThan $samples[0].Timestamp
        $samples[2].Timestamp | Should -BeGreaterThan $samples[1].Timestamp
        ($samples[2].Timestamp - $samples[0].Timestamp).TotalSeconds | Should -BeGreaterOrEqual 0.2
    }
}
