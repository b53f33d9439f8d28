# Identity interop, sourced by run.sh: tokens issued by oauth2-mock-server (a real third-party
# OIDC issuer on loopback) against a gateway that accepts nobody without a valid token.

issuer_port=$(free_port)
# Node resolves ES module imports next to the script: give it the cache's node_modules.
ln -sfn "$npm_root" "$work/node_modules"
cp "$here/oidc_issuer.mjs" "$work/oidc_issuer.mjs"
node "$work/oidc_issuer.mjs" "$issuer_port" >"$work/issuer.log" 2>&1 &
pids+=($!)
wait_http "http://127.0.0.1:$issuer_port/.well-known/openid-configuration" "oauth2-mock-server" "$work/issuer.log"
issuer_url=$(head -n 1 "$work/issuer.log")

# The strict gateway also enforces an access policy (checked first with custody policy check).
cat >"$work/strict.cedar" <<'CEDAR'
@id("acme-ci")
permit(principal, action, resource) when { principal.repository_owner == "acme" };

@id("interop-operator")
permit(principal, action, resource) when { principal.kind == "static" && principal.name == "interop" };

@id("no-images")
forbid(principal, action == Action::"tools/call", resource)
when { resource.name == "test_image_content" };
CEDAR

strict_port=$(free_port)
cat >"$work/strict.toml" <<TOML
[server]
listen = "127.0.0.1:$strict_port"
data_dir = "$work/strict-data"

[[auth.oidc]]
issuer = "$issuer_url"
audiences = ["custody-interop"]
claims = ["repository", "repository_owner", "ref", "sha", "workflow_ref", "job_workflow_ref",
          "run_id", "run_attempt", "actor", "environment", "event_name"]
name = "{repository}@{ref}"
[auth.oidc.required_claims]
repository_owner = "acme"

$(grep -v '^#' "$work/static-token.txt" | tail -n +2)

[policy]
files = ["strict.cedar"]

[endpoints.fixture.upstream]
transport = "http"
url = "$fixture"

# The demo server's customer record, masked: the email for the client, the name in the log.
[endpoints.demo.upstream]
transport = "stdio"
command = "$custody"
args = ["demo-server"]

[[endpoints.demo.mask_client]]
path = "\$..email"
action = "partial"
keep = 4

[[endpoints.demo.mask_audit]]
path = "\$.result.structuredContent.name"
action = "hmac"

# The same record as JSON text: there the text's own value is the root.
[[endpoints.demo.mask_audit]]
path = "\$.name"
action = "hmac"
TOML
check "policy: custody policy check accepts the strict gateway's policy" \
  "$custody" policy check --config "$work/strict.toml"
"$custody" serve --config "$work/strict.toml" >"$work/strict.log" 2>&1 &
strict_pid=$!
pids+=($strict_pid)
wait_http "http://127.0.0.1:$strict_port/healthz" "custody (strict)" "$work/strict.log"
strict="http://127.0.0.1:$strict_port/mcp/fixture"

issue() { # SCOPE AUDIENCE: a token from the issuer's token endpoint
  curl -sf -d grant_type=client_credentials -d "scope=$1" -d "aud=$2" "$issuer_url/token" |
    python3 -c 'import json, sys; print(json.load(sys.stdin)["access_token"])'
}
github_token=$(issue github-actions custody-interop)

check "identity: GitHub Actions-shaped token from oauth2-mock-server, python client (both generations)" \
  env CUSTODY_TOKEN="$github_token" "$python" "$here/python_client.py" "$strict" test_simple_text '{}' "simple text response"
check "identity: static token from custody token create, python client" \
  env CUSTODY_TOKEN="$static_token" "$python" "$here/python_client.py" "$strict" test_simple_text '{}' "simple text response" --session-only
check "identity: static token, inspector CLI" \
  inspector '"name": "test_simple_text"' "$strict" --method tools/list

check "masking: the python client receives the customer's email masked" \
  env CUSTODY_TOKEN="$github_token" "$python" "$here/python_client.py" "http://127.0.0.1:$strict_port/mcp/demo" \
  lookup_customer '{"id": "c-1"}' '"email":"****.com"' --session-only
check "policy: a denied tool reaches the python client as a clear error" \
  env CUSTODY_TOKEN="$github_token" "$python" "$here/python_denied.py" "$strict" test_image_content \
  'denied by policy: tools/call of "test_image_content" on endpoint "fixture" is forbidden by no-images'
echo '{"iss": "'"$issuer_url"'", "sub": "repo:acme/api:ref:refs/heads/main", "repository_owner": "acme", "repository": "acme/api"}' >"$work/claims.json"
check "policy: custody policy eval predicts the same decision" \
  "$custody" policy eval --config "$work/strict.toml" --principal "$work/claims.json" \
  --endpoint fixture --method tools/call --tool test_image_content --expect deny

refused() { # EXPECT [TOKEN]: the call is refused with 401, the challenge and the reason
  local expect=$1 token=${2:-} headers
  headers=$(curl -s -o /dev/null -D - -X POST "$strict" \
    -H 'content-type: application/json' -H 'accept: application/json, text/event-stream' \
    -H 'mcp-protocol-version: 2025-11-25' ${token:+-H "authorization: Bearer $token"} \
    -d '{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-11-25","capabilities":{},"clientInfo":{"name":"curl","version":"0"}}}')
  grep -q '^HTTP/1.1 401' <<<"$headers" || { echo "not 401: $headers"; return 1; }
  grep -qi "^www-authenticate: Bearer resource_metadata=\"http://127.0.0.1:$strict_port/.well-known/oauth-protected-resource/mcp/fixture\", error=\"invalid_token\"" <<<"$headers" ||
    { echo "no challenge: $headers"; return 1; }
  grep -q -- "$expect" <<<"$headers" || { echo "expected '$expect' in: $headers"; return 1; }
}
check "identity: no token is a 401 with a challenge" refused "no bearer token"
check "identity: a token for another audience is refused" \
  refused "wrong audience" "$(issue github-actions sts.amazonaws.com)"
check "identity: a token without the required claim is refused" \
  refused "required claim 'repository_owner' is missing" "$(issue plain-client custody-interop)"

metadata() {
  local doc
  doc=$(curl -sf "http://127.0.0.1:$strict_port/.well-known/oauth-protected-resource/mcp/fixture") || return 1
  echo "$doc"
  python3 - "$doc" "$issuer_url" "http://127.0.0.1:$strict_port/mcp/fixture" <<'PY'
import json, sys
doc, issuer, resource = json.loads(sys.argv[1]), sys.argv[2], sys.argv[3]
assert doc["resource"] == resource, doc
assert doc["authorization_servers"] == [issuer], doc
assert doc["bearer_methods_supported"] == ["header"], doc
PY
}
check "identity: RFC 9728 metadata names the issuer" metadata

claims_in_log() {
  kill -TERM "$strict_pid" && wait "$strict_pid" || true
  "$custody" log --data "$work/strict-data" >"$work/strict-entries.jsonl" || return 1
  python3 - "$work/strict-entries.jsonl" "$issuer_url" "$github_token" "$static_token" <<'PY'
import json, sys
entries = [json.loads(l) for l in open(sys.argv[1])]
issuer, github_token, static_token = sys.argv[2], sys.argv[3], sys.argv[4]
github = [e for e in entries if e["kind"] == "request" and e["caller"].get("kind") == "oidc"]
assert github, "no request entry with an OIDC principal"
want = {
    "repository": "acme/api", "repository_owner": "acme", "ref": "refs/heads/main",
    "sha": "5d8f1e2a9c7b3f4e6a1d0c9b8a7f6e5d4c3b2a19",
    "workflow_ref": "acme/api/.github/workflows/deploy.yml@refs/heads/main",
    "job_workflow_ref": "acme/api/.github/workflows/deploy.yml@refs/heads/main",
    "run_id": "9134577181", "run_attempt": "1", "actor": "octocat",
    "environment": "production", "event_name": "push",
}
for e in github:
    c = e["caller"]
    assert c["verified"] is True and c["issuer"] == issuer, c
    assert c["subject"] == "repo:acme/api:environment:production", c
    assert c["name"] == "acme/api@refs/heads/main", c
    assert c["claims"] == want, c
static = [e for e in entries if e["kind"] == "request" and e["caller"].get("kind") == "static"]
assert static and all(e["caller"]["name"] == "interop" for e in static), static
denied = [e for e in entries if e["kind"] == "rejected" and e["detail"].get("policy")]
assert [d["detail"]["policy"] for d in denied] == [{"decision": "deny", "policies": ["no-images"]}], denied
assert all(e["detail"]["policy"]["decision"] == "allow" for e in github), github
masked = [e for e in entries if e["kind"] == "response" and e["detail"].get("mask")]
assert masked, "no masked response"
report = {(m["path"], m["by"]) for m in masked[0]["detail"]["mask"]}
assert ("/result/structuredContent/email", "rule $..email") in report, report
assert ("/result/structuredContent/name", "rule $.result.structuredContent.name") in report, report
assert ("/result/structuredContent/card_number", "detector card_number") in report, report
stored = masked[0]["message"]["result"]["structuredContent"]
assert stored["email"] == "****.com" and stored["name"].startswith("hmac-sha256:"), stored
assert "ada@example.com" not in open(sys.argv[1]).read() and "Ada Lovelace" not in open(sys.argv[1]).read()
failures = [e for e in entries if e["kind"] == "auth_failure"]
reasons = sorted(e["detail"]["reason"] for e in failures)
assert reasons == ["claim_missing", "no_token", "wrong_audience"], reasons
assert all(e["caller"]["verified"] is False for e in failures)
text = open(sys.argv[1]).read()
for secret in (github_token, static_token, github_token.split(".")[2]):
    assert secret not in text, "a token is in the log"
print(f"{len(github)} requests by acme/api@refs/heads/main with its GitHub claims, "
      f"{len(static)} by the static token, auth failures: {', '.join(reasons)}")
PY
}
check "identity: the log carries the GitHub Actions claims and the failures, never a token" claims_in_log
verify_strict() {
  "$custody" verify --data "$work/strict-data" | grep -q 'custody verify: OK'
}
check "identity: custody verify on the strict gateway's log" verify_strict
