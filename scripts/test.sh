#!/usr/bin/env bash
# The whole test suite of leasehold:
#   1. unit and integration tests under cargo-nextest (whole workspace, every
#      feature), each in its own process with a time limit
#      (.config/nextest.toml): a lost wake-up fails that test fast instead of
#      hanging the run. Against a throwaway PostgreSQL server started by
#      scripts/with-postgres.sh (which installs PostgreSQL from the Debian
#      packages if it is missing); LEASEHOLD_REQUIRE_PG=1 makes every
#      PostgreSQL test fail, rather than skip, if the server is not there;
#   2. the doc tests (cargo test --doc; nextest does not run them);
#   3. the loom models in loom-tests/ (every interleaving of each primitive),
#      under an overall time limit;
#   4. Miri on the tests that reach the crate's unsafe code.
# Usage: bash scripts/test.sh        (LOOM_MAX_PREEMPTIONS=3 for a deeper search;
#                                     LOOM_TIME_LIMIT=<seconds> to change the limit)
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n=== %s ===\n' "$*"; }

if ! cargo nextest --version >/dev/null 2>&1; then
  step "installing cargo-nextest"
  cargo install cargo-nextest --locked
fi

# The process tortures run the example binaries as real processes; nextest
# builds test targets only, so build the examples first.
step "cargo build --examples (the fault tests run them as processes)"
cargo build --workspace --all-features --examples

step "cargo nextest: unit and integration tests, per-test time limits (PostgreSQL tests against a throwaway server)"
bash scripts/with-postgres.sh env LEASEHOLD_REQUIRE_PG=1 \
  cargo nextest run --workspace --all-features --no-fail-fast

step "cargo test --doc: doc tests"
cargo test --workspace --all-features --doc

LOOM_TIME_LIMIT="${LOOM_TIME_LIMIT:-1200}"
step "loom models (LOOM_MAX_PREEMPTIONS=${LOOM_MAX_PREEMPTIONS:-2}, release, at most ${LOOM_TIME_LIMIT} s)"
loom_status=0
RUSTFLAGS="--cfg loom" LOOM_MAX_PREEMPTIONS="${LOOM_MAX_PREEMPTIONS:-2}" \
  CARGO_TARGET_DIR=target/loom \
  timeout --kill-after=30 "$LOOM_TIME_LIMIT" \
  cargo test -p leasehold-loom-tests --release || loom_status=$?
if [ "$loom_status" -eq 124 ] || [ "$loom_status" -eq 137 ]; then
  echo "!!! FAILED: the loom models did not finish within ${LOOM_TIME_LIMIT} s: a model hangs (a lost wake-up?) or its state space exploded !!!" >&2
  exit 1
elif [ "$loom_status" -ne 0 ]; then
  exit "$loom_status"
fi

step "Miri: the tests that reach unsafe code"
if ! cargo +nightly miri --version >/dev/null 2>&1; then
  rustup component add --toolchain nightly miri rust-src >/dev/null 2>&1 || true
fi
if cargo +nightly miri --version >/dev/null 2>&1; then
  # Isolation off: the tests read the monotonic clock and spawn threads.
  MIRIFLAGS="-Zmiri-disable-isolation" CARGO_TARGET_DIR=target/miri \
    cargo +nightly miri test --test watch_cell --test watch_cell_index --test status
  # A leaked registered wait: leaking is the point, so Miri's leak check is
  # off for this binary only.
  MIRIFLAGS="-Zmiri-disable-isolation -Zmiri-ignore-leaks" CARGO_TARGET_DIR=target/miri \
    cargo +nightly miri test --test watch_cell_leak
else
  echo "!!! SKIPPED: no nightly toolchain with Miri on this machine; the unsafe code was not checked under Miri !!!"
fi
