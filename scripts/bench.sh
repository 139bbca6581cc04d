#!/usr/bin/env bash
# Builds the workspace in release mode and runs ipc-bench, passing every
# argument through (for instance --quick). The Markdown report goes to
# stdout, progress to stderr. Exit status: ipc-bench's (130 on Ctrl-C).
set -euo pipefail

usage() {
    cat <<'USAGE'
Usage: scripts/bench.sh [--iceoryx2] [--bridge] [IPC-BENCH ARGS...]

Builds the release binaries (ipc-bench, producer, consumer) and runs
target/release/ipc-bench with the given arguments.

  --iceoryx2   build ipc-bench with the iceoryx2 contender (slower build)
  --bridge     also build ipc-bridge (Zenoh: a slow build) and run
               bridge-bench: a bridged mailbox against plain TCP between
               two network namespaces (needs root; says so and skips
               otherwise); with --quick, a smoke run of it
  --quick      smoke run, under a minute (passed to ipc-bench)
  -h, --help   this help; `scripts/bench.sh -- --help` shows ipc-bench's

Examples:
  scripts/bench.sh --quick
  scripts/bench.sh --iceoryx2 > report.md
USAGE
}

features=()
args=()
bridge=0
quick=()
while (($#)); do
    case "$1" in
        -h | --help) usage; exit 0 ;;
        --iceoryx2) features=(--features iceoryx2) ;;
        --bridge) bridge=1 ;;
        --quick) quick=(--quick); args+=("$1") ;;
        --) shift; args+=("$@"); break ;;
        *) args+=("$1") ;;
    esac
    shift
done

cd "$(dirname "$0")/.."

cargo build --release -p ipc-bench "${features[@]+"${features[@]}"}"
# The stream benchmark needs the CLI tools; without them it is reported as
# not measured rather than failing the whole run.
if ! cargo build --release -p producer -p consumer; then
    echo "bench.sh: producer/consumer did not build; the stream benchmark will be skipped" >&2
fi

# ipc-bench removes what it creates; a run killed hard (SIGKILL, OOM) may
# leave segments or queues behind. They are named ipc-bench-PID-*, so the
# cleanup removes only this run's. ipc-bench runs in the foreground (Ctrl-C
# reaches it) and records its PID through a small exec wrapper.
pidfile=$(mktemp)
cleanup() {
    local pid
    pid=$(cat "$pidfile" 2>/dev/null || true)
    rm -f "$pidfile"
    [[ -n $pid ]] || return 0
    local f
    for f in /dev/shm/ipc-bench-"$pid"-* /dev/mqueue/ipc-bench-"$pid"-*; do
        if [[ -e $f ]]; then
            echo "bench.sh: removing leftover $f" >&2
            rm -f -- "$f"
        fi
    done
}
trap cleanup EXIT

# shellcheck disable=SC2016 # $$ and $1 are the inner shell's
sh -c 'echo $$ >"$1"; shift; exec "$@"' sh "$pidfile" \
    target/release/ipc-bench "${args[@]+"${args[@]}"}"

if ((bridge)); then
    cargo build --release -p ipc-bridge -p ipc-tests --bins
    echo
    target/release/bridge-bench "${quick[@]+"${quick[@]}"}"
fi
