"""Protocol probes: one exact request, sent to a server directly and through the gateway, and
both answers compared. Each reproduces one of issue 15's numbered differences; peers.sh runs
them as checks. Every probe prints what the client sent, what custody answered and what the
server answered directly, then `same` or what differs, and exits 1 on a difference.

usage:
  probes.py unsupported-version GATEWAY_URL -- DIRECT_STDIO_COMMAND...      (difference 1)
  probes.py removed-initialize GATEWAY_URL DIRECT_URL                        (difference 2)
  probes.py ndjson-stream GATEWAY_URL DIRECT_URL                             (difference 3)
  probes.py server-request GATEWAY_URL DIRECT_URL                            (difference 4)
  probes.py progress-token GATEWAY_URL DIRECT_URL                            (difference 5)
  probes.py shutdown-truth CUSTODY_BINARY WORK_DIR                           (difference 7)
  probes.py connect-404 CUSTODY_BINARY GATEWAY_URL                           (difference 8)
and two peers the probes need (test fakes, standing in for the servers named in each probe):
  probes.py --stdio-server      a newline-delimited JSON-RPC server: tools `echo` (answers
                                with the params it received) and `sleep` (touches $PROBE_MARKER,
                                then answers after `seconds`)
  probes.py --ndjson-upstream PORT   a 2026-07-28 HTTP server that answers every request with
                                newline-delimited JSON messages under Content-Type:
                                application/json, streamed one per second
$CUSTODY_TOKEN, when set, is sent as a bearer token to the gateway (only to URLs under /mcp/NAME).
Everything stays on 127.0.0.1.
"""

import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

MODERN = "2026-07-28"
RECEIPT = "dev.custody/receipt"


def meta(version=MODERN, **extra):
    return {
        "io.modelcontextprotocol/protocolVersion": version,
        "io.modelcontextprotocol/clientCapabilities": {},
        "io.modelcontextprotocol/clientInfo": {"name": "custody-probe", "version": "1"},
        **extra,
    }


def request(id_, method, params):
    return {"jsonrpc": "2.0", "id": id_, "method": method, "params": params}


def strip_receipt(message):
    if isinstance(message, dict) and isinstance(message.get("result"), dict):
        m = message["result"].get("_meta")
        if isinstance(m, dict) and RECEIPT in m:
            rest = {k: v for k, v in m.items() if k != RECEIPT}
            result = {k: v for k, v in message["result"].items() if k != "_meta"}
            if rest:
                result["_meta"] = rest
            return {**message, "result": result}
    return message


def canonical(value):
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


class Answer:
    """An HTTP answer read as it streams: each JSON-RPC message with the second it arrived."""

    def __init__(self):
        self.status = None
        self.content_type = None
        self.messages = []  # (seconds since sent, message)
        self.error = None
        self.seconds = None

    def show(self):
        lines = [f"HTTP {self.status} {self.content_type}" if self.status else "no HTTP answer"]
        lines += [f"  +{t:.1f}s {canonical(m)[:600]}" for t, m in self.messages]
        if self.error:
            lines.append(f"  {self.error}")
        return "\n".join(lines)


def post(url, body, timeout, version=MODERN, headers=None):
    """POSTs one JSON-RPC request the way a 2026-07-28 client does, reading the answer as it
    streams (JSON, newline-delimited JSON or SSE) until it ends or `timeout` seconds pass."""
    parsed = urllib.parse.urlsplit(url)
    h = {
        "Content-Type": "application/json",
        "Accept": "application/json, text/event-stream",
        "MCP-Protocol-Version": version,
        "Mcp-Method": body["method"],
    }
    if "name" in body.get("params", {}):
        h["Mcp-Name"] = body["params"]["name"]
    if os.environ.get("CUSTODY_TOKEN") and parsed.path.startswith("/mcp/"):
        h["Authorization"] = f"Bearer {os.environ['CUSTODY_TOKEN']}"
    h.update(headers or {})
    answer = Answer()
    started = time.monotonic()
    conn = http.client.HTTPConnection(parsed.hostname, parsed.port, timeout=timeout)
    try:
        conn.request("POST", parsed.path, json.dumps(body), h)
        sock = conn.sock
        response = conn.getresponse()
        answer.status, answer.content_type = response.status, response.getheader("Content-Type", "")
        buffer = b""
        while True:
            left = timeout - (time.monotonic() - started)
            if left <= 0:
                raise socket.timeout()
            sock.settimeout(left)
            chunk = response.read1(65536)
            if not chunk:
                break
            buffer += chunk
            buffer = parse_available(buffer, answer, started, sse="event-stream" in answer.content_type)
        parse_available(buffer + b"\n\n", answer, started, sse="event-stream" in answer.content_type)
    except (socket.timeout, TimeoutError):
        answer.error = f"no end of the answer after {timeout} s (the client gave up)"
    except (ConnectionError, http.client.HTTPException, OSError) as e:
        answer.error = f"connection failed: {e}"
    finally:
        conn.close()
    answer.seconds = time.monotonic() - started
    return answer


def parse_available(buffer, answer, started, sse):
    """Takes every complete message off the front of `buffer`; returns the rest."""
    separator = b"\n\n" if sse else b"\n"
    while separator in buffer.replace(b"\r\n", b"\n"):
        buffer = buffer.replace(b"\r\n", b"\n")
        item, buffer = buffer.split(separator, 1)
        if sse:
            data = b"\n".join(line[5:].lstrip() for line in item.split(b"\n") if line.startswith(b"data:"))
        else:
            data = item.strip()
        if data:
            try:
                answer.messages.append((time.monotonic() - started, json.loads(data)))
            except ValueError:
                answer.messages.append((time.monotonic() - started, {"not JSON": data.decode(errors="replace")[:200]}))
    return buffer


def stdio_exchange(command, messages, timeout=20):
    """Sends `messages` to a fresh stdio server and returns what it wrote (each a message)."""
    process = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    answers = []
    want = {m["id"] for m in messages if "id" in m}
    process.stdin.write(b"".join(json.dumps(m).encode() + b"\n" for m in messages))
    process.stdin.flush()
    deadline = time.monotonic() + timeout
    reader = threading.Thread(target=lambda: [answers.append(json.loads(line)) for line in process.stdout], daemon=True)
    reader.start()
    while time.monotonic() < deadline and not want <= {a.get("id") for a in answers if "method" not in a}:
        time.sleep(0.05)
    process.kill()
    process.wait()
    return answers


def report(sent, through, direct, same, expected):
    print(f"client sent: {canonical(sent)[:800]}")
    print(f"custody answered: {through.show() if isinstance(through, Answer) else through}")
    print(f"direct answered: {direct.show() if isinstance(direct, Answer) else direct}")
    print("same" if same else f"DIFFERENT: {expected}")
    return 0 if same else 1


def error_of(messages):
    for m in messages:
        if "error" in m:
            return m["error"]
    return None


# --- the probes -----------------------------------------------------------------------------------


def unsupported_version(gateway, direct_command):
    """1: a version neither side supports gets the upstream's own list of versions."""
    sent = request(1, "server/discover", {"_meta": meta("2099-01-01")})
    through = post(gateway, sent, 20, version="2099-01-01")
    direct = stdio_exchange(direct_command, [sent])
    a, b = error_of([m for _, m in through.messages]), error_of(direct)
    same = a is not None and b is not None and a.get("code") == b.get("code") and a.get("data", {}).get("supported") == b.get("data", {}).get("supported")
    return report(sent, through, "\n".join(canonical(m) for m in direct), same,
                  f"custody's error lists {a and a.get('data', {}).get('supported')}, the server's {b and b.get('data', {}).get('supported')}")


def removed_initialize(gateway, direct):
    """2: `initialize` in a 2026-07-28 request is a method that generation removed."""
    sent = request(2, "initialize", {"protocolVersion": MODERN, "capabilities": {},
                                     "clientInfo": {"name": "custody-probe", "version": "1"}, "_meta": meta()})
    through, reference = post(gateway, sent, 20), post(direct, sent, 20)
    a, b = error_of([m for _, m in through.messages]), error_of([m for _, m in reference.messages])
    same = through.status == reference.status and a is not None and b is not None and a.get("code") == b.get("code")
    return report(sent, through, reference, same,
                  f"custody: HTTP {through.status}, {a}; a 2026-07-28 server: HTTP {reference.status}, {b}")


def ndjson_stream(gateway, direct):
    """3: an upstream streaming newline-delimited JSON under application/json is relayed as it
    streams: every message, the first one long before the last."""
    status = 0
    for sent in (request(3, "tools/call", {"name": "stream", "arguments": {}, "_meta": meta()}),
                 request(4, "subscriptions/listen", {"notifications": {"toolsListChanged": True}, "_meta": meta()})):
        timeout = 15
        through, reference = post(gateway, sent, timeout), post(direct, sent, timeout if sent["method"] != "subscriptions/listen" else 4)
        a = [canonical(strip_receipt(m)) for _, m in through.messages]
        b = [canonical(m) for _, m in reference.messages]
        first_direct = reference.messages[0][0] if reference.messages else None
        first_through = through.messages[0][0] if through.messages else None
        if sent["method"] == "subscriptions/listen":
            # A listen stream does not end: compare what arrived before the direct client gave up.
            a = a[: len(b)]
        same = a == b and first_through is not None and first_through < first_direct + 1.0
        status |= report(sent, through, reference, same,
                         f"custody relayed {len(through.messages)} message(s), the first after "
                         f"{first_through if first_through is None else round(first_through, 1)} s; direct "
                         f"{len(reference.messages)}, the first after {first_direct and round(first_direct, 1)} s")
    return status


def server_request(gateway, direct):
    """4: a tool that asks the client something mid-call, called by a 2026-07-28 client: the
    call completes (never hangs) with the answer the server gives a stateless client."""
    sent = request(5, "tools/call", {"name": "test_sampling", "arguments": {"prompt": "hi"}, "_meta": meta()})
    through, reference = post(gateway, sent, 20), post(direct, sent, 20)
    a = [canonical(strip_receipt(m)) for _, m in through.messages]
    b = [canonical(m) for _, m in reference.messages]
    return report(sent, through, reference, a == b and not through.error,
                  f"custody took {through.seconds:.1f} s ({through.error or 'completed'}); direct {reference.seconds:.1f} s")


def progress_token(gateway, direct):
    """5: the tool sees the client's own progressToken (the fixture's tool answers with it)."""
    sent = request(6, "tools/call", {"name": "test_tool_with_progress", "arguments": {},
                                     "_meta": meta(progressToken="client-token-7")})
    through, reference = post(gateway, sent, 20), post(direct, sent, 20)
    a = [canonical(strip_receipt(m)) for _, m in through.messages]
    b = [canonical(m) for _, m in reference.messages]
    return report(sent, through, reference, a == b, "the messages differ (the last one names the token the tool saw)")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_http(url, seconds=10):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        parsed = urllib.parse.urlsplit(url)
        try:
            with socket.create_connection((parsed.hostname, parsed.port), 1):
                return
        except OSError:
            time.sleep(0.1)
    raise SystemExit(f"{url} did not come up")


def shutdown_truth(custody, work):
    """7: a call the upstream received, cut off by the gateway's shutdown (the call outlasts
    `shutdown_grace`, and its answer is already a stream), is not answered with an error saying
    it was not forwarded."""
    os.environ.pop("CUSTODY_TOKEN", None)  # this gateway is its own, with anonymous access
    os.makedirs(work, exist_ok=True)
    port, marker = free_port(), os.path.join(work, "sleep-started")
    config = os.path.join(work, "shutdown.toml")
    with open(config, "w") as f:
        f.write(f"""[server]
listen = "127.0.0.1:{port}"
data_dir = "{work}/shutdown-data"
# Shorter than the call, so shutdown cuts it off.
shutdown_grace = "1s"

[auth]
anonymous = true

[endpoints.slow.upstream]
transport = "stdio"
command = "{sys.executable}"
args = ["{os.path.abspath(__file__)}", "--stdio-server"]
env = {{ PROBE_MARKER = "{marker}" }}
""")
    with open(os.path.join(work, "shutdown-gateway.log"), "w") as log:
        gateway = subprocess.Popen([custody, "serve", "--config", config], stdout=log, stderr=log)
    try:
        wait_http(f"http://127.0.0.1:{port}/healthz")
        sent = request(7, "tools/call", {"name": "sleep", "arguments": {"seconds": 6}, "_meta": meta(progressToken="p-7")})
        result = {}
        caller = threading.Thread(target=lambda: result.update(a=post(f"http://127.0.0.1:{port}/mcp/slow", sent, 30)))
        caller.start()
        deadline = time.monotonic() + 10
        while not os.path.exists(marker) and time.monotonic() < deadline:
            time.sleep(0.05)
        reached = os.path.exists(marker)
        gateway.send_signal(signal.SIGTERM)
        caller.join()
    finally:
        if gateway.poll() is None:
            gateway.kill()
        gateway.wait()
    through = result["a"]
    text = canonical([m for _, m in through.messages]) + (through.error or "")
    lies = reached and "not forwarded" in text
    return report(sent, through, f"the upstream received the call: {reached} (then the gateway got SIGTERM)",
                  reached and not lies, "the error says the call was not forwarded, but the upstream had it")


def connect_404(custody, gateway):
    """8: `custody connect` to an endpoint that does not exist: the pending request gets a
    JSON-RPC error, then connect exits non-zero with one line naming the URL and the status."""
    base = gateway.rsplit("/mcp/", 1)[0]
    url = f"{base}/mcp/no-such-endpoint"
    sent = {"jsonrpc": "2.0", "id": 1, "method": "initialize",
            "params": {"protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "ci", "version": "1"}}}
    env = {"PATH": os.environ.get("PATH", ""), "CUSTODY_TOKEN": os.environ.get("CUSTODY_TOKEN", "")}
    process = subprocess.Popen([custody, "connect", url], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, env=env)
    # The job's MCP client keeps its end open while it waits for the answer.
    process.stdin.write(json.dumps(sent).encode() + b"\n")
    process.stdin.flush()
    try:
        code = process.wait(timeout=10)
        waited = f"exited {code}"
    except subprocess.TimeoutExpired:
        code, waited = None, "still running after 10 s with its stdin open"
        process.kill()
        process.wait()
    process.stdin.close()
    stdout, stderr = process.stdout.read().decode(), process.stderr.read().decode()
    answered = any(json.loads(line).get("id") == 1 and "error" in json.loads(line) for line in stdout.splitlines() if line.strip().startswith("{"))
    last = stderr.strip().splitlines()[-1] if stderr.strip() else ""
    ok = code not in (None, 0) and answered and url in last and "404" in last
    through = f"{waited}; stdout: {stdout.strip()[:600] or '(nothing)'}; stderr: {stderr.strip()[:600] or '(nothing)'}"
    return report(sent, through, "(no direct: the expected answer is a JSON-RPC error for id 1, then a non-zero exit "
                  "with one stderr line naming the URL and HTTP 404)", ok,
                  "connect must answer the pending request with an error and exit non-zero naming the URL and 404")


# --- the peers the probes need (test fakes) --------------------------------------------------------


def stdio_server():
    lock = threading.Lock()

    def write(message):
        with lock:
            sys.stdout.write(json.dumps(message) + "\n")
            sys.stdout.flush()

    def answer(message):
        method, params, id_ = message.get("method"), message.get("params") or {}, message.get("id")
        if method == "initialize":
            result = {"protocolVersion": params.get("protocolVersion", "2025-11-25"), "capabilities": {"tools": {}},
                      "serverInfo": {"name": "probe-stdio-server", "version": "1"}}
        elif method == "server/discover":
            result = {"supportedVersions": [MODERN, "2025-11-25"], "capabilities": {"tools": {}},
                      "_meta": {"io.modelcontextprotocol/serverInfo": {"name": "probe-stdio-server", "version": "1"}}}
        elif method == "tools/list":
            result = {"tools": [{"name": n, "inputSchema": {"type": "object"}} for n in ("echo", "sleep")]}
        elif method == "tools/call" and params.get("name") == "sleep":
            token = (params.get("_meta") or {}).get("progressToken")
            if token is not None:  # a notification first: the answer becomes a stream
                write({"jsonrpc": "2.0", "method": "notifications/progress", "params": {"progressToken": token, "progress": 0}})
            if os.environ.get("PROBE_MARKER"):
                open(os.environ["PROBE_MARKER"], "w").close()
            time.sleep(float(params.get("arguments", {}).get("seconds", 1)))
            result = {"content": [{"type": "text", "text": "slept"}]}
        elif method == "tools/call":
            result = {"content": [{"type": "text", "text": json.dumps(params, sort_keys=True)}]}
        else:
            write({"jsonrpc": "2.0", "id": id_, "error": {"code": -32601, "message": f"method not found: {method}"}})
            return
        write({"jsonrpc": "2.0", "id": id_, "result": result})

    for line in sys.stdin:
        message = json.loads(line)
        if "id" in message and "method" in message:
            threading.Thread(target=answer, args=(message,), daemon=True).start()


def ndjson_upstream(port):
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args):
            pass

        def do_GET(self):
            self.send_response(405)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def do_POST(self):
            body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"{}")
            id_, method = body.get("id"), body.get("method")
            if method == "server/discover":
                lines = [{"jsonrpc": "2.0", "id": id_, "result": {"supportedVersions": [MODERN], "capabilities": {"tools": {}}}}]
            elif method == "subscriptions/listen":
                lines = [{"jsonrpc": "2.0", "method": "notifications/subscriptions/acknowledged",
                          "params": {"_meta": {"io.modelcontextprotocol/subscriptionId": 1}, "notifications": {"toolsListChanged": True}}},
                         {"jsonrpc": "2.0", "method": "notifications/tools/list_changed",
                          "params": {"_meta": {"io.modelcontextprotocol/subscriptionId": 1}}}] + [None] * 30
            else:
                lines = [{"jsonrpc": "2.0", "method": "notifications/message", "params": {"level": "info", "data": "first"}},
                         {"jsonrpc": "2.0", "method": "notifications/message", "params": {"level": "info", "data": "second"}},
                         {"jsonrpc": "2.0", "id": id_, "result": {"content": [{"type": "text", "text": "streamed"}]}}]
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            try:
                for i, line in enumerate(lines):
                    if i:
                        time.sleep(1)
                    if line is None:
                        continue  # a listen stream: nothing new, but not ended
                    data = json.dumps(line).encode() + b"\n"
                    self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
                    self.wfile.flush()
                self.wfile.write(b"0\r\n\r\n")
            except (BrokenPipeError, ConnectionResetError):
                pass

    ThreadingHTTPServer(("127.0.0.1", port), Handler).serve_forever()


def main(argv):
    if not argv:
        raise SystemExit(__doc__)
    probe, args = argv[0], argv[1:]
    if probe == "--stdio-server":
        return stdio_server()
    if probe == "--ndjson-upstream":
        return ndjson_upstream(int(args[0]))
    if probe == "unsupported-version":
        return unsupported_version(args[0], args[args.index("--") + 1:])
    probes = {"removed-initialize": removed_initialize, "ndjson-stream": ndjson_stream, "server-request": server_request,
              "progress-token": progress_token, "shutdown-truth": shutdown_truth, "connect-404": connect_404}
    if probe not in probes or len(args) != 2:
        raise SystemExit(__doc__)
    return probes[probe](*args)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
