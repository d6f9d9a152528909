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
echo "== fuzz (30 s per target; panics and assertion failures are what the targets look for)"
command -v cargo-fuzz >/dev/null 2>&1 || cargo install cargo-fuzz --locked
if cargo +nightly --version >/dev/null 2>&1; then tc=(+nightly); else tc=(); export RUSTC_BOOTSTRAP=1; fi
for target in spec_parser dhcp_request tftp_request; do
  (cd fuzz && cargo "${tc[@]}" fuzz run -s none "$target" -- -max_total_time=30 -rss_limit_mb=2048 2>&1 | tail -n 30)
done
echo "== cargo test"
cargo test --locked
