#!/usr/bin/env bash
# A complete demo of the shared-memory buffer, in well under a minute.
set -euo pipefail

usage() {
    cat <<'USAGE'
Usage: scripts/demo.sh

Runs a complete demo and cleans up after itself (also on failure or Ctrl-C):
  1. creates a segment with a unique name;
  2. starts a verifying consumer and two synthetic producers in the
     background, waits for them and prints the consumer's verify summary;
  3. streams a few MB of random bytes producer -> consumer through a second
     segment and checks with cmp that they arrived intact;
  4. removes both segments;
  5. message passing, each variant once, verifying every message: a
     rendezvous mailbox (capacity 0: each send waits for the receiver), an
     unbounded mailbox (the producer finishes before the consumer starts,
     which then drains it and removes it), and a direct port that two
     named producers send to.

Narration goes to stderr. Binaries: $IPC_BIN_DIR if set, else
target/release (built here with cargo). Environment knobs:
  DEMO_COUNT  synthetic messages per producer (default 20000)
  DEMO_SIZE   bytes per synthetic message (default 256)
  DEMO_MB     size of the streamed file in MiB (default 4)
  DEMO_MP_COUNT  messages per producer in the message-passing part
              (default 2000)
Exit codes: 0 success, 1 a step failed, 2 usage error, 130 interrupted.
USAGE
}

case "${1:-}" in
    -h | --help)
        usage
        exit 0
        ;;
    "") ;;
    *)
        echo "demo.sh: unexpected argument '$1'" >&2
        echo "Try 'scripts/demo.sh --help'." >&2
        exit 2
        ;;
esac

count=${DEMO_COUNT:-20000}
size=${DEMO_SIZE:-256}
megabytes=${DEMO_MB:-4}
mp_count=${DEMO_MP_COUNT:-2000}
# Idle limit for every producer and consumer: turns a hang into a failure.
patience=20

say() { echo "demo: $*" >&2; }
fail() {
    say "FAILED: $*"
    exit 1
}

# Judges the exit code of a step: Ctrl-C reaches the whole process group,
# so a tool that stopped on SIGINT (130) or SIGTERM (143) means the demo
# was interrupted, not that it failed.
check() {
    local rc=$1 what=$2 log=$3
    case $rc in
        0) ;;
        130 | 143)
            say "interrupted"
            exit "$rc"
            ;;
        *) fail "$what exited with code $rc: $(cat "$log")" ;;
    esac
}

# Waits for a background process this script started.
wait_for() {
    local pid=$1 rc=0
    wait "$pid" || rc=$?
    check "$rc" "$2" "$3"
}

cd "$(dirname "$0")/.."

# Everything this script starts or creates, for cleanup.
pids=()
segments=()
tmp=

cleanup() {
    local status=$?
    local pid seg
    for pid in "${pids[@]}"; do
        if kill -0 "$pid" 2>/dev/null; then
            kill -TERM "$pid" 2>/dev/null || true
        fi
    done
    for pid in "${pids[@]}"; do
        wait "$pid" 2>/dev/null || true
    done
    for seg in "${segments[@]}"; do
        if [[ -e /dev/shm/$seg ]]; then
            "$bin/ipcctl" remove "$seg" --force >/dev/null 2>&1 || rm -f "/dev/shm/$seg"
        fi
        # Chained blocks of an unbounded mailbox whose head is already gone.
        rm -f "/dev/shm/$seg".b[0-9]*
    done
    if [[ -n $tmp ]]; then
        rm -rf "$tmp"
    fi
    if ((status != 0)); then
        say "cleaned up (exit $status)"
    fi
    exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

if [[ -n "${IPC_BIN_DIR:-}" ]]; then
    bin=$IPC_BIN_DIR
else
    bin=$PWD/target/release
    if command -v cargo >/dev/null 2>&1; then
        say "building the binaries (cargo build --release --bins)"
        cargo build --release --bins -q
    elif [[ ! -x $bin/ipcctl ]]; then
        fail "cargo not found and $bin/ipcctl is missing"
    fi
fi
for tool in ipcctl producer consumer; do
    [[ -x $bin/$tool ]] || fail "$bin/$tool is missing"
done

tmp=$(mktemp -d "${TMPDIR:-/tmp}/ipc-demo.XXXXXX")
buf=ipc-demo-$$-buf
stream=ipc-demo-$$-stream

# --- 1. many messages, two producers, one verifying consumer --------------
say "creating segment $buf: 64 slots of up to 4K"
segments+=("$buf")
"$bin/ipcctl" create "$buf" --capacity 64 --max-message 4K 2>"$tmp/create.log" ||
    fail "ipcctl create: $(cat "$tmp/create.log")"

say "starting a consumer that verifies checksums and per-producer order"
"$bin/consumer" --segment "$buf" --verify --producers 2 --timeout "$patience" \
    2>"$tmp/consumer.log" &
consumer=$!
pids+=("$consumer")

say "starting 2 producers, $count messages of $size bytes each"
"$bin/producer" --segment "$buf" --count "$count" --size "$size" --id 1 \
    --timeout "$patience" 2>"$tmp/producer1.log" &
producer1=$!
pids+=("$producer1")
"$bin/producer" --segment "$buf" --count "$count" --size "$size" --id 2 \
    --timeout "$patience" 2>"$tmp/producer2.log" &
producer2=$!
pids+=("$producer2")

wait_for "$producer1" "producer 1" "$tmp/producer1.log"
wait_for "$producer2" "producer 2" "$tmp/producer2.log"
wait_for "$consumer" "consumer" "$tmp/consumer.log"
summary=$(grep 'verify:' "$tmp/consumer.log") || fail "no verify summary: $(cat "$tmp/consumer.log")"
say "consumer says: ${summary#consumer: verify: }"
[[ $summary == *"received=$((2 * count)) "* ]] ||
    fail "expected $((2 * count)) messages: $summary"

say "removing $buf"
"$bin/ipcctl" remove "$buf" 2>/dev/null || fail "ipcctl remove $buf"

# --- 2. a file, streamed through shared memory -----------------------------
say "streaming a ${megabytes} MiB random file producer -> consumer through $stream"
head -c "$((megabytes * 1024 * 1024))" /dev/urandom >"$tmp/in.bin"
segments+=("$stream")
"$bin/ipcctl" create "$stream" --capacity 16 --max-message 64K 2>"$tmp/create.log" ||
    fail "ipcctl create: $(cat "$tmp/create.log")"
"$bin/consumer" --segment "$stream" --timeout "$patience" \
    >"$tmp/out.bin" 2>"$tmp/consumer.log" &
consumer=$!
pids+=("$consumer")
rc=0
"$bin/producer" --segment "$stream" --timeout "$patience" \
    <"$tmp/in.bin" 2>"$tmp/producer1.log" || rc=$?
check "$rc" "producer" "$tmp/producer1.log"
wait_for "$consumer" "consumer" "$tmp/consumer.log"
cmp "$tmp/in.bin" "$tmp/out.bin" || fail "the file arrived changed"
say "cmp: the $(stat -c %s "$tmp/out.bin") bytes arrived identical"

say "removing $stream"
"$bin/ipcctl" remove "$stream" 2>/dev/null || fail "ipcctl remove $stream"

# --- 3. message passing: rendezvous, unbounded, direct ---------------------
rendezvous=ipc-demo-$$-rendezvous
backlog=ipc-demo-$$-backlog
port=ipc-demo-$$-port

# Checks a verifying consumer's summary: clean, with the expected count.
verified() {
    local log=$1 expected=$2 summary
    summary=$(grep 'verify:' "$log") || fail "no verify summary: $(cat "$log")"
    say "consumer says: ${summary#consumer: verify: }"
    [[ $summary == *"received=$expected corrupt=0 out_of_order=0 duplicate=0 "* ]] ||
        fail "expected $expected clean messages: $summary"
}

say "rendezvous mailbox $rendezvous (capacity 0): each send waits for the receiver"
segments+=("$rendezvous")
"$bin/ipcctl" create "$rendezvous" --mailbox --capacity 0 2>"$tmp/create.log" ||
    fail "ipcctl create: $(cat "$tmp/create.log")"
"$bin/consumer" --mailbox "$rendezvous" --verify --timeout "$patience" \
    2>"$tmp/consumer.log" &
consumer=$!
pids+=("$consumer")
# Every step runs in the background and is waited for: bash runs the
# INT/TERM traps at once during `wait`, not until a foreground step ends.
"$bin/producer" --mailbox "$rendezvous" --count "$mp_count" --size 64 \
    --timeout "$patience" 2>"$tmp/producer1.log" &
producer1=$!
pids+=("$producer1")
wait_for "$producer1" "producer" "$tmp/producer1.log"
wait_for "$consumer" "consumer" "$tmp/consumer.log"
verified "$tmp/consumer.log" "$mp_count"
"$bin/ipcctl" remove "$rendezvous" 2>/dev/null || fail "ipcctl remove $rendezvous"

say "unbounded mailbox $backlog: the producer never waits and finishes first"
segments+=("$backlog")
"$bin/ipcctl" create "$backlog" --mailbox --capacity unbounded 2>"$tmp/create.log" ||
    fail "ipcctl create: $(cat "$tmp/create.log")"
"$bin/producer" --mailbox "$backlog" --count "$mp_count" --size 64 \
    --timeout "$patience" 2>"$tmp/producer1.log" &
producer1=$!
pids+=("$producer1")
wait_for "$producer1" "producer" "$tmp/producer1.log"
say "producer done; now a consumer drains the mailbox and removes it"
"$bin/consumer" --mailbox "$backlog" --verify --remove --timeout "$patience" \
    2>"$tmp/consumer.log" &
consumer=$!
pids+=("$consumer")
wait_for "$consumer" "consumer" "$tmp/consumer.log"
verified "$tmp/consumer.log" "$mp_count"
[[ ! -e /dev/shm/$backlog ]] || fail "consumer --remove left $backlog behind"

say "direct port $port: a consumer registers it, producers alice and bob send to it"
segments+=("port.$port")
"$bin/consumer" --port "$port" --verify --producers 2 --timeout "$patience" \
    2>"$tmp/consumer.log" &
consumer=$!
pids+=("$consumer")
for ((tries = 0; ; tries++)); do
    [[ -e /dev/shm/port.$port ]] && break
    if ! kill -0 "$consumer" 2>/dev/null; then
        wait_for "$consumer" "consumer" "$tmp/consumer.log"
        fail "the consumer ended without registering $port"
    fi
    ((tries < patience * 20)) || fail "port $port was not registered in ${patience}s"
    sleep 0.05
done
"$bin/producer" --to "$port" --from alice --count "$mp_count" --size 64 \
    --timeout "$patience" 2>"$tmp/producer1.log" &
producer1=$!
pids+=("$producer1")
"$bin/producer" --to "$port" --from bob --count "$mp_count" --size 64 \
    --timeout "$patience" 2>"$tmp/producer2.log" &
producer2=$!
pids+=("$producer2")
wait_for "$producer1" "producer alice" "$tmp/producer1.log"
wait_for "$producer2" "producer bob" "$tmp/producer2.log"
wait_for "$consumer" "consumer" "$tmp/consumer.log"
verified "$tmp/consumer.log" "$((2 * mp_count))"
[[ ! -e /dev/shm/port.$port ]] || fail "the consumer left port $port registered"
say "done: everything worked"
