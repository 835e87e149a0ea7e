#!/usr/bin/env bash
# The whole test suite, with its own set-up: the README's test command, and what CI runs.
#
# - Starts a throwaway PostgreSQL (installing Debian's package if missing) through
#   .ci/postgres.sh and hands its URL to the tests in TASKQ_TEST_POSTGRES_URL.
# - Installs Chromium and chromedriver (Debian's packages) when missing, for the console's
#   browser test, through .ci/chromium.sh.
# - Checks formatting and clippy, then runs every test of the workspace (unit, behaviour,
#   conformance on every store, trybuild UI tests, crash tests, doc tests).
set -euo pipefail
cd "$(dirname "$0")"

if ! command -v cargo >/dev/null 2>&1; then
  echo "test.sh: cargo is not on PATH; install Rust (rustup) first" >&2
  exit 1
fi

# The toolchain. rust-toolchain.toml pins the Rust release the trybuild UI tests' expected
# compiler messages were made with. With rustup, cargo uses that release, installing it on
# first use; a machine that cannot download it but has the same release installed under
# another name (`stable`, say) uses that one instead of failing. Without rustup the file is
# ignored and the cargo on PATH runs everything; only the UI tests depend on its release.
if [ -f rust-toolchain.toml ]; then
  pinned=$(sed -n 's/^channel *= *"\(.*\)"/\1/p' rust-toolchain.toml)
  if command -v rustup >/dev/null 2>&1; then
    if [ -z "${RUSTUP_TOOLCHAIN:-}" ] &&
      ! rustup toolchain list | grep -q "^${pinned//./\\.}-"; then
      for t in $(rustup toolchain list | awk '{print $1}'); do
        if rustup run "$t" rustc --version 2>/dev/null | grep -q "^rustc ${pinned//./\\.} "; then
          echo "test.sh: Rust $pinned is installed as \`$t\`; using it" >&2
          export RUSTUP_TOOLCHAIN=$t
          break
        fi
      done
    fi
  else
    have=$(rustc --version 2>/dev/null | awk '{print $2}')
    if [ "$have" != "$pinned" ]; then
      echo "test.sh: no rustup, so rust-toolchain.toml is ignored and this is Rust ${have:-(unknown)}," \
        "not $pinned: the trybuild UI tests may fail on changed compiler messages" >&2
    fi
  fi
fi

# PostgreSQL for the Postgres store's tests.
if [ -f .ci/postgres.sh ]; then
  # shellcheck source=.ci/postgres.sh
  source .ci/postgres.sh
fi

# Chromium and chromedriver for the console's browser test.
# shellcheck source=.ci/chromium.sh
source .ci/chromium.sh

echo "== cargo fmt --check"
cargo fmt --all -- --check
echo "== cargo clippy"
cargo clippy --workspace --all-targets -- -D warnings
echo "== cargo test"
cargo test --workspace --no-fail-fast "$@"
