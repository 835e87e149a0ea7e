#!/usr/bin/env bash
# The whole test suite, with its own set-up: the README's test command, and what CI runs.
#
# - Starts a throwaway PostgreSQL (installing Debian's package if missing) through
#   .ci/postgres.sh and hands its URL to the tests in TASKQ_TEST_POSTGRES_URL.
# - Checks formatting and clippy, then runs every test of the workspace (unit, behaviour,
#   conformance on every store, trybuild UI tests, crash tests, doc tests).
set -euo pipefail
cd "$(dirname "$0")"

if ! command -v cargo >/dev/null 2>&1; then
  echo "test.sh: cargo is not on PATH; install Rust (rustup) first" >&2
  exit 1
fi

# PostgreSQL for the Postgres store's tests.
if [ -f .ci/postgres.sh ]; then
  # shellcheck source=.ci/postgres.sh
  source .ci/postgres.sh
fi

echo "== cargo fmt --check"
cargo fmt --all -- --check
echo "== cargo clippy"
cargo clippy --workspace --all-targets -- -D warnings
echo "== cargo test"
cargo test --workspace --no-fail-fast "$@"
