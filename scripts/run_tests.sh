#!/usr/bin/env bash
# Runs every test file of the project in two `deno test` processes at once, the files dealt
# out between them (the slow ones first, so both take about as long), each process running its
# files one after another; each line of output is prefixed with its process ([1] or [2]).
# Exits non-zero when either process fails.
#
# Why two processes rather than `deno test --parallel`: the same two-way concurrency, with
# nothing shared between the halves, so one runaway test file takes down only its own half.
#
# A test process whose resident memory passes PRESYNC_TEST_MAX_RSS_MIB (default 6144; the
# whole suite one file at a time stays under 1 GiB) is killed with a message naming it, rather
# than taking the machine's memory and being OOM-killed with every other process. That is how
# the CI runs of 2026-12-03 and -04 died (19-23 GiB, exit 137): one seeded test failed an
# `assert.deepEqual` of two 64 KiB byte arrays, and node:assert builds the diff message of
# such arrays in gigabytes (fixtures/assert_bytes.ts compares them instead).
#
# Usage: scripts/run_tests.sh [extra deno test flags…]
set -uo pipefail
cd "$(dirname "$0")/.."
extra=("$@")

mapfile -t files < <(
  find . -path ./dist -prune -o -path ./node_modules -prune -o -path ./.git -prune -o \
    \( -name '*_test.ts' -o -name '*.test.ts' \) -print | LC_ALL=C sort
)
if [ "${#files[@]}" -eq 0 ]; then
  echo "run_tests.sh: no test files found" >&2
  exit 1
fi
# The slow files (real peers: Ceph, QEMU guests, kill -9 loops, whole agents) are dealt out
# first, one each in turn, then the rest, so both processes take about as long.
heavy='integration|kill|guest|rbd|rados|ceph|chaos|migrate|postcopy|failback|qemu'
mapfile -t ordered < <(
  printf '%s\n' "${files[@]}" | grep -E "$heavy"
  printf '%s\n' "${files[@]}" | grep -vE "$heavy"
)
first=() second=()
for i in "${!ordered[@]}"; do
  if ((i % 2 == 0)); then first+=("${ordered[$i]}"); else second+=("${ordered[$i]}"); fi
done
echo "run_tests.sh: ${#files[@]} test files in two processes (${#first[@]} and ${#second[@]})"

deno=${DENO:-deno}
statuses=$(mktemp -d)
trap 'rm -rf "$statuses"' EXIT
max_rss_mib=${PRESYNC_TEST_MAX_RSS_MIB:-6144}
# Runs `deno test -A ARGS…` with its lines prefixed by [TAG]; its pid and then its exit status
# go to files.
run() {
  local tag=$1
  shift
  {
    "$deno" test -A "$@" 2>&1 &
    echo $! >"$statuses/$tag.pid"
    wait $!
    echo $? >"$statuses/$tag"
  } | sed -u "s/^/[$tag] /"
}
# Every 2 s until both processes have ended: kills one whose resident memory is over the bound.
bound_memory() {
  while [ ! -e "$statuses/1" ] || [ ! -e "$statuses/2" ]; do
    sleep 2
    for tag in 1 2; do
      [ -e "$statuses/$tag" ] && continue
      pid=$(cat "$statuses/$tag.pid" 2>/dev/null) || continue
      rss_kib=$(awk '/^VmRSS:/ { print $2 }' "/proc/$pid/status" 2>/dev/null) || continue
      if [ -n "$rss_kib" ] && ((rss_kib / 1024 > max_rss_mib)); then
        echo "run_tests.sh: process [$tag] (pid $pid) holds $((rss_kib / 1024)) MiB, over" \
          "PRESYNC_TEST_MAX_RSS_MIB=$max_rss_mib: killed; the test allocating without bound" \
          "is the last one its [$tag] lines name" >&2
        kill -9 "$pid"
      fi
    done
  done
}
run 1 "${extra[@]}" "${first[@]}" &
run 2 "${extra[@]}" "${second[@]}" &
bound_memory &
wait

status=0
for tag in 1 2; do
  code=$(cat "$statuses/$tag" 2>/dev/null || echo "none")
  echo "run_tests.sh: process [$tag] exited with $code"
  [ "$code" = 0 ] || status=1
done
exit "$status"
