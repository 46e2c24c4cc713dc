#!/usr/bin/env bash
# Builds everything and runs every test: unit, tool, Pester (module) and integration tests with the real guest, and a
# short fuzz run of every target and the benchmark's smoke run.
# Installs what it needs first (scripts/setup.sh). Prints a closing "N passed, N failed" line.
set -uo pipefail
cd "$(dirname "$0")"
bash scripts/setup.sh || exit 1
log=$(mktemp)
trap 'rm -f "$log"' EXIT
status=0
dotnet test Emunet.sln -c Release --no-build -nologo 2>&1 | tee -a "$log" || status=1
if [ -f tests/Module/run-pester.ps1 ]; then
  dotnet tool run pwsh -NoProfile -File tests/Module/run-pester.ps1 2>&1 | tee -a "$log" || status=1
fi
# The fuzz smoke run: every AFL++ target for 3 s, two at a time (tests/Emunet.Fuzz/run-fuzz.sh; longer runs in DEVELOPERS.md).
bash tests/Emunet.Fuzz/run-fuzz.sh --smoke 2>&1 | tee -a "$log" || status=1
# The benchmark's smoke run (tests/Emunet.Bench --smoke): Emunet's stream link and the guest-loopback limit, one
# repetition, 2 s per figure, so the benchmark cannot rot; it checks that the table, JSON and chart hold every figure,
# never a speed, and closes with "Bench: N passed, N failed".
dotnet tests/Emunet.Bench/bin/Release/net10.0/Emunet.Bench.dll --smoke 2>&1 | tee -a "$log" || status=1
passed=$(grep -oE 'Passed: +[0-9]+' "$log" | awk '{s+=$2} END {print s+0}')
failed=$(grep -oE 'Failed: +[0-9]+' "$log" | awk '{s+=$2} END {print s+0}')
# Pester, the fuzz run and the bench smoke close with "Pester: N passed, N failed", "Fuzz: …" and "Bench: …".
runner_passed=$(grep -oE '^(Pester|Fuzz|Bench): [0-9]+ passed' "$log" | awk '{s+=$2} END {print s+0}')
runner_failed=$(grep -oE '^(Pester|Fuzz|Bench): [0-9]+ passed, [0-9]+ failed' "$log" | awk '{s+=$4} END {print s+0}')
passed=$((passed + runner_passed)); failed=$((failed + runner_failed))
[ "$failed" -eq 0 ] || status=1
# Repeat every failure (name, message and the first lines of its stack) at the end, where a truncated log still shows it.
if [ "$failed" -gt 0 ]; then
  echo "--- failures ---"
  # dotnet test: the "Failed name [time]" line and 24 after it; Pester: the "[-] name" line and its indented message.
  awk '/^ +Failed [^:]+ \[/ {n=24} /^\[-\] / {print; p=1; next} p && /^    / {print; next} {p=0} n>0 {print; n--}' "$log" | head -200
  echo "--- end of failures ---"
fi
[ "$passed" -gt 0 ] || status=1
echo "$passed passed, $failed failed"
exit $status
