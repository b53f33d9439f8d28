#!/usr/bin/env bash
# /metrics against a real Prometheus (Debian's `prometheus` package, installed when missing):
#   1. a gateway with /metrics on a listener of its own behind a bearer token ([metrics]), the
#      demo server as its endpoint, and calls made to it (tools/list, tools/call, a refusal);
#   2. the scrape, with the token, passes `promtool check metrics` with nothing to say (no error,
#      no lint warning); without the token it is refused, and the main listener has no /metrics;
#   3. a Prometheus server on loopback scrapes it every second (the token from a file, as a
#      PodMonitor's authorization would send it), and its HTTP API answers queries about the
#      calls just made: custody_requests_total for the tools/call, the tool label, the refusal.
#
# usage: prometheus.sh CUSTODY_BINARY [CACHE_DIR]
set -euo pipefail
custody=${1:?usage: prometheus.sh CUSTODY_BINARY [CACHE_DIR]}
started=$SECONDS

if ! command -v promtool >/dev/null || ! command -v prometheus >/dev/null; then
  if [[ $(id -u) -ne 0 ]] || ! command -v apt-get >/dev/null; then
    echo "FAIL prometheus and promtool are not installed, and apt-get cannot install them here (needs root and apt: apt-get install prometheus)" >&2
    exit 1
  fi
  echo "installing Debian's prometheus package"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >/dev/null
  if ! apt-get install -y -qq --no-install-recommends prometheus >/dev/null; then
    echo "FAIL apt-get install prometheus failed" >&2
    exit 1
  fi
fi
echo "$(prometheus --version 2>&1 | head -n 1)"

work=$(mktemp -d)
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
fail() { echo "FAIL $*" >&2; exit 1; }

# --- 1. the gateway, and calls to it ----------------------------------------------------------
gateway_port=$(free_port)
metrics_port=$(free_port)
od -An -tx1 -N16 /dev/urandom | tr -d ' \n' >"$work/metrics-token"
chmod 600 "$work/metrics-token"
cat >"$work/custody.toml" <<EOF
[server]
listen = "127.0.0.1:$gateway_port"
data_dir = "$work/data"

[auth]
anonymous = true

[metrics]
listen = "127.0.0.1:$metrics_port"
token = "\${file:$work/metrics-token}"

[endpoints.demo.upstream]
transport = "stdio"
command = "$custody"
args = ["demo-server"]
EOF
"$custody" serve --config "$work/custody.toml" >"$work/gateway.out" 2>"$work/gateway.log" &
pids+=($!)
for _ in $(seq 1 100); do
  curl -sf -o /dev/null "http://127.0.0.1:$metrics_port/healthz" && break
  sleep 0.1
done
curl -sf -o /dev/null "http://127.0.0.1:$metrics_port/readyz" || { cat "$work/gateway.log" >&2; fail "the gateway is not ready"; }

call() { # METHOD PARAMS_JSON: a 2026-07-28 request to the demo endpoint; prints the answer
  local method=$1 params=$2 name
  name=$(python3 -c 'import json,sys; print(json.loads(sys.argv[1]).get("name", ""))' "$params")
  curl -s -X POST "http://127.0.0.1:$gateway_port/mcp/demo" \
    -H 'content-type: application/json' -H 'accept: application/json, text/event-stream' \
    -H 'mcp-protocol-version: 2026-07-28' -H "mcp-method: $method" ${name:+-H "mcp-name: $name"} \
    -d "$(python3 - "$method" "$params" <<'PY'
import json, sys
params = json.loads(sys.argv[2])
params["_meta"] = {
    "io.modelcontextprotocol/protocolVersion": "2026-07-28",
    "io.modelcontextprotocol/clientCapabilities": {},
    "io.modelcontextprotocol/clientInfo": {"name": "prometheus.sh", "version": "1"},
}
print(json.dumps({"jsonrpc": "2.0", "id": 1, "method": sys.argv[1], "params": params}))
PY
)"
}
call tools/list '{}' | grep -q '"echo"' || fail "tools/list through the gateway"
call tools/call '{"name": "echo", "arguments": {"text": "counted"}}' | grep -q 'counted' || fail "tools/call echo through the gateway"
# A refusal: the wrong Host (DNS-rebinding protection), before any message is read.
status=$(curl -s -o /dev/null -w '%{http_code}' -X POST "http://127.0.0.1:$gateway_port/mcp/demo" \
  -H 'host: attacker.example' -H 'content-type: application/json' -d '{}')
[[ $status == 403 ]] || fail "a request with a foreign Host was answered $status, not 403"
echo "ok   calls made: tools/list, tools/call echo, one refused Host"

# --- 2. the scrape, checked by promtool --------------------------------------------------------
metrics="http://127.0.0.1:$metrics_port/metrics"
status=$(curl -s -o /dev/null -w '%{http_code}' "$metrics")
[[ $status == 401 ]] || fail "/metrics without the token answered $status, not 401"
status=$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$gateway_port/metrics")
[[ $status == 404 ]] || fail "/metrics on the main listener answered $status, not 404 (it has a listener of its own)"
curl -sf -H "authorization: Bearer $(cat "$work/metrics-token")" "$metrics" >"$work/scrape.txt" ||
  fail "/metrics with the token"
echo "ok   scrape: $(grep -c '^# TYPE' "$work/scrape.txt") metric families, $(grep -vc '^#' "$work/scrape.txt") samples; 401 without the token"
if ! promtool check metrics <"$work/scrape.txt" >"$work/promtool.out" 2>&1; then
  cat "$work/promtool.out" >&2
  fail "promtool check metrics found errors"
fi
if [[ -s $work/promtool.out ]]; then
  cat "$work/promtool.out" >&2
  fail "promtool check metrics has lint warnings"
fi
echo "ok   promtool check metrics: no error, no lint warning"
# promtool must object to what is wrong, or its silence proves nothing: a counter renamed
# without its _total suffix.
sed 's/custody_requests_total/custody_requests_seen/g' "$work/scrape.txt" >"$work/broken.txt"
if promtool check metrics <"$work/broken.txt" >"$work/promtool-broken.out" 2>&1 && [[ ! -s $work/promtool-broken.out ]]; then
  fail "promtool said nothing about a counter without _total; it is not checking"
fi

# --- 3. a Prometheus server scraping the gateway -----------------------------------------------
prometheus_port=$(free_port)
cat >"$work/prometheus.yml" <<EOF
global:
  scrape_interval: 1s
  evaluation_interval: 1s
scrape_configs:
  - job_name: custody
    scrape_interval: 1s
    scrape_timeout: 1s
    authorization:
      type: Bearer
      credentials_file: $work/metrics-token
    static_configs:
      - targets: ["127.0.0.1:$metrics_port"]
EOF
promtool check config "$work/prometheus.yml" >/dev/null || fail "promtool check config"
prometheus --config.file="$work/prometheus.yml" --storage.tsdb.path="$work/tsdb" \
  --web.listen-address="127.0.0.1:$prometheus_port" >"$work/prometheus.log" 2>&1 &
pids+=($!)
api="http://127.0.0.1:$prometheus_port"
for _ in $(seq 1 100); do
  curl -sf -o /dev/null "$api/-/ready" && break
  sleep 0.2
done
curl -sf -o /dev/null "$api/-/ready" || { tail -n 20 "$work/prometheus.log" >&2; fail "prometheus did not become ready"; }

query() { # PROMQL: the value of its single result, or nothing
  curl -s --get --data-urlencode "query=$1" "$api/api/v1/query" | python3 -c '
import json, sys
doc = json.load(sys.stdin)
results = doc.get("data", {}).get("result", []) if doc.get("status") == "success" else []
print(results[0]["value"][1] if len(results) == 1 else "")'
}
expect() { # PROMQL VALUE: Prometheus answers VALUE within 20 s
  local got=""
  for _ in $(seq 1 40); do
    got=$(query "$1")
    [[ $got == "$2" ]] && { echo "ok   prometheus: $1 = $got"; return 0; }
    sleep 0.5
  done
  tail -n 20 "$work/prometheus.log" >&2
  curl -s "$api/api/v1/targets" >&2
  fail "prometheus: $1 is '$got', not $2"
}
expect 'up{job="custody"}' 1
expect 'custody_requests_total{job="custody",endpoint="demo",method="tools/call",outcome="ok"}' 1
expect 'custody_requests_total{job="custody",endpoint="demo",method="unknown",outcome="forbidden"}' 1
expect 'custody_tool_calls_total{job="custody",endpoint="demo",tool="echo",outcome="ok"}' 1
expect 'custody_request_duration_seconds_count{job="custody",endpoint="demo",method="tools/call",outcome="ok"}' 1
expect 'custody_audit_integrity_alarm{job="custody"}' 0
[[ -n $(query 'custody_audit_checkpoint_age_seconds{job="custody"} < 120') ]] || fail "the latest checkpoint is not fresh"
# A call made now shows up at the next scrape.
call tools/call '{"name": "echo", "arguments": {"text": "counted again"}}' | grep -q 'counted again' || fail "second tools/call"
expect 'custody_requests_total{job="custody",endpoint="demo",method="tools/call",outcome="ok"}' 2
echo "ok   prometheus.sh done in $((SECONDS - started)) s"
