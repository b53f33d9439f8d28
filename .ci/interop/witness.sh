#!/usr/bin/env bash
# Witness interop, both directions, against a third-party C2SP tlog-witness implementation
# (aics-witness, with aics-tlog; Python 3.12, installed by install.sh into CACHE/witness-venv):
#
# 1. custody's witness client (crates/custody/tests/witness_interop.rs) against an
#    aics-witness server: cosignatures verified with its key, 409 re-sync, its monitoring
#    checkpoint, a rewritten history (fork) and a restored backup (rollback) refused.
# 2. aics-witness's feeder, with a log built and signed by aics-tlog, against
#    `custody witness serve`: cosignatures verified by aics-tlog, 409 re-sync, a fork refused
#    with 422, the monitoring checkpoint verified by aics-tlog.
#
# run.sh runs it. Everything binds to 127.0.0.1 on free ports and is stopped on exit.
#
# usage: witness.sh CUSTODY_BINARY CACHE_DIR
set -euo pipefail
custody=${1:?usage: witness.sh CUSTODY_BINARY CACHE_DIR}
cache=${2:?usage: witness.sh CUSTODY_BINARY CACHE_DIR}
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
venv="$cache/witness-venv"
if [[ ! -x "$venv/bin/aics-witness" ]]; then
  echo "aics-witness is not installed in $venv (install.sh needs Python 3.12 for it)" >&2
  exit 1
fi

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

# --- 1. custody's client -> aics-witness ------------------------------------------------
"$custody" keygen --origin interop.example/custody --out "$work/log.key" >/dev/null
aics_port=$(free_port)
aics_vkey=$("$venv/bin/aics-witness" init --config "$work/aics/witness.json" \
  --name aics.interop.example/w1 --listen "127.0.0.1:$aics_port" 2>/dev/null | tail -n 1)
"$venv/bin/aics-witness" add-log --config "$work/aics/witness.json" \
  --origin interop.example/custody --vkey "$(cat "$work/log.key.pub")" >/dev/null 2>&1
"$venv/bin/aics-witness" serve --config "$work/aics/witness.json" >"$work/aics.log" 2>&1 &
pids+=($!)
wait_http "http://127.0.0.1:$aics_port/healthz" aics-witness "$work/aics.log"
client_to_aics() {
  (cd "$root" && CUSTODY_INTEROP_WITNESS_URL="http://127.0.0.1:$aics_port" \
    CUSTODY_INTEROP_WITNESS_VKEY="$aics_vkey" CUSTODY_INTEROP_LOG_KEY="$work/log.key" \
    cargo test --quiet -p custody --test witness_interop -- --ignored --nocapture)
}
check "custody witness client -> aics-witness ($aics_vkey)" client_to_aics

# --- 2. aics-witness's feeder -> custody witness serve ----------------------------------
feeder="$here/witness_feeder.py"
log_vkey=$("$venv/bin/python" "$feeder" vkey "$work/aics-log.seed")
witness_vkey=$("$custody" witness keygen --data "$work/custody-witness" --name custody.interop.example/w \
  | sed -n 2p)
custody_port=$(free_port)
"$custody" witness serve --listen "127.0.0.1:$custody_port" --data "$work/custody-witness" \
  --accept "$log_vkey" >"$work/custody-witness.log" 2>&1 &
pids+=($!)
wait_http "http://127.0.0.1:$custody_port/" "custody witness" "$work/custody-witness.log"
check "aics-witness feeder (aics-tlog log) -> custody witness serve ($witness_vkey)" \
  "$venv/bin/python" "$feeder" feed "$work/aics-log.seed" "http://127.0.0.1:$custody_port" "$witness_vkey"

echo "witness interop: $failures failure(s)"
[[ $failures -eq 0 ]]
