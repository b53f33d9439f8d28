# custody connect, sourced by run.sh after identity.sh: the official Python client's stdio
# transport starts `custody connect` as its MCP server, with a GitHub Actions-shaped token from
# oauth2-mock-server in CUSTODY_TOKEN (as a GitLab job passes its id_token), in front of a
# gateway that accepts that issuer and injects the upstream's credential by reference.

connect_port=$(free_port)
echo "fixture-upstream-secret-value" >"$work/fixture-secret"
sed -e "s|127.0.0.1:$strict_port|127.0.0.1:$connect_port|" \
    -e "s|$work/strict-data|$work/connect-data|" \
    -e 's|audiences = \["custody-interop"\]|audiences = ["custody-interop", "custody"]|' \
    "$work/strict.toml" >"$work/connect.toml"
cat >>"$work/connect.toml" <<TOML

[endpoints.fixture-keyed.upstream]
transport = "http"
url = "$fixture"
headers = { X-Api-Key = "\${file:$work/fixture-secret}" }

# The examples' workflows call the tool \`deploy\`.
[endpoints.deploy.upstream]
transport = "stdio"
command = "$custody"
args = ["demo-server"]
TOML
"$custody" serve --config "$work/connect.toml" >"$work/connect.log" 2>&1 &
connect_pid=$!
pids+=($connect_pid)
wait_http "http://127.0.0.1:$connect_port/healthz" "custody (connect)" "$work/connect.log"

check "connect: the Python client's stdio transport through custody connect, with the job's token" \
  env CUSTODY_TOKEN="$github_token" "$python" "$here/python_stdio.py" "$custody" \
  "http://127.0.0.1:$connect_port/mcp/fixture-keyed" test_simple_text '{}' "simple text response"

connect_refused() {
  local err
  if err=$(CUSTODY_TOKEN="$(issue github-actions sts.amazonaws.com)" "$custody" connect \
      "http://127.0.0.1:$connect_port/mcp/fixture" 2>&1 <<<'{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-11-25","capabilities":{},"clientInfo":{"name":"ci","version":"1"}}}'); then
    echo "custody connect succeeded with a token for another audience"; return 1
  fi
  echo "$err" | tail -n 1
  grep -q "refused the token from \$CUSTODY_TOKEN: wrong audience" <<<"$err"
}
check "connect: a refused token ends custody connect non-zero with the gateway's reason" connect_refused


# The example workflows' own scripts, as written: GitHub's (its token from a loopback service
# that behaves like GitHub's) and GitLab's (its id_token in CUSTODY_TOKEN).
gh_port=$(free_port)
"$python" "$here/github_token_service.py" "$gh_port" "$issuer_url" gha-request-token >"$work/gh-token.log" 2>&1 &
pids+=($!)
wait_http "http://127.0.0.1:$gh_port/" "the GitHub token service" "$work/gh-token.log"
custody_dir=$(dirname "$custody")

github_example() {
  local out
  "$python" "$here/example_script.py" "$here/../../examples/github-actions.yml" >"$work/gh-script.py" || return 1
  mkdir -p "$work/gh-job"
  out=$(cd "$work/gh-job" && env -i PATH="$custody_dir:$PATH" HOME="$HOME" CUSTODY_URL="http://127.0.0.1:$connect_port" GITHUB_SHA=5d8f1e2a9c0b \
    ACTIONS_ID_TOKEN_REQUEST_URL="http://127.0.0.1:$gh_port/token?api-version=2.0" \
    ACTIONS_ID_TOKEN_REQUEST_TOKEN=gha-request-token "$python" "$work/gh-script.py" 2>&1) || { echo "$out"; return 1; }
  echo "$out"
  grep -q "deployed api 5d8f1e2 to production" <<<"$out" || return 1
  # The job's evidence (the artifact the workflow uploads) checks against the gateway.
  "$custody" verify --evidence "$work/gh-job/custody-evidence.json" --gateway "http://127.0.0.1:$connect_port"
}
check "examples: the GitHub Actions workflow's script, with GitHub's token variables" github_example

gitlab_example() {
  local out
  "$python" "$here/example_script.py" "$here/../../examples/gitlab-ci.yml" >"$work/gl-script.py" || return 1
  mkdir -p "$work/gl-job"
  out=$(cd "$work/gl-job" && env -i PATH="$custody_dir:$PATH" HOME="$HOME" CUSTODY_URL="http://127.0.0.1:$connect_port" CI_COMMIT_SHORT_SHA=5d8f1e2a \
    CUSTODY_TOKEN="$github_token" "$python" "$work/gl-script.py" 2>&1) || { echo "$out"; return 1; }
  echo "$out"
  grep -q "deployed api 5d8f1e2a to staging" <<<"$out"
}
check "examples: the GitLab CI job's script, with its id_token in CUSTODY_TOKEN" gitlab_example

connect_log() {
  kill -TERM "$connect_pid" && wait "$connect_pid" || true
  "$custody" log --data "$work/connect-data" >"$work/connect-entries.jsonl" || return 1
  python3 - "$work/connect-entries.jsonl" <<'PY'
import json, sys
entries = [json.loads(l) for l in open(sys.argv[1])]
calls = [e for e in entries if e["kind"] == "request" and e["endpoint"] == "fixture-keyed"]
assert calls, "no requests through custody connect"
for e in calls:
    assert e["caller"]["claims"]["repository"] == "acme/api", e["caller"]
text = open(sys.argv[1]).read()
assert "fixture-upstream-secret-value" not in text, "the upstream credential is in the log"
print(f"{len(calls)} requests through custody connect, each with the job's claims")
PY
}
check "connect: the log holds the job's calls with its claims and never the upstream credential" connect_log
