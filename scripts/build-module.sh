#!/usr/bin/env bash
# Lays the PowerShell module out as users get it, in build/module/Emunet/: the manifest (RootModule beside it), the
# cmdlet assembly and its help, the format file, and the engine tool (Emunet.Tool.dll, which Start-EmuNet runs with the
# dotnet host) with everything it needs. Install by copying that folder into a folder of $env:PSModulePath.
# Usage: scripts/build-module.sh [Release|Debug]   (default Release)
set -euo pipefail
cd "$(dirname "$0")/.."
config="${1:-Release}"
out=build/module/Emunet
rm -rf "$out"
mkdir -p "$out"
dotnet publish src/Tool -c "$config" -o "$out" -nologo -v q -clp:ErrorsOnly
dotnet publish src/Module -c "$config" -o "$out" -nologo -v q -clp:ErrorsOnly
sed "s#RootModule *= *'[^']*'#RootModule           = 'Emunet.Module.dll'#" Emunet.psd1 > "$out/Emunet.psd1"
cp Emunet.format.ps1xml "$out/"
# The help the module build generated from the cmdlets (src/Module/Emunet.Module.csproj, scripts/gen-module-help.ps1).
mkdir -p "$out/en-US"
cp en-US/Emunet.Module.dll-Help.xml "$out/en-US/"
# The tool's published apphost and debug symbols are not part of the module.
rm -f "$out/Emunet.Tool" "$out"/*.pdb
test -f "$out/en-US/Emunet.Module.dll-Help.xml"
test -f "$out/Emunet.Tool.runtimeconfig.json"
echo "Module laid out in $out"
