#!/usr/bin/env bash
# Runs a producer or a consumer attached to an existing segment.
set -euo pipefail

usage() {
    cat <<'USAGE'
Usage: scripts/attach.sh NAME producer|consumer [ARGS...]

Runs `producer --segment NAME ARGS...` or `consumer --segment NAME ARGS...`
in place of this script (exec), so its exit code and signals pass through.

Examples:
  scripts/attach.sh demo consumer --verify --producers 2
  scripts/attach.sh demo producer --count 1000 --size 64 --id 1
  scripts/attach.sh demo producer < file      # stream a file
  scripts/attach.sh demo consumer > copy      # and receive it

Binaries: $IPC_BIN_DIR if set, else target/release (built here with cargo).
Exit codes: those of the producer or consumer (0 ok, 1 error, 2 usage,
130 interrupted); 2 for a usage error of this script.
USAGE
}

die_usage() {
    echo "attach.sh: $1" >&2
    echo "Try 'scripts/attach.sh --help'." >&2
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
name=$1
role=${2:-}
case "$role" in
    producer | consumer) ;;
    "") die_usage "missing role (producer or consumer)" ;;
    *) die_usage "role must be 'producer' or 'consumer', not '$role'" ;;
esac
shift 2

cd "$(dirname "$0")/.."

if [[ -n "${IPC_BIN_DIR:-}" ]]; then
    bin=$IPC_BIN_DIR
else
    bin=target/release
    if command -v cargo >/dev/null 2>&1; then
        # Keep stdout clean: it may carry the consumer's data.
        cargo build --release --bins -q >&2
    elif [[ ! -x $bin/$role ]]; then
        echo "attach.sh: cargo not found and $bin/$role is missing" >&2
        exit 1
    fi
fi

exec "$bin/$role" --segment "$name" "$@"
