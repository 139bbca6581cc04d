#!/usr/bin/env bash
# Removes a segment (`ipcctl remove`) or every orphaned one (`ipcctl clean`).
set -euo pipefail

usage() {
    cat <<'USAGE'
Usage: scripts/teardown.sh NAME [--force]
       scripts/teardown.sh --orphans

NAME       removes /dev/shm/NAME; refuses while live processes are attached
           (and refuses files that are not ipc-core segments) unless --force.
           Processes still attached keep their mapping until they exit.
--orphans  removes every orphaned segment (processes attached once, none
           alive now) and every corrupt one (`ipcctl clean`).

Binaries: $IPC_BIN_DIR if set, else target/release (built here with cargo).
Exit codes: 0 removed, 1 refused or runtime error, 2 usage error.
USAGE
}

die_usage() {
    echo "teardown.sh: $1" >&2
    echo "Try 'scripts/teardown.sh --help'." >&2
    exit 2
}

force=false
orphans=false
name=
for arg in "$@"; do
    case "$arg" in
        -h | --help)
            usage
            exit 0
            ;;
        --force) force=true ;;
        --orphans) orphans=true ;;
        -*) die_usage "unknown option '$arg'" ;;
        *)
            [[ -z $name ]] || die_usage "more than one NAME given ('$name', '$arg')"
            name=$arg
            ;;
    esac
done
if $orphans; then
    [[ -z $name ]] || die_usage "--orphans takes no NAME"
    ! $force || die_usage "--orphans does not take --force"
else
    [[ -n $name ]] || die_usage "missing NAME (or --orphans)"
fi

cd "$(dirname "$0")/.."

if [[ -n "${IPC_BIN_DIR:-}" ]]; then
    bin=$IPC_BIN_DIR
else
    bin=target/release
    if command -v cargo >/dev/null 2>&1; then
        cargo build --release --bins -q
    elif [[ ! -x $bin/ipcctl ]]; then
        echo "teardown.sh: cargo not found and $bin/ipcctl is missing" >&2
        exit 1
    fi
fi

if $orphans; then
    exec "$bin/ipcctl" clean
elif $force; then
    exec "$bin/ipcctl" remove "$name" --force
else
    exec "$bin/ipcctl" remove "$name"
fi
