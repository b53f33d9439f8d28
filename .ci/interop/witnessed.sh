#!/usr/bin/env bash
# A gateway whose checkpoints two built-in witnesses cosign (separate processes, a 2-of-2
# policy, mode "required"): the official Python MCP client's calls through `custody connect
# --evidence`, the job's evidence checked against the gateway and offline, then the operator's
# attack (an entry rewritten, every hash rebuilt, the log re-signed with its real key)
# detected by the evidence, by `custody verify --witness-policy`, and by the witnesses (the
# gateway refuses to start on the fork).
#
# usage: witnessed.sh CUSTODY_BINARY CACHE_DIR
set -euo pipefail
custody=${1:?usage: witnessed.sh CUSTODY_BINARY CACHE_DIR}
cache=${2:?usage: witnessed.sh CUSTODY_BINARY CACHE_DIR}
here=$(cd "$(dirname "$0")" && pwd)
python="$cache/venv/bin/python"
# The attack needs Ed25519 in Python: the witness venv has `cryptography`.
attacker="$cache/witness-venv/bin/python"

work=$(mktemp -d)
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
wait_http() { # URL NAME LOG
  for _ in $(seq 1 100); do
    if curl -s -o /dev/null "$1"; then return 0; fi
    sleep 0.1
  done
  echo "$2 did not come up; its log:" >&2
  cat "$3" >&2
  return 1
}
failures=0
check() { # NAME COMMAND...
  local name=$1; shift
  if "$@"; then echo "ok   $name"; else echo "FAIL $name"; failures=$((failures + 1)); fi
}

# --- the log key, two witnesses, the policy ---------------------------------------------------
mkdir -p "$work/data"
"$custody" keygen --origin ci.interop.example/witnessed --out "$work/data/log.key" >/dev/null
log_vkey=$(cat "$work/data/log.key.pub")
policy="$work/witnesses.policy"
echo "log $log_vkey" >"$policy"
for w in a b; do
  vkey=$("$custody" witness keygen --data "$work/witness-$w" --name "$w.witness.interop.example" | sed -n 2p)
  port=$(free_port)
  "$custody" witness serve --listen "127.0.0.1:$port" --data "$work/witness-$w" \
    --accept "$log_vkey" >"$work/witness-$w.log" 2>&1 &
  pids+=($!)
  wait_http "http://127.0.0.1:$port/" "witness $w" "$work/witness-$w.log"
  echo "witness $w $vkey http://127.0.0.1:$port" >>"$policy"
done
printf 'group both all a b\nquorum both\n' >>"$policy"

# --- the gateway ------------------------------------------------------------------------------
"$custody" token create ci >"$work/token.txt"
token=$(head -n 1 "$work/token.txt")
port=$(free_port)
cat >"$work/custody.toml" <<EOF
[server]
listen = "127.0.0.1:$port"
data_dir = "$work/data"

$(grep -v '^#' "$work/token.txt" | tail -n +2)

[witness]
policy = "$policy"
mode = "required"
max_lag = "10s"

[endpoints.fixture.upstream]
transport = "stdio"
command = "$custody"
args = ["demo-server", "--conformance"]
EOF
"$custody" serve --config "$work/custody.toml" >"$work/gateway.log" 2>&1 &
gateway_pid=$!
pids+=($gateway_pid)
wait_http "http://127.0.0.1:$port/healthz" gateway "$work/gateway.log"

job() {
  (cd "$work" && CUSTODY_TOKEN="$token" CUSTODY_EVIDENCE="$work/evidence.json" \
    "$python" "$here/python_stdio.py" "$custody" "http://127.0.0.1:$port/mcp/fixture" \
    test_simple_text '{}' "This is a simple text response")
}
check "witnessed: the Python client's calls through custody connect --evidence (2-of-2, required)" job

cosigned() {
  curl -sf "http://127.0.0.1:$port/api/v1/log/checkpoint" >"$work/checkpoint.txt" || return 1
  grep -c '^— [ab].witness.interop.example ' "$work/checkpoint.txt" | grep -qx 2
}
check "witnessed: the published checkpoint carries both witnesses' cosignatures" cosigned

evidence_holds() {
  "$custody" verify --evidence "$work/evidence.json" --gateway "http://127.0.0.1:$port" \
    --key "$log_vkey" --witness-policy "$policy"
}
check "witnessed: the job's evidence holds against the gateway (consistency proof, cosigned)" evidence_holds

kill -TERM "$gateway_pid" && wait "$gateway_pid" || true
check "witnessed: the stopped log verifies with the witness policy" \
  "$custody" verify --data "$work/data" --key "$log_vkey" --witness-policy "$policy"

# --- the operator rewrites history and re-signs it with the real key ---------------------------
"$attacker" "$here/rewrite_log.py" "$work/data" 3

evidence_catches() {
  if out=$("$custody" verify --evidence "$work/evidence.json" --data "$work/data" --key "$log_vkey" 2>&1); then
    echo "$out"; return 1
  fi
  grep -q "changed after the job ran\|was rewritten" <<<"$out"
}
check "witnessed: the job's evidence proves the rewrite offline" evidence_catches

policy_catches() {
  if out=$("$custody" verify --data "$work/data" --key "$log_vkey" --witness-policy "$policy" 2>&1); then
    echo "$out"; return 1
  fi
  grep -q "not cosigned" <<<"$out"
}
check "witnessed: custody verify --witness-policy fails on the re-signed log" policy_catches

witnesses_refuse() {
  if out=$(timeout 30 "$custody" serve --config "$work/custody.toml" 2>&1); then
    echo "$out"; return 1
  fi
  grep -q "FORK" <<<"$out"
}
check "witnessed: the witnesses refuse the re-signed log; the gateway raises the fork alarm and does not start" witnesses_refuse

echo "witnessed: $failures failure(s)"
[[ $failures -eq 0 ]]
