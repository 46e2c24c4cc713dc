#!/usr/bin/env bash
# Publishes the emunet tool as one native executable (NativeAOT): build/native/emunet. Same commands and options as
# the dotnet tool; starts without a JIT and keeps about a third of its resident memory (README "Native engine").
# Needs clang (Debian: apt-get install clang zlib1g-dev; scripts/setup.sh installs it). Incremental: quick when
# nothing changed.
set -euo pipefail
cd "$(dirname "$0")/.."
case "$(uname -m)" in
  x86_64) rid=linux-x64 ;;
  aarch64) rid=linux-arm64 ;;
  *) echo "publish-native: no NativeAOT runtime identifier for $(uname -m); use the dotnet tool" >&2; exit 1 ;;
esac
command -v clang >/dev/null || { echo "publish-native: clang is not installed (apt-get install clang zlib1g-dev)" >&2; exit 1; }
out=build/native
# Nothing in the sources or project files changed since the last publish: keep it (the compile takes about a minute).
if [ -x "$out/emunet" ] && [ -z "$(find src Directory.Build.props -newer "$out/emunet" -type f -print -quit)" ]; then
  echo "publish-native: $out/emunet (up to date)"
  exit 0
fi
dotnet publish src/Tool/Emunet.Tool.csproj -c Release -r "$rid" -p:PublishAot=true -p:PackAsTool=false \
  -o "$out/publish" -nologo -v q -clp:ErrorsOnly
cp "$out/publish/Emunet.Tool" "$out/emunet.tmp" && mv -f "$out/emunet.tmp" "$out/emunet"
echo "publish-native: $out/emunet"
