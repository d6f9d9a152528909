#!/usr/bin/env bash
# Runs schemathesis against racklift's own OpenAPI document: every operation,
# a bounded number of generated cases each, checking that no answer is a 5xx
# (not_a_server_error) and that every status is one the document declares for
# that operation (status_code_conformance).
#
# What an honest run looks like here:
# - the built `racklift` binary (target/debug, built if missing), embedded
#   SQLite in a fresh temporary data directory, DHCP and TFTP off, no profiles;
# - an admin token (the first one, from the data directory), so the handlers
#   are reached rather than refused with 401 (401/403 are still documented
#   and tested in tests/api.rs);
# - a few nodes made first with the fake BMC driver, so that generated ids and
#   names sometimes hit a real node and its BMC endpoints run;
# - DELETE /v1/tokens/{id} stays in: ids are random UUIDs, so generated ones
#   never name the admin token; the run would fail loudly (401s) if one did.
#   Deleting nodes stays in too: generated names rarely hit the seeded ones,
#   and a hit is a legitimate 204.
# - the agent endpoints get no agent token: they are checked for their 401
#   and 400 answers only.
# - the stateful phase is left out: it follows links schemathesis infers from
#   names (it links POST /v1/nodes to GET /v1/profiles/{name}, wrongly) and
#   stops on its own inference; the other phases cover every operation.
# Environment: SCHEMATHESIS (path to the binary, default
# /opt/racklift-schemathesis/bin/schemathesis), MAX_EXAMPLES (default 30:
# about 3,000 cases; scripts/test.sh runs it with 10, about 1,200).
set -euo pipefail
cd "$(dirname "$0")/.."

st="${SCHEMATHESIS:-/opt/racklift-schemathesis/bin/schemathesis}"
[ -x "$st" ] || { echo "schemathesis: $st is missing; run scripts/setup-test-env.sh" >&2; exit 1; }
[ -x target/debug/racklift ] || cargo build --locked --bin racklift

dir="$(mktemp -d)"
port="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')"
cleanup() { [ -n "${pid:-}" ] && kill "$pid" 2>/dev/null; wait 2>/dev/null || true; rm -rf "$dir"; }
trap cleanup EXIT
cat > "$dir/racklift.toml" <<TOML
data_dir = "$dir/data"
[profiles]
dir = "$dir/profiles"
[http]
listen = "127.0.0.1:$port"
TOML
target/debug/racklift serve --config "$dir/racklift.toml" > "$dir/server.log" 2>&1 &
pid=$!
url="http://127.0.0.1:$port"
for _ in $(seq 1 100); do
  curl -fs "$url/healthz" >/dev/null 2>&1 && break
  sleep 0.2
done
curl -fs "$url/healthz" >/dev/null || { cat "$dir/server.log"; exit 1; }
token="$(cat "$dir/data/admin.token")"
for i in 1 2 3; do
  curl -fs -H "Authorization: Bearer $token" -H 'content-type: application/json' \
    -d "{\"name\": \"node-$i\", \"boot_mac\": \"52:54:00:99:00:0$i\", \"bmc\": {\"driver\": \"fake\", \"address\": \"bmc-$i\"}}" \
    "$url/v1/nodes" >/dev/null
done

started=$(date +%s)
rc=0
"$st" run "$url/v1/openapi.json" \
  --url "$url" \
  -H "Authorization: Bearer $token" \
  --checks not_a_server_error,status_code_conformance \
  --phases examples,coverage,fuzzing \
  --max-examples "${MAX_EXAMPLES:-30}" \
  --seed 1 \
  --no-color || rc=$?
echo "schemathesis: rc=$rc in $(( $(date +%s) - started )) s"
if grep -q 'panicked' "$dir/server.log"; then
  echo "the server panicked:" >&2; grep -A5 panicked "$dir/server.log" >&2; rc=1
fi
kill -0 "$pid" 2>/dev/null || { echo "the server stopped" >&2; rc=1; }
exit "$rc"
