# The Docker Compose quick start without a Docker engine, sourced by run.sh: compose.yaml and the
# Dockerfile are checked for what docs/deploy.md promises, and the gateway runs the compose
# configuration as the container would (its paths mapped onto this machine), in front of the
# demo server over HTTP, for the quick start's client with the quick start's token.

check "compose: compose.yaml, deploy/compose and the Dockerfile are consistent" \
  "$python" "$here/check_compose.py" "$here/../.."

compose_dir="$work/compose"
mkdir -p "$compose_dir/data"
chmod 700 "$compose_dir/data"
cp -r "$here/../../deploy/compose/policies" "$compose_dir/policies"
cp "$here/../../deploy/compose/demo-api-key.txt" "$compose_dir/demo_api_key"
compose_demo_port=$(free_port)
"$custody" demo-server --http "127.0.0.1:$compose_demo_port" >"$work/compose-demo.log" 2>&1 &
pids+=($!)
compose_port=$(free_port)
sed -e "s|0.0.0.0:8080|127.0.0.1:$compose_port|" \
    -e "s|/var/lib/custody|$compose_dir/data|" \
    -e "s|/run/secrets/demo_api_key|$compose_dir/demo_api_key|" \
    -e "s|http://demo:3000/mcp|http://127.0.0.1:$compose_demo_port/mcp|" \
    "$here/../../deploy/compose/custody.toml" >"$compose_dir/custody.toml"
check "compose: custody check-config accepts the compose configuration" \
  "$custody" check-config --config "$compose_dir/custody.toml"
"$custody" serve --config "$compose_dir/custody.toml" >"$work/compose.log" 2>&1 &
compose_pid=$!
pids+=($compose_pid)
wait_http "http://127.0.0.1:$compose_port/healthz" "custody (compose configuration)" "$work/compose.log"
compose_quickstart() {
  local out
  out=$(CUSTODY_TOKEN=cst_quickstart-replace-me-before-exposing-the-gateway \
    "$python" "$here/../../examples/quickstart.py" "http://127.0.0.1:$compose_port/mcp/demo" 2>&1) || { echo "$out"; return 1; }
  echo "$out"
  grep -q "echo: hello through custody" <<<"$out"
}
check "compose: the quick start's client and token through the compose configuration" compose_quickstart
