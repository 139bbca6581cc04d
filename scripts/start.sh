#!/usr/bin/env bash
# Creates a shared-memory buffer segment with `ipcctl create`.
set -euo pipefail

usage() {
    cat <<'USAGE'
Usage: scripts/start.sh NAME [CAPACITY] [MAX_MESSAGE]

Creates the shared-memory buffer segment /dev/shm/NAME (fails if it exists).

  NAME         segment name: letters, digits, '.', '_', '-'
  CAPACITY     most messages queued at once, or 'unbounded' (producers
               never wait) (default: ipcctl's, 64)
  MAX_MESSAGE  largest message in bytes, K/M suffixes allowed
               (default: ipcctl's, 64K)

Attach processes with scripts/attach.sh, remove it with scripts/teardown.sh.
Binaries: $IPC_BIN_DIR if set, else target/release (built here with cargo).
Exit codes: 0 created, 1 runtime error, 2 usage error.
USAGE
}

die_usage() {
    echo "start.sh: $1" >&2
    echo "Try 'scripts/start.sh --help'." >&2
    exit 2
}

case "${1:-}" in
    -h | --help)
        usage
        exit 0
        ;;
    "") die_usage "missing NAME" ;;
    -*) die_usage "unknown option '$1'" ;;
esac
(($# <= 3)) || die_usage "too many arguments (expected NAME [CAPACITY] [MAX_MESSAGE])"

name=$1
capacity=${2:-}
max_message=${3:-}

cd "$(dirname "$0")/.."

if [[ -n "${IPC_BIN_DIR:-}" ]]; then
    bin=$IPC_BIN_DIR
else
    bin=target/release
    if command -v cargo >/dev/null 2>&1; then
        cargo build --release --bins -q
    elif [[ ! -x $bin/ipcctl ]]; then
        echo "start.sh: cargo not found and $bin/ipcctl is missing" >&2
        exit 1
    fi
fi

args=(create "$name")
[[ -z $capacity ]] || args+=(--capacity "$capacity")
[[ -z $max_message ]] || args+=(--max-message "$max_message")
exec "$bin/ipcctl" "${args[@]}"
