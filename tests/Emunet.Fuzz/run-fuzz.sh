#!/usr/bin/env bash
# Fuzzes Emunet with AFL++ over SharpFuzz: builds tests/Emunet.Fuzz, instruments a copy of Emunet.Engine.dll in
# build/fuzz/app/TARGET (app/smoke for --smoke), and runs afl-fuzz on one target from its seed corpus (corpus/TARGET).
# Findings land in build/fuzz/findings/TARGET; each crash is replayed once to show its stack trace.
#
#   run-fuzz.sh TARGET SECONDS   one target for that long (targets: frame dhcp dns virtqueue control vhost-user)
#   run-fuzz.sh --smoke          every target for a few seconds, two at a time; exits non-zero if AFL found a crash or
#                                could not run
#
# The last line is "Fuzz: N passed, M failed" (a target passes when AFL ran it and found no crash). As root the
# fuzzer runs in a network namespace of its own (loopback only), so no input can reach another process's sockets.
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
targets="frame dhcp dns virtqueue control vhost-user"
smoke_seconds=3
out="$root/build/fuzz"

usage() { echo "usage: $0 TARGET SECONDS | $0 --smoke   (targets: $targets)" >&2; exit 2; }

prepare() {
  command -v afl-fuzz >/dev/null || { echo "fuzz: afl-fuzz not found (Debian package afl++; scripts/setup.sh installs it)" >&2; return 1; }
  mkdir -p "$out"
  # One build at a time: runs of several targets may start together.
  (cd "$root" && dotnet tool restore >/dev/null && flock "$out/build.lock" dotnet build tests/Emunet.Fuzz -c Release -nologo -v q -clp:ErrorsOnly) \
    >"$out/build-$label.log" 2>&1 || { cat "$out/build-$label.log" >&2; return 1; }
  rm -rf "$app" && mkdir -p "$(dirname "$app")" && flock "$out/build.lock" cp -r "$here/bin/Release/net10.0" "$app" || return 1
  # Only the engine is instrumented: coverage of the harness and the runtime would be noise to AFL.
  (cd "$root" && dotnet tool run sharpfuzz "$app/Emunet.Engine.dll") >"$app.instrument.log" 2>&1 \
    || { cat "$app.instrument.log" >&2; return 1; }
}

# fuzz TARGET SECONDS: runs afl-fuzz; prints one summary line; returns 0 clean, 1 crash found, 2 could not run.
fuzz() {
  local target=$1 seconds=$2 findings="$out/findings/$1"
  [ -d "$here/corpus/$target" ] || { echo "fuzz $target: no seed corpus at corpus/$target"; return 2; }
  rm -rf "$findings" && mkdir -p "$findings"
  local netns=()
  if [ "$(id -u)" -eq 0 ] && unshare --net true 2>/dev/null; then netns=(unshare --net sh -c 'ip link set lo up 2>/dev/null; exec "$@"' sh); fi
  local attempt rc
  for attempt in 1 2; do
    # dotnet is not an AFL-instrumented binary (the coverage comes from the instrumented engine through SharpFuzz).
    AFL_SKIP_BIN_CHECK=1 AFL_SKIP_CPUFREQ=1 AFL_I_DONT_CARE_ABOUT_MISSING_CRASHES=1 AFL_NO_AFFINITY=1 AFL_NO_UI=1 \
    AFL_FAST_CAL=1 AFL_CMPLOG_ONLY_NEW=1 AFL_FORKSRV_INIT_TMOUT=60000 \
      "${netns[@]}" afl-fuzz -i "$here/corpus/$target" -o "$findings" -V "$seconds" -t 5000 -m none \
      -- dotnet "$app/Emunet.Fuzz.dll" "$target" >"$findings/afl.log" 2>&1
    rc=$?
    # afl-fuzz's start-up check once saw an empty coverage map after the first seed on a loaded machine (the same
    # target and seeds ran clean before and after): a start-up failure, not a finding, so it is tried once more, and
    # said so. A second failure is reported below.
    grep -q "No instrumentation detected" "$findings/afl.log" && [ "$attempt" -eq 1 ] || break
    echo "fuzz $target: afl-fuzz saw no instrumentation on its first seed; starting it once more"
    rm -rf "$findings" && mkdir -p "$findings"
  done
  local stats="$findings/default/fuzzer_stats"
  local execs=0
  [ -f "$stats" ] && execs=$(awk -F: '/^execs_done/ {gsub(/ /, "", $2); print $2}' "$stats")
  if [ "$rc" -ne 0 ] || [ "${execs:-0}" -eq 0 ]; then
    echo "fuzz $target: afl-fuzz could not run (exit $rc, ${execs:-0} executions); its log:"
    tail -n 25 "$findings/afl.log" | sed 's/\x1b\[[0-9;]*m//g'
    return 2
  fi
  local crashes=() hangs
  mapfile -t crashes < <(find "$findings/default/crashes" -type f -name 'id:*' 2>/dev/null | sort)
  hangs=$(find "$findings/default/hangs" -type f -name 'id:*' 2>/dev/null | wc -l)
  local paths
  paths=$(awk -F: '/^corpus_count/ {gsub(/ /, "", $2); print $2}' "$stats")
  echo "fuzz $target: ${seconds}s, $execs executions, $paths inputs in the queue, ${#crashes[@]} crashes, $hangs hangs ($findings)"
  local c
  for c in "${crashes[@]}"; do
    echo "  crash $c:"
    # Replayed outside AFL: the exception and its stack trace (the subshell keeps the shell's "Aborted" note out).
    ( dotnet "$app/Emunet.Fuzz.dll" "$target" <"$c" 2>&1; true ) 2>/dev/null | head -n 20 | sed 's/^/    /'
  done
  [ "${#crashes[@]}" -eq 0 ]
}

case "${1:-}" in
  --smoke)
    [ $# -eq 1 ] || usage
    selected=$targets seconds=$smoke_seconds label=smoke
    export AFL_BENCH_UNTIL_CRASH=1 # stop at the first crash: one is enough to fail
    ;;
  ""|-*) usage ;;
  *)
    [ $# -eq 2 ] && [[ $2 =~ ^[0-9]+$ ]] || usage
    [[ " $targets " == *" $1 "* ]] || usage
    selected=$1 seconds=$2 label=$1
    ;;
esac

# Each run instruments its own copy, so runs of different targets can go side by side.
app="$out/app/$label"
passed=0 failed=0
if ! prepare; then
  failed=$(wc -w <<<"$selected")
else
  # One afl-fuzz per core (at most two), each target's report printed whole, in order.
  lanes=$(nproc 2>/dev/null || echo 1); [ "$lanes" -gt 2 ] && lanes=2
  set -- $selected
  while [ $# -gt 0 ]; do
    batch=("${@:1:$lanes}")
    shift "${#batch[@]}"
    pids=()
    for t in "${batch[@]}"; do fuzz "$t" "$seconds" >"$out/report-$t.txt" 2>&1 & pids+=($!); done
    for i in "${!batch[@]}"; do
      if wait "${pids[$i]}"; then passed=$((passed + 1)); else failed=$((failed + 1)); fi
      cat "$out/report-${batch[$i]}.txt"
    done
  done
fi
echo "Fuzz: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
