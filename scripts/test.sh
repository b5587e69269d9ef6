#!/usr/bin/env bash
# The whole test suite of leasehold:
#   1. unit, integration and doc tests (cargo test, whole workspace, every
#      feature), against a throwaway PostgreSQL server started by
#      scripts/with-postgres.sh (which installs PostgreSQL from the Debian
#      packages if it is missing); LEASEHOLD_REQUIRE_PG=1 makes every
#      PostgreSQL test fail, rather than skip, if the server is not there;
#   2. the loom models in loom-tests/ (every interleaving of each primitive);
#   3. Miri on the tests that reach the crate's unsafe code.
# Usage: bash scripts/test.sh        (LOOM_MAX_PREEMPTIONS=3 for a deeper search)
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n=== %s ===\n' "$*"; }

step "cargo test: unit, integration and doc tests (PostgreSQL tests against a throwaway server)"
bash scripts/with-postgres.sh env LEASEHOLD_REQUIRE_PG=1 cargo test --workspace --all-features

step "loom models (LOOM_MAX_PREEMPTIONS=${LOOM_MAX_PREEMPTIONS:-2}, release)"
RUSTFLAGS="--cfg loom" LOOM_MAX_PREEMPTIONS="${LOOM_MAX_PREEMPTIONS:-2}" \
  CARGO_TARGET_DIR=target/loom \
  cargo test -p leasehold-loom-tests --release

step "Miri: the tests that reach unsafe code"
if ! cargo +nightly miri --version >/dev/null 2>&1; then
  rustup component add --toolchain nightly miri rust-src >/dev/null 2>&1 || true
fi
if cargo +nightly miri --version >/dev/null 2>&1; then
  # Isolation off: the tests read the monotonic clock and spawn threads.
  MIRIFLAGS="-Zmiri-disable-isolation" CARGO_TARGET_DIR=target/miri \
    cargo +nightly miri test --test watch_cell
  # A leaked registered wait: leaking is the point, so Miri's leak check is
  # off for this binary only.
  MIRIFLAGS="-Zmiri-disable-isolation -Zmiri-ignore-leaks" CARGO_TARGET_DIR=target/miri \
    cargo +nightly miri test --test watch_cell_leak
else
  echo "!!! SKIPPED: no nightly toolchain with Miri on this machine; the unsafe code was not checked under Miri !!!"
fi
