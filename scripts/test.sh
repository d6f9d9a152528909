#!/usr/bin/env bash
# The whole test suite, from a fresh machine: installs and starts what the
# tests need, then formatting, lints, and every test on SQLite and PostgreSQL.
set -euo pipefail
cd "$(dirname "$0")/.."

# Each group's time, printed at the end (docs/PERFORMANCE.md has the split).
times=()
group() { local name="$1" t0; shift; t0=$(date +%s); echo "== $name"; "$@"; times+=("$name: $(( $(date +%s) - t0 )) s"); }
fuzz_all() {
  command -v cargo-fuzz >/dev/null 2>&1 || cargo install cargo-fuzz --locked
  if cargo +nightly --version >/dev/null 2>&1; then tc=(+nightly); else tc=(); export RUSTC_BOOTSTRAP=1; fi
  for target in spec_parser dhcp_request tftp_request; do
    (cd fuzz && cargo "${tc[@]}" fuzz run -s none "$target" -- -max_total_time=30 -rss_limit_mb=2048 2>&1 | tail -n 30)
  done
}

group "set-up" bash scripts/setup-test-env.sh
export RACKLIFT_TEST_PG="${RACKLIFT_TEST_PG:-postgres://postgres@127.0.0.1:5432/postgres}"

echo "== cargo fmt --check"
cargo fmt --all -- --check
group "cargo clippy" cargo clippy --locked --all-targets -- -D warnings
# Panics and assertion failures are what the fuzz targets look for.
group "fuzz (30 s per target)" fuzz_all
group "cargo test" cargo test --locked
# No 5xx and no status the OpenAPI document does not declare.
group "schemathesis" env MAX_EXAMPLES=10 bash scripts/schemathesis.sh
printf '%s\n' "== times" "${times[@]}"
