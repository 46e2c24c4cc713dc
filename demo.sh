#!/usr/bin/env bash
# The main job: boots the test guest on Emunet, opens a host port into it with New-EmuForward, talks to the app
# inside, and shows Get-EmuConnection | Format-Table (see README). Optional argument: the host port (default 10977).
set -euo pipefail
cd "$(dirname "$0")"
bash scripts/setup.sh
bash scripts/build-module.sh Release >/dev/null
exec dotnet run --project tests/Emunet.Demo -c Release --no-build -- "$@"
