# The prose of the cmdlets' help: synopsis, description and examples. Everything else in the help (parameters, their
# descriptions (HelpMessage), types, aliases, positions, pipeline input, wildcards, defaults, inputs, outputs) is read
# from the cmdlets themselves by scripts/gen-module-help.ps1 when the module is built, so it cannot drift from them.
@{
    'Start-EmuNet' = @{
        Synopsis    = 'Starts an Emunet engine in the background and returns it.'
        Description = "Runs 'emunet run' from the module folder with the dotnet host as its own background process (a new session: it outlives this PowerShell), waits until its control socket answers and returns the instance; its EmulatorArguments property holds the QEMU arguments that attach a guest (AndroidArguments the Android Emulator's flags). Several -Socket, -Connect or -VhostUser values serve several links, one guest each (10.0.2.15, 10.0.2.16, ...; -GuestAddress sets them in order); Links lists them. With -Android it runs the Android Emulator in the foreground on an engine serving both of its links ('emunet launch --android'), stops the engine when the emulator exits and returns the emulator's exit code. The engine's log is NAME.log in the runtime folder (`$env:EMUNET_RUNTIME_DIR, else `$XDG_RUNTIME_DIR/emunet, else ~/.emunet/run). Errors: Emunet.InstanceExists (the name is taken), Emunet.StartFailed (the engine did not start; the message carries its log), Emunet.ToolNotFound."
        Examples    = @(
            @{ Code = 'Start-EmuNet -Name pixel -Forward tcp:10977'; Remarks = "Starts instance 'pixel' serving net/pixel.sock in the runtime folder, with host port 10977 opened into the guest's port 10977." }
            @{ Code = '$emu = Start-EmuNet -Name qemu1; qemu-system-x86_64 -m 1G disk.img @($emu.EmulatorArguments)'; Remarks = 'Starts an instance and a QEMU attached to it.' }
            @{ Code = 'Start-EmuNet -Name pixel -Connect tcp:127.0.0.1:40001, tcp:127.0.0.1:40002; emulator -avd Pixel_API_34 -net-socket listen=127.0.0.1:40001 -wifi-socket listen=127.0.0.1:40002'; Remarks = "One engine for both links of an Android Emulator: radio (10.0.2.15) and Wi-Fi (10.0.2.16), the engine dialling each; the instance's AndroidArguments give the flags." }
            @{ Code = 'Start-EmuNet -Name pixel -Android -Emulator emulator -ArgumentList -avd, Pixel_API_34'; Remarks = "Runs the Android Emulator on a fresh engine serving both of its links, and returns its exit code when it exits." }
            @{ Code = 'Start-EmuNet -Name qemu2 -Socket /tmp/qemu2.sock -Capture ./qemu2.pcap -Mtu 1500 -DnsUpstream 127.0.0.53 -LogLevel Debug'; Remarks = 'Serves /tmp/qemu2.sock, offers MTU 1500, relays DNS to 127.0.0.53 and captures all guest traffic to qemu2.pcap.' }
        )
    }
    'Stop-EmuNet' = @{
        Synopsis    = 'Stops Emunet instances cleanly.'
        Description = 'Asks each instance to shut down through its control socket (listeners closed, connections reset, sockets removed) and returns once it is gone: its control socket removed and its process exited. Takes names from the pipeline, by value or by the Name property of Get-EmuNet''s objects. An instance still there after -TimeoutSeconds writes Emunet.StopTimeout.'
        Examples    = @(
            @{ Code = 'Stop-EmuNet pixel'; Remarks = "Stops instance 'pixel'." }
            @{ Code = 'Get-EmuNet | Stop-EmuNet -Confirm:$false'; Remarks = 'Stops every running instance without asking.' }
        )
    }
    'Get-EmuNet' = @{
        Synopsis    = 'Lists the running Emunet instances.'
        Description = 'Lists the instances whose control sockets answer in the runtime folder, and removes the sockets of instances that died. A name without wildcards that does not run writes the error Emunet.InstanceNotFound.'
        Examples    = @(
            @{ Code = 'Get-EmuNet'; Remarks = 'Lists every running instance: name, process, device, whether a guest is attached.' }
            @{ Code = 'Get-EmuNet pix*'; Remarks = "Lists the instances whose names start with 'pix'." }
            @{ Code = '(Get-EmuNet pixel).EmulatorArguments'; Remarks = "The QEMU arguments that attach a guest to instance 'pixel'." }
        )
    }
    'New-EmuForward' = @{
        Synopsis    = 'Opens a host port straight into the guest.'
        Description = 'Makes the instance listen on a host port and send each connection (or datagram) through its stack into the guest''s port, arriving from 10.0.2.2: no adb, no extra hop. A port already in use writes the error Emunet.PortInUse; a forward the instance already has writes Emunet.ForwardConflict.'
        Examples    = @(
            @{ Code = 'New-EmuForward -Port 10977'; Remarks = "Host 127.0.0.1:10977 reaches the guest's TCP port 10977." }
            @{ Code = 'New-EmuForward -Port 8080 -GuestPort 80 -Instance pixel'; Remarks = "Host 127.0.0.1:8080 reaches port 80 of the guest of instance 'pixel'." }
            @{ Code = 'New-EmuForward -Port 5353 -GuestPort 53 -Protocol Udp'; Remarks = "Forwards UDP datagrams from host port 5353 to the guest's port 53." }
            @{ Code = 'New-EmuForward -Port 8080 -GuestPort 80 -Address ::1'; Remarks = "Host [::1]:8080 reaches port 80 of the guest's IPv6 address (the guest sees the client as fec0::2); HostEndPoint shows [::1]:8080." }
            @{ Code = 'New-EmuForward -Port 8081 -GuestPort 80 -GuestAddress 10.0.2.16 -Instance pixel'; Remarks = "Host 127.0.0.1:8081 reaches port 80 of the guest on the instance's second link (the Android Emulator's Wi-Fi, 10.0.2.16)." }
            @{ Code = '$f = New-EmuForward -Port 0 -GuestPort 22; ssh -p $f.HostPort user@127.0.0.1'; Remarks = "Takes any free host port for the guest's SSH server." }
            @{ Code = "New-EmuForward -Spec 'tcp:8000-8010:9000-9010', 'udp:5353:53'"; Remarks = 'Host ports 8000-8010 reach guest ports 9000-9010, and UDP 5353 reaches 53: the specs the emunet tool takes.' }
        )
    }
    'Get-EmuForward' = @{
        Synopsis    = 'Lists an instance''s forwards.'
        Description = 'Lists the forwards of the instance with their bound host port, guest port and connection counts. Takes instances from Get-EmuNet; an instance that does not answer writes an error for that instance and the others are listed.'
        Examples    = @(
            @{ Code = 'Get-EmuForward'; Remarks = 'Lists the forwards of the only running instance.' }
            @{ Code = 'Get-EmuNet | Get-EmuForward -Protocol Udp'; Remarks = 'Lists the UDP forwards of every running instance.' }
        )
    }
    'Remove-EmuForward' = @{
        Synopsis    = 'Removes forwards.'
        Description = 'Closes the host listeners of forwards. Takes Get-EmuForward''s objects from the pipeline, or the Port, Protocol, Address and Instance properties of any object. Open connections run on unless -ResetConnections; -Force only skips the confirmation, and -WhatIf always wins. A forward that does not exist writes the error Emunet.ForwardNotFound for that item and goes on with the next.'
        Examples    = @(
            @{ Code = 'Remove-EmuForward 8080'; Remarks = 'Removes the TCP forward on host port 8080 (whatever its address) of the only running instance.' }
            @{ Code = 'Get-EmuForward -Instance pixel | Remove-EmuForward -ResetConnections -Force'; Remarks = "Removes every forward of instance 'pixel' without asking and resets their connections." }
        )
    }
    'Get-EmuConnection' = @{
        Synopsis    = 'Lists the guest''s connections.'
        Description = 'Lists the flows of the instance''s NAT table: the guest''s own connections (Outbound) and those that came in through a forward (Forwarded), with the guest''s endpoint, its peer as the guest sees it, the host socket''s endpoints, state, bytes each way and age. Takes instances (Get-EmuNet) and forwards (Get-EmuForward) from the pipeline: a forward gives only its own flows. Format-Table -View Path shows every endpoint.'
        Examples    = @(
            @{ Code = 'Get-EmuConnection'; Remarks = 'Lists every flow of the only running instance.' }
            @{ Code = 'Get-EmuConnection -Instance pixel -Protocol Tcp -State Established'; Remarks = "Lists the established TCP flows of instance 'pixel'." }
            @{ Code = 'Get-EmuForward -Port 8080 | Get-EmuConnection | Sort-Object BytesToGuest -Descending'; Remarks = 'Shows the flows that came in through the forward on port 8080, busiest first.' }
            @{ Code = 'Get-EmuConnection -Watch -IntervalSeconds 5 | Where-Object BytesToGuestPerSecond -gt 1MB'; Remarks = 'Every 5 s, the flows taking more than 1 MiB/s into the guest, until Ctrl+C.' }
        )
    }
    'Get-EmuStat' = @{
        Synopsis    = 'Shows an instance''s counters.'
        Description = 'Returns frames and bytes each way, flows, forwards, drops by reason and the capture file of the instance. Takes instances from Get-EmuNet.'
        Examples    = @(
            @{ Code = 'Get-EmuStat'; Remarks = 'The counters of the only running instance.' }
            @{ Code = '(Get-EmuStat -Instance pixel).DropsByReason'; Remarks = "Why instance 'pixel' dropped frames, and how many." }
            @{ Code = 'Get-EmuStat -Watch | Format-Table Timestamp, BytesToGuestPerSecond, BytesFromGuestPerSecond'; Remarks = 'Bytes per second each way, every second, until Ctrl+C.' }
        )
    }
    'Start-EmuCapture' = @{
        Synopsis    = 'Captures the guest''s frames to a pcap file.'
        Description = 'Makes the instance write every frame to and from the guest into a pcap file (Wireshark, tshark -r, tcpdump -r) until Stop-EmuCapture. A capture already running writes Emunet.CaptureRunning; a file that cannot be written, Emunet.CaptureFailed.'
        Examples    = @(
            @{ Code = 'Start-EmuCapture ./guest.pcap'; Remarks = 'Captures the only running instance''s guest traffic to guest.pcap in the current folder.' }
            @{ Code = 'Start-EmuCapture /tmp/pixel.pcap -Instance pixel; Start-Sleep 10; Stop-EmuCapture pixel'; Remarks = "Ten seconds of instance 'pixel''s traffic." }
        )
    }
    'Stop-EmuCapture' = @{
        Synopsis    = 'Stops an instance''s capture.'
        Description = 'Stops the capture and closes its file; returns the file written (no file when none was running).'
        Examples    = @(
            @{ Code = 'Stop-EmuCapture'; Remarks = 'Stops the capture of the only running instance.' }
            @{ Code = 'Get-EmuNet | Stop-EmuCapture'; Remarks = 'Stops the captures of every instance.' }
        )
    }
    'New-EmuReverse' = @{
        Synopsis    = "Makes the guest's connections to 10.0.2.2:PORT reach a host address and port you choose (adb reverse, QEMU's guestfwd)."
        Description = "Adds a guest-to-host remap to the instance: new TCP connections (or UDP flows) the guest opens to -GuestAddress:-GuestPort (10.0.2.2, the host alias, by default; any free address of the guest network as QEMU's guestfwd) go to -HostAddress:-HostPort instead of 127.0.0.1 on the same port. A remap is an explicit grant: it works under -Restrict and -NoHostLoopback. The guest side remapped already writes Emunet.RemapConflict; a spec that is not valid writes Emunet.InvalidArgument."
        Examples    = @(
            @{ Code = 'New-EmuReverse -GuestPort 8000 -HostPort 9000'; Remarks = "The guest's 10.0.2.2:8000 reaches the host's 127.0.0.1:9000, as 'adb reverse tcp:8000 tcp:9000' does." }
            @{ Code = 'New-EmuReverse -GuestAddress 10.0.2.100 -GuestPort 80 -HostPort 8080'; Remarks = "The guest's 10.0.2.100:80 reaches the host's 127.0.0.1:8080 (QEMU's guestfwd=tcp:10.0.2.100:80-127.0.0.1:8080)." }
            @{ Code = "New-EmuReverse -Spec 'udp:5353:53', 'tcp:8000:9000'"; Remarks = 'Remaps in the emunet tool''s form.' }
        )
    }
    'Get-EmuReverse' = @{
        Synopsis    = "Lists an instance's guest-to-host remaps."
        Description = 'Lists the remaps of the instance (or the only one running); takes instances from Get-EmuNet by the pipeline.'
        Examples    = @(
            @{ Code = 'Get-EmuReverse'; Remarks = 'Every remap: the guest side and the host side it reaches.' }
            @{ Code = 'Get-EmuNet | Get-EmuReverse'; Remarks = 'The remaps of every running instance.' }
        )
    }
    'Remove-EmuReverse' = @{
        Synopsis    = 'Removes guest-to-host remaps.'
        Description = 'Removes the remap of a guest port (on 10.0.2.2 unless -GuestAddress names another); connections already open keep going. Takes remaps from Get-EmuReverse by the pipeline. A remap that does not exist writes Emunet.RemapNotFound.'
        Examples    = @(
            @{ Code = 'Remove-EmuReverse 8000'; Remarks = "Removes the remap of the guest's TCP port 8000 on 10.0.2.2." }
            @{ Code = 'Get-EmuReverse | Remove-EmuReverse -Force'; Remarks = 'Removes every remap without asking.' }
        )
    }
}
