# Approval interop, sourced by run.sh: the official Python MCP client calls the demo's `deploy`
# on the embedded default (the demo policy holds it), waits with progress notifications, and
# a second process, `custody approvals`, approves or denies it.

approvals_port=$(free_port)
start_embedded approvals "$approvals_port"
approvals_pid=$embedded_pid
approvals_gw="http://127.0.0.1:$approvals_port"

approver() { # custody approvals ... as the embedded default's approver
  "$custody" approvals --gateway "$approvals_gw" --token-file "$work/approvals/custody-data/approver-token" "$@"
}

# Starts the example in the background (its pid in held_pid).
start_held() { # VERSION OUTPUT
  (cd "$work/approvals" && exec "$python" "$here/../../examples/deploy_with_approval.py" "$approvals_gw/mcp/demo" "$1") >"$2" 2>&1 &
  held_pid=$!
}

# Prints the id of the approval the held call waits for.
held_id() { # OUTPUT
  for _ in $(seq 1 100); do
    local id
    id=$(approver list --json | python3 -c 'import json, sys; a = json.load(sys.stdin)["approvals"]; print(a[0]["id"] if a else "")')
    if [[ -n $id ]]; then echo "$id"; return 0; fi
    sleep 0.1
  done
  echo "no approval appeared; the client said:" >&2
  cat "$1" >&2
  return 1
}

approve_flow() {
  local id out
  start_held 1.4.2 "$work/held-approve.txt"
  id=$(held_id "$work/held-approve.txt") || return 1
  approver show "$id" | grep -q '"version": "1.4.2"' || { approver show "$id"; return 1; }
  out=$(approver approve "$id" --reason "interop") || { echo "$out"; return 1; }
  echo "$out"
  wait "$held_pid" || { cat "$work/held-approve.txt"; return 1; }
  cat "$work/held-approve.txt"
  grep -q "^waiting: waiting for approval $id" "$work/held-approve.txt" &&
    grep -q "^deploy: deployed api 1.4.2 to staging" "$work/held-approve.txt"
}
check "approvals: the Python client waits with progress until custody approvals approve releases the call" approve_flow

deny_flow() {
  local id
  start_held 9.9.9 "$work/held-deny.txt"
  id=$(held_id "$work/held-deny.txt") || return 1
  # The requester cannot approve its own call, and the dev token is no approver.
  if "$custody" approvals --gateway "$approvals_gw" --token-file "$work/approvals/custody-data/dev-token" approve "$id" 2>"$work/self.txt"; then
    echo "the dev token approved a call"; return 1
  fi
  grep -q "403 Forbidden" "$work/self.txt" || { cat "$work/self.txt"; return 1; }
  approver deny "$id" --reason "9.9.9 is not a release" || return 1
  if wait "$held_pid"; then echo "the denied call succeeded"; cat "$work/held-deny.txt"; return 1; fi
  cat "$work/held-deny.txt"
  grep -q "deploy refused: denied by approver approver: 9.9.9 is not a release (approval $id)" "$work/held-deny.txt"
}
check "approvals: a denial reaches the Python client with the approver's name and reason" deny_flow

approvals_log() {
  kill -TERM "$approvals_pid" && wait "$approvals_pid" || true
  local kinds
  kinds=$(cd "$work/approvals" && "$custody" log | python3 -c '
import json, sys
print(" ".join(e["kind"] for e in map(json.loads, sys.stdin) if e["kind"].startswith("approval_")))')
  echo "$kinds"
  [[ $kinds == "approval_requested approval_granted approval_requested approval_denied" ]] &&
    (cd "$work/approvals" && "$custody" verify | head -n 1 | grep -q "custody verify: OK")
}
check "approvals: the log holds each step and custody verify passes" approvals_log
