#!/usr/bin/env bash
# The main job: boots the test guest on Emunet and shows it working (see README).
set -euo pipefail
cd "$(dirname "$0")"
bash scripts/setup.sh
exec dotnet run --project tests/Emunet.Demo -c Release --no-build -- "$@"
