#!/usr/bin/env bash
# Runs every test file of the project in two workers at once, each a `deno test` process at a
# time; each line of output is prefixed with its worker ([1] or [2]). The workers take their
# next piece of work from one queue until it is empty: first the slow files one by one (real
# peers: Ceph, QEMU guests, kill -9 loops, whole agents), then the other files in batches, so
# both finish about together. Exits non-zero when any piece fails.
#
# Why separate processes rather than `deno test --parallel`: the same two-way concurrency, with
# nothing shared between pieces, so one runaway test file takes down only its own piece.
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
heavy='integration|kill|guest|rbd|rados|ceph|chaos|migrate|postcopy|failback|qemu'
batches=6
statuses=$(mktemp -d)
trap 'rm -rf "$statuses"' EXIT
# The queue: one line per piece of work, the files of one `deno test` run.
{
  printf '%s\n' "${files[@]}" | grep -E "$heavy"
  printf '%s\n' "${files[@]}" | grep -vE "$heavy" |
    awk -v n="$batches" '{ batch[NR % n] = batch[NR % n] " " $0 } END { for (i = 0; i < n; i++) if (batch[i] != "") print substr(batch[i], 2) }'
} >"$statuses/queue"
pieces=$(wc -l <"$statuses/queue")
echo 0 >"$statuses/next"
echo "run_tests.sh: ${#files[@]} test files in $pieces pieces, two workers"

deno=${DENO:-deno}
max_rss_mib=${PRESYNC_TEST_MAX_RSS_MIB:-6144}
# Prints the next piece of the queue and takes it (run in a subshell: it holds the queue's
# lock on descriptor 9 until it ends), or fails when none is left.
take() {
  local at
  exec 9>>"$statuses/lock"
  flock 9
  read -r at <"$statuses/next"
  echo $((at + 1)) >"$statuses/next"
  ((at < pieces)) || return 1
  sed -n "$((at + 1))p" "$statuses/queue"
}
# Worker TAG: runs `deno test -A` on each piece it takes, its lines prefixed by [TAG]; the pid
# of the run goes to a file (for bound_memory), each failed piece's exit status to another.
work() {
  local tag=$1 piece pid code
  while piece=$(take); do
    read -ra piece_files <<<"$piece"
    "$deno" test -A "${extra[@]}" "${piece_files[@]}" 2>&1 &
    pid=$!
    echo "$pid" >"$statuses/$tag.pid"
    wait "$pid"
    code=$?
    rm -f "$statuses/$tag.pid"
    if [ "$code" != 0 ]; then
      echo "run_tests.sh: exit status $code from ${piece_files[*]}"
      echo "$code ${piece_files[*]}" >>"$statuses/failed"
    fi
  done 2>&1 | sed -u "s/^/[$tag] /"
  touch "$statuses/$tag.done"
}
# Every 2 s until both workers are done: kills a run whose resident memory is over the bound.
bound_memory() {
  while [ ! -e "$statuses/1.done" ] || [ ! -e "$statuses/2.done" ]; do
    sleep 2
    for tag in 1 2; do
      pid=$(cat "$statuses/$tag.pid" 2>/dev/null) || continue
      rss_kib=$(awk '/^VmRSS:/ { print $2 }' "/proc/$pid/status" 2>/dev/null) || continue
      if [ -n "$rss_kib" ] && ((rss_kib / 1024 > max_rss_mib)); then
        echo "run_tests.sh: worker [$tag]'s deno test (pid $pid) holds $((rss_kib / 1024)) MiB," \
          "over PRESYNC_TEST_MAX_RSS_MIB=$max_rss_mib: killed; the test allocating without" \
          "bound is the last one its [$tag] lines name" >&2
        kill -9 "$pid"
      fi
    done
  done
}
work 1 &
work 2 &
bound_memory &
wait

if [ -s "$statuses/failed" ]; then
  echo "run_tests.sh: $(wc -l <"$statuses/failed") of $pieces pieces failed (exit status, files):"
  cat "$statuses/failed"
  exit 1
fi
echo "run_tests.sh: all $pieces pieces passed"
