#!/usr/bin/env bash
# Runs every test file of the project in two workers at once, each a `deno test` process at a
# time; each line of output is prefixed with its worker ([1] or [2]). The workers take their
# next piece of work from one queue until it is empty: first the slow files one by one (real
# peers: Ceph, QEMU guests, kill -9 loops, whole agents), then the other files in batches, so
# both finish about together. Exits non-zero when any piece fails.
#
# Why separate processes rather than `deno test --parallel`: the same two-way concurrency, with
# nothing shared between pieces, so one runaway test file takes down only its own piece. Each
# run has a session of its own: a process it leaves behind (a daemon a test did not end, which
# would keep its ports and memory from the runs after it) fails the piece and is ended, and INT
# or TERM ends the running pieces with everything they started.
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
for tool in flock setsid ps; do
  command -v "$tool" >/dev/null || {
    echo "run_tests.sh: $tool is missing (Debian: util-linux, procps)" >&2
    exit 1
  }
done
heavy='integration|kill|guest|rbd|rados|ceph|chaos|migrate|postcopy|failback|qemu'
batches=6
statuses=$(mktemp -d)
trap 'rm -rf "$statuses"' EXIT
# The queue: one line per piece of work, the files of one `deno test` run separated by tabs.
{
  printf '%s\n' "${files[@]}" | grep -E "$heavy"
  printf '%s\n' "${files[@]}" | grep -vE "$heavy" |
    awk -v n="$batches" '{ batch[NR % n] = batch[NR % n] "\t" $0 } END { for (i = 0; i < n; i++) if (batch[i] != "") print substr(batch[i], 2) }'
} >"$statuses/queue"
pieces=$(wc -l <"$statuses/queue")
echo 0 >"$statuses/next"
echo "run_tests.sh: ${#files[@]} test files in $pieces pieces, two workers"

deno=${DENO:-deno}
max_rss_mib=${PRESYNC_TEST_MAX_RSS_MIB:-6144}
# Prints the next piece of the queue and takes it (run in a subshell: it holds the queue's
# lock on descriptor 9 until it ends), or fails when none is left or the run is stopping.
take() {
  local at
  exec 9>>"$statuses/lock"
  flock 9
  [ ! -e "$statuses/stop" ] || return 1
  read -r at <"$statuses/next"
  echo $((at + 1)) >"$statuses/next"
  ((at < pieces)) || return 1
  sed -n "$((at + 1))p" "$statuses/queue"
}
# The live (not zombie) processes of session SID, one pid per line.
session_pids() {
  ps -o pid=,stat= --sid "$1" | awk '$2 !~ /^Z/ { print $1 }'
}
# Ends every process of session SID: TERM, then KILL after 5 s.
end_session() {
  local sid=$1 i
  for ((i = 0; i < 10; i++)); do
    [ -n "$(session_pids "$sid")" ] || return 0
    kill -TERM $(session_pids "$sid") 2>/dev/null
    sleep 0.5
  done
  kill -KILL $(session_pids "$sid") 2>/dev/null
}
# Worker TAG: runs `deno test -A` on each piece it takes, in a session of its own so that
# whatever the run starts can be found and ended with it; its lines are prefixed by [TAG]. The
# session's id goes to a file (for bound_memory and stop), each piece's exit status to `ran`,
# each failed piece's to `failed` ("left" for a run that passed but left processes behind).
# A signal to the whole process group (Ctrl-C, a terminal hanging up) is the main shell's to
# handle (see stop): the worker and its output filter go on until the piece is ended, and take
# no other.
work() {
  local tag=$1
  trap ':' INT TERM HUP
  {
    trap ':' INT TERM HUP
    local piece pid code left i
    while piece=$(take); do
      IFS=$'\t' read -ra piece_files <<<"$piece"
      setsid "$deno" test -A "${extra[@]}" "${piece_files[@]}" 2>&1 &
      pid=$!
      echo "$pid" >"$statuses/$tag.pid"
      # A trapped signal ends `wait` early; the run's own status comes once it has ended.
      wait "$pid"
      code=$?
      while kill -0 "$pid" 2>/dev/null; do
        wait "$pid"
        code=$?
      done
      # A process the run left behind (a daemon a test did not end) would keep the ports and
      # memory it holds from the next runs: name it, end it, and fail the piece.
      for ((i = 0; i < 10; i++)); do
        left=$(ps -o pid=,args= -p "$(session_pids "$pid" | paste -sd,)" 2>/dev/null)
        [ -n "$left" ] || break
        sleep 0.2
      done
      if [ -n "$left" ]; then
        echo "run_tests.sh: ${piece_files[*]} left processes behind; ending them:"
        echo "$left"
        end_session "$pid"
        [ "$code" != 0 ] || code=left
      fi
      rm -f "$statuses/$tag.pid"
      echo "$code ${piece_files[*]}" >>"$statuses/ran"
      if [ "$code" != 0 ]; then
        [ "$code" = left ] || echo "run_tests.sh: exit status $code from ${piece_files[*]}"
        echo "$code ${piece_files[*]}" >>"$statuses/failed"
      fi
    done
  } 2>&1 | (
    trap '' INT TERM HUP
    exec sed -u "s/^/[$tag] /"
  )
}
# Every 0.5 s while a worker runs (and this script does): kills a run (and what it started)
# whose resident memory is over the bound.
bound_memory() {
  local tag pid rss_kib
  while kill -0 $$ 2>/dev/null && { kill -0 "$1" 2>/dev/null || kill -0 "$2" 2>/dev/null; }; do
    sleep 0.5
    for tag in 1 2; do
      pid=$(cat "$statuses/$tag.pid" 2>/dev/null) || continue
      rss_kib=$(awk '/^VmRSS:/ { print $2 }' "/proc/$pid/status" 2>/dev/null) || continue
      if [ -n "$rss_kib" ] && ((rss_kib / 1024 > max_rss_mib)); then
        echo "run_tests.sh: worker [$tag]'s deno test (pid $pid) holds $((rss_kib / 1024)) MiB," \
          "over PRESYNC_TEST_MAX_RSS_MIB=$max_rss_mib: killed; the test allocating without" \
          "bound is the last one its [$tag] lines name" >&2
        kill -KILL $(session_pids "$pid") 2>/dev/null
      fi
    done
  done
}
# On INT, TERM or HUP (to this script or to its whole process group): no new piece starts,
# the running ones are ended with all they started, and the script exits with 128 + the
# signal's number once both workers have stopped.
stop() {
  trap '' INT TERM HUP
  echo "run_tests.sh: stopped by a signal; ending the running tests" >&2
  (
    flock 9
    touch "$statuses/stop"
  ) 9>>"$statuses/lock"
  while kill -0 "${w1:-}" 2>/dev/null || kill -0 "${w2:-}" 2>/dev/null; do
    for tag in 1 2; do
      pid=$(cat "$statuses/$tag.pid" 2>/dev/null) && end_session "$pid"
    done
    sleep 0.5
  done
  wait
  exit "$1"
}
trap 'stop 130' INT
trap 'stop 143' TERM
trap 'stop 129' HUP
work 1 &
w1=$!
work 2 &
w2=$!
bound_memory "$w1" "$w2" &
wait

ran=$(wc -l 2>/dev/null <"$statuses/ran" || echo 0)
if ((ran != pieces)); then
  echo "run_tests.sh: only $ran of $pieces pieces ran to their end" >&2
  exit 1
fi
if [ -s "$statuses/failed" ]; then
  echo "run_tests.sh: $(wc -l <"$statuses/failed") of $pieces pieces failed (exit status, files):"
  cat "$statuses/failed"
  exit 1
fi
echo "run_tests.sh: all $pieces pieces passed"
