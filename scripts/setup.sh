#!/usr/bin/env bash
# Installs what Emunet's build, tests and demo need on Debian 12 (root, or sudo), then builds everything.
# Idempotent: quick when all is there.
set -euo pipefail
cd "$(dirname "$0")/.."

pkgs="qemu-system-x86 busybox-static cpio iperf3 passt tshark socat afl++ gcc libc6-dev clang zlib1g-dev"
missing=""
for p in $pkgs; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
done
sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo"
if [ -n "$missing" ] || [ -z "$(apt-cache depends linux-image-amd64 2>/dev/null | grep 'Depends: linux-image-[0-9]')" ]; then
  echo "setup: installing Debian packages:${missing:- (package lists only)}"
  export DEBIAN_FRONTEND=noninteractive
  $sudo apt-get update -q >/dev/null
  [ -z "$missing" ] || $sudo apt-get install -y -q --no-install-recommends $missing >/dev/null
fi

dotnet tool restore >/dev/null
dotnet build Emunet.sln -c Release -nologo -v q -clp:ErrorsOnly
# The engine as one native executable (NativeAOT, clang links it): build/native/emunet, the same commands as the
# dotnet tool, without the JIT and the runtime's mapped assemblies (about a third of the tool's resident memory).
bash scripts/publish-native.sh >/dev/null
bash tests/guest/build-guest.sh
