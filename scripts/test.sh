#!/usr/bin/env bash
# The project's test command: formatting, lints, build, every test; then a
# check that the run left nothing behind in /dev/shm.
set -euo pipefail

usage() {
    cat <<'USAGE'
Usage: scripts/test.sh [CARGO_TEST_ARGS...]

Runs, from the repository root wherever it is called from:
  cargo fmt --all -- --check
  cargo clippy --workspace --all-targets -- -D warnings
  cargo doc --workspace --no-deps       (RUSTDOCFLAGS="-D warnings")
  cargo build --workspace --bins        (the multi-process tests run them)
  cargo test --workspace [CARGO_TEST_ARGS...]
  the loom model checks (RUSTFLAGS="--cfg loom", own target dir)
  cargo +nightly miri test -p ipc-core --lib   (own target dir; skipped,
                                        with a message, if no nightly Miri)
and fails if the run left new entries in /dev/shm.
Exit codes: 0 all passed, 1 a step failed, 2 usage error.
USAGE
}

case "${1:-}" in
    -h | --help)
        usage
        exit 0
        ;;
esac

cd "$(dirname "$0")/.."

shm_before=$(mktemp)
shm_after=$(mktemp)
cleanup() { rm -f "$shm_before" "$shm_after"; }
trap cleanup EXIT
find /dev/shm -mindepth 1 -maxdepth 1 -printf '%f\n' | sort >"$shm_before"

step() { printf '\n== %s\n' "$*" >&2; }

step "cargo fmt --all -- --check"
cargo fmt --all -- --check
step "cargo clippy --workspace --all-targets -- -D warnings"
cargo clippy --workspace --all-targets -- -D warnings
step "cargo doc --workspace --no-deps (warnings are errors: broken links)"
RUSTDOCFLAGS="-D warnings" cargo doc --workspace --no-deps
step "cargo build --workspace --bins"
cargo build --workspace --bins
step "cargo test --workspace $*"
cargo test --workspace "$@"
step "loom models: ring, single-mode ring, semaphore, event count (crates/ipc-core/tests/loom.rs)"
started=$SECONDS
RUSTFLAGS="--cfg loom" CARGO_TARGET_DIR=target/loom cargo test -p ipc-core --release --features internals --test loom
echo "test.sh: loom took $((SECONDS - started)) s" >&2

# Miri needs a nightly toolchain with the miri component: without them the
# step is skipped, and says why; a Miri error fails the run.
step "Miri: cargo +nightly miri test -p ipc-core --lib"
started=$SECONDS
miri_skip=""
if ! cargo +nightly miri --version >/dev/null 2>&1; then
    echo "test.sh: no nightly Miri; trying: rustup component add miri --toolchain nightly" >&2
    if ! rustup component add miri --toolchain nightly >&2; then
        miri_skip="rustup component add miri --toolchain nightly failed"
    elif ! cargo +nightly miri --version >/dev/null 2>&1; then
        miri_skip="cargo +nightly miri still missing after adding the component"
    fi
fi
if [ -z "$miri_skip" ] && ! CARGO_TARGET_DIR=target/miri cargo +nightly miri setup >&2; then
    miri_skip="cargo +nightly miri setup could not build the Miri sysroot"
fi
if [ -n "$miri_skip" ]; then
    echo "test.sh: skipped Miri: $miri_skip" >&2
else
    CARGO_TARGET_DIR=target/miri cargo +nightly miri test -p ipc-core --lib -- --skip packed::
    # The packed ring reuses its bytes lap after lap: a word read as an
    # atomic header in one lap is plain payload in the next (ordered by
    # the cursors). Miri's weak-memory emulation crashes on that pattern
    # (an internal panic, "cannot have empty store buffer when previous
    # write was atomic"), so these tests run with it off: data races,
    # borrows and bounds are still checked.
    MIRIFLAGS="${MIRIFLAGS:-} -Zmiri-disable-weak-memory-emulation" \
        CARGO_TARGET_DIR=target/miri cargo +nightly miri test -p ipc-core --lib -- packed::
    echo "test.sh: Miri took $((SECONDS - started)) s" >&2
fi

find /dev/shm -mindepth 1 -maxdepth 1 -printf '%f\n' | sort >"$shm_after"
leaked=$(comm -13 "$shm_before" "$shm_after" | grep -E '^(ipct-|ipc-|doc-|port\.doc-)' || true)
if [ -n "$leaked" ]; then
    echo "test.sh: the run left these in /dev/shm:" >&2
    echo "$leaked" >&2
    exit 1
fi
echo "test.sh: all checks passed; nothing left in /dev/shm" >&2
