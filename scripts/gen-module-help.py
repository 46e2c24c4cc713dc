#!/usr/bin/env python3
"""Writes src/Module/en-US/Emunet.Module.dll-Help.xml (MAML) from the cmdlet descriptions below.
Run after changing a cmdlet's parameters; tests/Module checks that every cmdlet has examples and every parameter is described."""
from xml.sax.saxutils import escape
import os

INSTANCE = ("Instance", "String", False, None, "True (ByPropertyName)",
            "The instance to use. May be left out when exactly one runs; when several run the error "
            "(ID Emunet.AmbiguousInstance) names them. Tab completion offers the running instances.")

CMDLETS = [
  dict(name="Start-EmuNet", synopsis="Starts an Emunet engine in the background and returns it.",
       description="Runs 'emunet run' from the module folder with the dotnet host as its own background process (a new session: it outlives this PowerShell), waits until its control socket answers and returns the instance. The engine's log is NAME.log in the runtime folder ($env:EMUNET_RUNTIME_DIR, else $XDG_RUNTIME_DIR/emunet, else ~/.emunet/run). Errors: Emunet.InstanceExists (the name is taken), Emunet.StartFailed (the engine did not start; the message carries its log), Emunet.ToolNotFound.",
       params=[("Name", "String", False, 0, "False", "The instance name (default 'default'). Its control socket is NAME.sock in the runtime folder."),
               ("Socket", "String", False, None, "False", "The QEMU stream socket to serve: a Unix socket path or tcp:127.0.0.1:PORT. Default: net/NAME.sock in the runtime folder."),
               ("VhostUser", "String", True, None, "False", "Serve a vhost-user virtio-net device on this Unix socket path instead of a stream socket."),
               ("Forward", "String[]", False, None, "False", "Forwards to open at start: tcp:10977, tcp:127.0.0.1:8080:80, udp:5353:53 or hostfwd=tcp:127.0.0.1:8080-:80."),
               ("Capture", "String", False, None, "False", "Capture every frame to and from the guest into this pcap file."),
               ("LogLevel", "String", False, None, "False", "Least severe messages written to the instance's log NAME.log: Trace, Debug, Information (default), Warning, Error, Critical or None."),
               ("TimeoutSeconds", "Int32", False, None, "False", "How long to wait for the engine to answer (default 30).")],
       sets=[["Name", "Socket", "Forward", "Capture", "LogLevel", "TimeoutSeconds"], ["Name", "VhostUser", "Forward", "Capture", "LogLevel", "TimeoutSeconds"]],
       inputs="None", outputs="Emunet.Module.EmuInstance", whatif=True,
       examples=[("Start-EmuNet -Name pixel -Forward tcp:10977",
                  "Starts instance 'pixel' serving net/pixel.sock in the runtime folder, with host port 10977 opened into the guest's port 10977. Attach QEMU with -netdev stream,id=n0,server=off,addr.type=unix,addr.path=<Device path> -device virtio-net-pci,netdev=n0."),
                 ("Start-EmuNet -Name qemu1 -Socket /tmp/qemu1.sock -Capture ./qemu1.pcap -LogLevel Debug",
                  "Serves /tmp/qemu1.sock and captures all guest traffic to qemu1.pcap.")]),
  dict(name="Stop-EmuNet", synopsis="Stops Emunet instances cleanly.",
       description="Asks each instance to shut down through its control socket (listeners closed, connections reset, sockets removed) and waits until it has gone. Takes names from the pipeline, by value or by the Name property of Get-EmuNet's objects.",
       params=[("Name", "String[]", False, 0, "True (ByValue, ByPropertyName)", "The instances to stop. May be left out when exactly one runs."),
               ("TimeoutSeconds", "Int32", False, None, "False", "How long to wait for each instance to go (default 15); then the error Emunet.StopTimeout is written.")],
       sets=[["Name", "TimeoutSeconds"]], inputs="System.String, Emunet.Module.EmuInstance", outputs="None", whatif=True,
       examples=[("Stop-EmuNet pixel", "Stops instance 'pixel'."),
                 ("Get-EmuNet | Stop-EmuNet -Confirm:$false", "Stops every running instance without asking.")]),
  dict(name="Get-EmuNet", synopsis="Lists the running Emunet instances.",
       description="Lists the instances whose control sockets answer in the runtime folder, and removes the sockets of instances that died. A name without wildcards that does not run writes the error Emunet.InstanceNotFound.",
       params=[("Name", "String[]", False, 0, "True (ByPropertyName)", "Only these instances; wildcards are allowed.")],
       sets=[["Name"]], inputs="None", outputs="Emunet.Module.EmuInstance", whatif=False,
       examples=[("Get-EmuNet", "Lists every running instance: name, process, device, whether a guest is attached."),
                 ("Get-EmuNet pix*", "Lists the instances whose names start with 'pix'.")]),
  dict(name="New-EmuForward", synopsis="Opens a host port straight into the guest.",
       description="Makes the instance listen on a host port and send each connection (or datagram) through its stack into the guest's port, arriving from 10.0.2.2: no adb, no extra hop. The host address is 127.0.0.1 unless -Address says otherwise. A port already in use writes the error Emunet.PortInUse; a forward the instance already has writes Emunet.ForwardConflict.",
       params=[("Port", "Int32", True, 0, "True (ByPropertyName)", "The host port; 0 takes any free port (then give -GuestPort)."),
               ("GuestPort", "Int32", False, 1, "True (ByPropertyName)", "The guest's port; defaults to -Port."),
               ("Protocol", "ForwardProtocol", False, None, "True (ByPropertyName)", "Tcp (default) or Udp."),
               ("Address", "String", False, None, "True (ByPropertyName)", "The host IPv4 address to listen on (default 127.0.0.1)."),
               INSTANCE],
       sets=[["Port", "GuestPort", "Protocol", "Address", "Instance"]], inputs="None", outputs="Emunet.Module.EmuForward", whatif=True,
       examples=[("New-EmuForward -Port 10977", "Host 127.0.0.1:10977 reaches the guest's TCP port 10977."),
                 ("New-EmuForward -Port 8080 -GuestPort 80 -Instance pixel", "Host 127.0.0.1:8080 reaches port 80 of the guest of instance 'pixel'."),
                 ("New-EmuForward -Port 5353 -GuestPort 53 -Protocol Udp", "Forwards UDP datagrams from host port 5353 to the guest's port 53."),
                 ("$f = New-EmuForward -Port 0 -GuestPort 22; ssh -p $f.HostPort user@127.0.0.1", "Takes any free host port for the guest's SSH server.")]),
  dict(name="Get-EmuForward", synopsis="Lists an instance's forwards.",
       description="Lists the forwards of the instance with their bound host port, guest port and connection counts.",
       params=[("Port", "Int32[]", False, 0, "True (ByPropertyName)", "Only forwards on these host ports."),
               ("Protocol", "ForwardProtocol", False, None, "False", "Only Tcp or only Udp forwards."),
               INSTANCE],
       sets=[["Port", "Protocol", "Instance"]], inputs="None", outputs="Emunet.Module.EmuForward", whatif=False,
       examples=[("Get-EmuForward", "Lists the forwards of the only running instance."),
                 ("Get-EmuForward -Instance pixel -Protocol Udp", "Lists the UDP forwards of instance 'pixel'.")]),
  dict(name="Remove-EmuForward", synopsis="Removes forwards.",
       description="Closes the host listeners of forwards. Takes Get-EmuForward's objects from the pipeline, or the Port, Protocol, Address and Instance properties of any object. A forward that does not exist writes the error Emunet.ForwardNotFound for that item and goes on with the next.",
       params=[("InputObject", "EmuForward[]", True, None, "True (ByValue)", "Forwards from Get-EmuForward or New-EmuForward."),
               ("Port", "Int32", True, 0, "True (ByPropertyName)", "The forward's host port."),
               ("Protocol", "ForwardProtocol", False, None, "True (ByPropertyName)", "Tcp (default) or Udp."),
               ("Address", "String", False, None, "True (ByPropertyName)", "The forward's host address (default 127.0.0.1)."),
               INSTANCE,
               ("Force", "SwitchParameter", False, None, "False", "Also reset the connections that came in through the forward, and do not ask for confirmation."),
               ("PassThru", "SwitchParameter", False, None, "False", "Write the removed forwards.")],
       sets=[["Port", "Protocol", "Address", "Instance", "Force", "PassThru"], ["InputObject", "Force", "PassThru"]],
       inputs="Emunet.Module.EmuForward", outputs="Emunet.Module.EmuForward", whatif=True,
       examples=[("Remove-EmuForward 8080", "Removes the TCP forward on host port 8080 of the only running instance."),
                 ("Get-EmuForward -Instance pixel | Remove-EmuForward -Force", "Removes every forward of instance 'pixel' and resets their connections.")]),
  dict(name="Get-EmuConnection", synopsis="Lists the guest's connections.",
       description="Lists the flows of the instance's NAT table: the guest's own connections (Outbound) and those that came in through a forward (Forwarded), with the guest's endpoint, its peer as the guest sees it, the host socket's endpoints, state, bytes each way and age.",
       params=[INSTANCE[:4] + ("True (ByPropertyName)", INSTANCE[5]),
               ("Protocol", "FlowProtocol", False, None, "False", "Only Tcp, Udp or Icmp flows."),
               ("Port", "Int32", False, None, "False", "Only flows with this port at either end."),
               ("State", "String", False, None, "False", "Only flows in this state, e.g. Established.")],
       sets=[["Instance", "Protocol", "Port", "State"]], inputs="None", outputs="Emunet.Module.EmuConnection", whatif=False,
       examples=[("Get-EmuConnection", "Lists every flow of the only running instance."),
                 ("Get-EmuConnection -Instance pixel -Protocol Tcp -State Established", "Lists the established TCP flows of instance 'pixel'."),
                 ("Get-EmuConnection -Port 8080 | Sort-Object BytesToGuest -Descending", "Shows the flows on port 8080, busiest first.")]),
]

M = 'xmlns:maml="http://schemas.microsoft.com/maml/2004/10" xmlns:command="http://schemas.microsoft.com/maml/dev/command/2004/10" xmlns:dev="http://schemas.microsoft.com/maml/dev/2004/10"'

def para(t): return f"<maml:para>{escape(t)}</maml:para>"

def param_xml(p, indent="      "):
    name, typ, req, pos, pipe, desc = p
    position = "named" if pos is None else str(pos)
    sw = typ == "SwitchParameter"
    value = "" if sw else f'\n{indent}  <command:parameterValue required="true" variableLength="false">{typ}</command:parameterValue>'
    return (f'{indent}<command:parameter required="{str(req).lower()}" variableLength="{str(typ.endswith("[]")).lower()}" globbing="false" pipelineInput="{pipe}" position="{position}" aliases="none">\n'
            f'{indent}  <maml:name>{name}</maml:name>\n'
            f'{indent}  <maml:description>{para(desc)}</maml:description>{value}\n'
            f'{indent}  <dev:type><maml:name>{typ}</maml:name></dev:type>\n'
            f'{indent}  <dev:defaultValue>None</dev:defaultValue>\n'
            f'{indent}</command:parameter>\n')

COMMON_SHOULD = [("WhatIf", "SwitchParameter", False, None, "False", "Shows what would happen without doing it."),
                 ("Confirm", "SwitchParameter", False, None, "False", "Asks before doing it.")]

out = ['<?xml version="1.0" encoding="utf-8"?>', '<helpItems schema="maml" xmlns="http://msh">']
for c in CMDLETS:
    verb, noun = c["name"].split("-")
    params = {p[0]: p for p in c["params"]}
    allp = list(c["params"]) + (COMMON_SHOULD if c["whatif"] else [])
    out.append(f'<command:command {M}>')
    out.append(f'  <command:details><command:name>{c["name"]}</command:name><command:verb>{verb}</command:verb><command:noun>{noun}</command:noun>'
               f'<maml:description>{para(c["synopsis"])}</maml:description></command:details>')
    out.append(f'  <maml:description>{para(c["description"])}</maml:description>')
    out.append('  <command:syntax>')
    for s in c["sets"]:
        out.append(f'    <command:syntaxItem><maml:name>{c["name"]}</maml:name>')
        for n in s: out.append(param_xml(params[n], "      ").rstrip("\n"))
        if c["whatif"]:
            for p in COMMON_SHOULD: out.append(param_xml(p, "      ").rstrip("\n"))
        out.append('    </command:syntaxItem>')
    out.append('  </command:syntax>')
    out.append('  <command:parameters>')
    for p in allp: out.append(param_xml(p, "    ").rstrip("\n"))
    out.append('  </command:parameters>')
    out.append(f'  <command:inputTypes><command:inputType><dev:type><maml:name>{c["inputs"]}</maml:name></dev:type><maml:description>{para("")}</maml:description></command:inputType></command:inputTypes>')
    out.append(f'  <command:returnValues><command:returnValue><dev:type><maml:name>{c["outputs"]}</maml:name></dev:type><maml:description>{para("")}</maml:description></command:returnValue></command:returnValues>')
    out.append('  <command:examples>')
    for i, (code, remark) in enumerate(c["examples"], 1):
        out.append(f'    <command:example><maml:title>-------------------------- Example {i} --------------------------</maml:title>'
                   f'<dev:code>PS&gt; {escape(code)}</dev:code><dev:remarks>{para(remark)}</dev:remarks></command:example>')
    out.append('  </command:examples>')
    out.append('  <command:relatedLinks>' + "".join(
        f'<maml:navigationLink><maml:linkText>{o["name"]}</maml:linkText><maml:uri></maml:uri></maml:navigationLink>'
        for o in CMDLETS if o is not c) + '</command:relatedLinks>')
    out.append('</command:command>')
out.append('</helpItems>')
path = os.path.join(os.path.dirname(__file__), "..", "src", "Module", "en-US", "Emunet.Module.dll-Help.xml")
with open(path, "w", encoding="utf-8") as f: f.write("\n".join(out) + "\n")
print(f"wrote {os.path.normpath(path)}")
