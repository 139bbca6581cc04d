#!/usr/bin/env bash
# Builds the workspace in release mode and runs ipc-bench, passing every
# argument through (for instance --quick). The Markdown report goes to
# stdout, progress to stderr.
set -euo pipefail

usage() {
    cat <<'USAGE'
Usage: scripts/bench.sh [--iceoryx2] [IPC-BENCH ARGS...]

Builds the release binaries (ipc-bench, producer, consumer) and runs
target/release/ipc-bench with the given arguments.

  --iceoryx2   build ipc-bench with the iceoryx2 contender (slower build)
  --quick      smoke run, under a minute (passed to ipc-bench)
  -h, --help   this help; `scripts/bench.sh -- --help` shows ipc-bench's

Examples:
  scripts/bench.sh --quick
  scripts/bench.sh --iceoryx2 > report.md
USAGE
}

features=()
args=()
while (($#)); do
    case "$1" in
        -h | --help) usage; exit 0 ;;
        --iceoryx2) features=(--features iceoryx2) ;;
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

exec target/release/ipc-bench "${args[@]+"${args[@]}"}"
