@{
    # The development manifest: it loads the build output of src/Module (`dotnet build` puts every configuration in
    # src/Module/bin/). scripts/build-module.sh lays the module out for users as build/module/Emunet, with this file's
    # RootModule pointing at the assembly beside it.
    RootModule           = 'src/Module/bin/Emunet.Module.dll'
    ModuleVersion        = '0.1.0'
    GUID                 = '6f0c7a52-3d7e-4c63-9a0e-2b8f5d1e9c41'
    Author               = 'Emunet'
    CompanyName          = 'Emunet'
    Copyright            = '(c) Emunet'
    Description          = 'Emunet: a network backend for QEMU and the Android Emulator. Start engines, open host-to-guest forwards, watch connections.'
    # Emunet.Module.dll targets .NET 10, which PowerShell 7.6 runs on (7.4 and 7.5 run on .NET 8 and 9 and cannot load it).
    PowerShellVersion    = '7.6'
    CompatiblePSEditions = @('Core')
    FormatsToProcess     = @('Emunet.format.ps1xml')
    CmdletsToExport      = @(
        'Start-EmuNet'
        'Stop-EmuNet'
        'Get-EmuNet'
        'New-EmuForward'
        'Get-EmuForward'
        'Remove-EmuForward'
        'New-EmuReverse'
        'Get-EmuReverse'
        'Remove-EmuReverse'
        'Get-EmuConnection'
        'Get-EmuStat'
        'Start-EmuCapture'
        'Stop-EmuCapture'
    )
    FunctionsToExport    = @()
    VariablesToExport    = @()
    AliasesToExport      = @()
    PrivateData          = @{
        PSData = @{
            Tags         = @('QEMU', 'Android', 'Emulator', 'Network', 'NAT', 'virtio-net', 'vhost-user', 'PortForwarding', 'Linux', 'PSEdition_Core')
            ProjectUri   = 'https://github.com/emunet/emunet'
            LicenseUri   = 'https://github.com/emunet/emunet/blob/main/LICENSE'
            ReleaseNotes = '0.1.0: first release. A user-mode NAT stack, QEMU stream-socket and vhost-user virtio-net devices, direct host-to-guest forwards, connection listing, statistics and pcap capture; the emunet tool and the Emunet module.'
        }
    }
}
