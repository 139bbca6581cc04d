#!/usr/bin/env bash
# Soak: SIGKILL churn for a long time. Producers and consumers (the
# ipc-test-peer binary) are killed at random points -- mid-send, mid-receive,
# blocked on full or empty, holding a write or a read claim, in a tight send
# loop, growing an unbounded queue of small blocks -- while replacement
# processes attach to the same segment; every trial then accounts for every
# message (see tests/src/bin/ipc-test-peer/churn.rs). Every scenario runs on
# ordinary segments and (all but the unbounded one) on single-producer/
# single-consumer ones (SharedBuffer::create_single), in turn.
set -euo pipefail

usage() {
    cat <<'USAGE'
Usage: scripts/soak.sh [DURATION_SECONDS] [--parallel N] [--seed N] [--mode M] [--debug]

Runs torture trials for DURATION_SECONDS (default 600), every scenario in
turn, and prints one summary line per scenario and a total line:
  scenario=NAME trials=N ...
  trials=N kills=N acked=N received=N lost_reads=N missing=N
  abandoned_writes=N role_waits=N blocks=N half_created_blocks=N
  stale_blocks=N longest_trial=S violations=N
(role_waits: single-mode replacements that had to wait for the role;
blocks: unbounded chain blocks made; half_created_blocks: kills that left
one half-made; stale_blocks: left behind until the queue was removed.)
Exits 0 when no guarantee was broken, 1 on any violation (each is printed
on stderr with its scenario and seed), 2 on a usage error.

  --parallel N   trials running at once (default 2)
  --seed N       seed of the trial parameters (default: from the clock)
  --mode M       all (default), multi (ordinary segments only) or single
                 (single-producer/single-consumer segments only)
  --debug        use the debug build (default: release)
  -h, --help     this help
USAGE
}

duration=600
parallel=2
seed=""
profile=release
mode=all
while [[ $# -gt 0 ]]; do
    case "$1" in
        -h | --help)
            usage
            exit 0
            ;;
        --parallel)
            [[ $# -ge 2 ]] || { echo "soak.sh: --parallel needs a value" >&2; exit 2; }
            parallel="$2"
            shift 2
            ;;
        --seed)
            [[ $# -ge 2 ]] || { echo "soak.sh: --seed needs a value" >&2; exit 2; }
            seed="$2"
            shift 2
            ;;
        --mode)
            [[ $# -ge 2 ]] || { echo "soak.sh: --mode needs a value" >&2; exit 2; }
            case "$2" in
                all | multi | single) mode="$2" ;;
                *)
                    echo "soak.sh: --mode '$2': all, multi or single" >&2
                    exit 2
                    ;;
            esac
            shift 2
            ;;
        --debug)
            profile=debug
            shift
            ;;
        -*)
            echo "soak.sh: unknown option $1" >&2
            usage >&2
            exit 2
            ;;
        *)
            duration="$1"
            shift
            ;;
    esac
done
for n in "$duration" "$parallel" ${seed:+"$seed"}; do
    if ! [[ "$n" =~ ^[0-9]+$ ]]; then
        echo "soak.sh: '$n' is not a whole number" >&2
        exit 2
    fi
done

cd "$(dirname "$0")/.."

churn_pid=""
# shellcheck disable=SC2317  # invoked by the EXIT trap
cleanup() {
    # Only the process this script started; its peers die with it
    # (they ask the kernel for SIGKILL when their parent dies).
    if [[ -n "$churn_pid" ]] && kill -0 "$churn_pid" 2>/dev/null; then
        kill -TERM "$churn_pid" 2>/dev/null || true
        wait "$churn_pid" 2>/dev/null || true
        # Its segments and scratch folders carry its pid.
        rm -rf /dev/shm/ipct-churn-"$churn_pid"-* "${TMPDIR:-/tmp}"/ipct-churn-"$churn_pid"-*
    fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

build_flags=()
[[ "$profile" == release ]] && build_flags=(--release)
echo "soak.sh: building ipc-test-peer ($profile)" >&2
cargo build --quiet "${build_flags[@]}" -p ipc-tests --bins
peer="target/$profile/ipc-test-peer"

args=(churn --duration-s "$duration" --parallel "$parallel" --mode "$mode")
[[ -n "$seed" ]] && args+=(--seed "$seed")
echo "soak.sh: churning for ${duration} s, $parallel trials at a time, mode $mode" >&2
start=$(date +%s)
"$peer" "${args[@]}" &
churn_pid=$!
status=0
wait "$churn_pid" || status=$?
churn_pid=""
echo "soak.sh: finished in $(($(date +%s) - start)) s, exit $status" >&2
exit "$status"
