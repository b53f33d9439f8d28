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

# The replicas variant (compose.replicas.yaml): its configuration on two custody processes, as
# the containers run it, against a scratch database of this machine's PostgreSQL in place of
# the compose one; the quick start's client through each replica, and one log.
replicas_db="custody_compose_$$"
PGOPTIONS='--client-min-messages=warning' psql -h 127.0.0.1 -U postgres -d postgres -q \
  -c "DROP DATABASE IF EXISTS $replicas_db WITH (FORCE)" -c "CREATE DATABASE $replicas_db"
printf 'postgres://postgres@127.0.0.1:5432/%s\n' "$replicas_db" >"$compose_dir/postgres_url"
mkdir -p "$compose_dir/keys"
chmod 700 "$compose_dir/keys"
replica_ports=()
for n in 1 2; do
  mkdir -p "$compose_dir/replica-$n"
  chmod 700 "$compose_dir/replica-$n"
  # Beside the configuration, as /etc/custody/policies is beside /etc/custody/custody.toml.
  cp -r "$compose_dir/policies" "$compose_dir/replica-$n/policies"
  port=$(free_port)
  replica_ports+=("$port")
  sed -e "s|0.0.0.0:8080|127.0.0.1:$port|" \
      -e "s|/var/lib/custody-keys|$compose_dir/keys|" \
      -e "s|/var/lib/custody\"|$compose_dir/replica-$n\"|" \
      -e "s|/run/secrets/demo_api_key|$compose_dir/demo_api_key|" \
      -e "s|/run/secrets/postgres_url|$compose_dir/postgres_url|" \
      -e "s|http://demo:3000/mcp|http://127.0.0.1:$compose_demo_port/mcp|" \
      -e "s|^origin = |replica = \"custody-$n\"\norigin = |" \
      "$here/../../deploy/compose/replicas/custody.toml" >"$compose_dir/replica-$n/custody.toml"
  # Started one after the other, as the second container does after losing the race for the
  # shared keys.
  "$custody" serve --config "$compose_dir/replica-$n/custody.toml" >"$work/compose-replica-$n.log" 2>&1 &
  pids+=($!)
  wait_http "http://127.0.0.1:$port/healthz" "custody replica $n (compose replicas configuration)" "$work/compose-replica-$n.log"
done
compose_replicas_quickstart() {
  local out port
  for port in "${replica_ports[@]}"; do
    out=$(CUSTODY_TOKEN=cst_quickstart-replace-me-before-exposing-the-gateway \
      "$python" "$here/../../examples/quickstart.py" "http://127.0.0.1:$port/mcp/demo" 2>&1) || { echo "$out"; return 1; }
    grep -q "echo: hello through custody" <<<"$out" || { echo "$out"; return 1; }
  done
  psql -h 127.0.0.1 -U postgres -d "$replicas_db" -At -c \
    "SELECT count(DISTINCT replica) || ' replicas wrote ' || count(*) || ' entries, indices 0..' || max(idx) FROM entries" \
    | tee /dev/stderr | grep -q '^2 replicas'
}
check "compose: the quick start's client through each of the replicas variant's two replicas, one log in PostgreSQL" compose_replicas_quickstart
