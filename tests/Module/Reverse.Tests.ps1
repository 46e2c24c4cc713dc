Describe 'New-EmuReverse, Get-EmuReverse, Remove-EmuReverse' -Tag CI {
    BeforeAll {
        . (Join-Path $PSScriptRoot 'Common.ps1')
        $null = Start-EmuNet -Name rev1 -Reverse 'tcp:7000:7001'
    }
    AfterAll { Remove-TestRunDir }

    It 'starts with the -Reverse remaps of Start-EmuNet' {
        $m = Get-EmuReverse
        $m | Should -HaveCount 1
        $m | Should -BeOfType ([Emunet.Module.EmuReverse])
        $m.GuestPort | Should -Be 7000
        $m.HostPort | Should -Be 7001
        $m.GuestAddress | Should -Be '10.0.2.2'
    }

    It 'adds remaps by port, by guest address and by spec, and lists them' {
        $a = New-EmuReverse -GuestPort 8000 -HostPort 9000
        $a.HostAddress | Should -Be '127.0.0.1'
        $a.Protocol | Should -Be ([Emunet.Engine.Stack.RemapProtocol]::Tcp)
        $b = New-EmuReverse -GuestAddress 10.0.2.100 -GuestPort 80 -HostPort 8080
        $b.GuestAddress | Should -Be '10.0.2.100'
        $c = New-EmuReverse -Spec 'udp:5353:53'
        $c.Protocol | Should -Be ([Emunet.Engine.Stack.RemapProtocol]::Udp)
        (Get-EmuReverse).GuestPort | Sort-Object | Should -Be @(80, 5353, 7000, 8000)
        (Get-EmuReverse -GuestPort 8000).HostPort | Should -Be 9000
        Get-EmuReverse | Out-String -Width 200 | Should -Match 'Instance\s+Protocol\s+GuestAddress\s+GuestPort\s+HostAddress\s+HostPort'
    }

    It 'writes RemapConflict for a guest side remapped already, and InvalidArgument for a bad spec' {
        { New-EmuReverse -GuestPort 8000 -HostPort 1 -ErrorAction Stop } | Should -Throw -ErrorId 'Emunet.RemapConflict,*'
        { New-EmuReverse -Spec 'tcp:8000:99999' -ErrorAction Stop } | Should -Throw -ErrorId 'Emunet.InvalidArgument,*'
        { New-EmuReverse -GuestAddress 10.0.2.15 -GuestPort 80 -ErrorAction Stop } | Should -Throw -ErrorId 'Emunet.InvalidArgument,*'
    }

    It 'honours -WhatIf and removes by port and from the pipeline' {
        Remove-EmuReverse 8000 -WhatIf -Force
        Get-EmuReverse -GuestPort 8000 | Should -HaveCount 1
        $removed = Remove-EmuReverse 8000 -Force -PassThru
        $removed.HostPort | Should -Be 9000
        { Remove-EmuReverse 8000 -Force -ErrorAction Stop } | Should -Throw -ErrorId 'Emunet.RemapNotFound,*'
        Get-EmuReverse | Remove-EmuReverse -Force
        Get-EmuReverse | Should -BeNullOrEmpty
    }
}
