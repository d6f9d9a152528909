#!/usr/bin/env bash
# The whole test suite, from a fresh machine: installs and starts what the
# tests need, then formatting, lints, and every test on SQLite and PostgreSQL.
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/setup-test-env.sh
export RACKLIFT_TEST_PG="${RACKLIFT_TEST_PG:-postgres://postgres@127.0.0.1:5432/postgres}"

echo "== cargo fmt --check"
cargo fmt --all -- --check
echo "== cargo clippy"
cargo clippy --locked --all-targets -- -D warnings
echo "== cargo test"
cargo test --locked
