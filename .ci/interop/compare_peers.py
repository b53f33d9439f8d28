"""Compares what an MCP client received talking to a server directly with what it received
through the gateway.

usage: compare_peers.py LABEL DIRECT_JSON GATEWAY_JSON

Each JSON is a record written by peer_ts.mjs or peer_python.py: the JSON-RPC messages the client
received, in order, as its transport parsed them, plus the methods it sent by id and whether the
client library gave up with an error.

Normalisation, and nothing else:
  * `result._meta["dev.custody/receipt"]` is removed from every response (the gateway's
    receipt); when that leaves `_meta` empty, `_meta` is removed too, since the gateway made it
    only to hold the receipt. An empty `_meta` on the direct side is removed by the same rule.
  * each message is written as canonical JSON (sorted keys, no insignificant whitespace), since
    the direct and gateway paths are parsed by different code (a stdio line and an HTTP body)
    and a parsed value keeps no key order or spacing.
Everything else must be equal: the number and order of messages, ids, every member of every
result, error codes, messages and data, and whether the client library failed. Prints a unified
diff of the two canonical transcripts on any difference and exits 1.
"""

import difflib
import json
import sys

RECEIPT = "dev.custody/receipt"


def normalise(message: dict) -> dict:
    result = message.get("result")
    if isinstance(result, dict) and isinstance(result.get("_meta"), dict):
        meta = dict(result["_meta"])
        meta.pop(RECEIPT, None)
        result = dict(result)
        if meta:
            result["_meta"] = meta
        else:
            del result["_meta"]
        message = {**message, "result": result}
    return message


def transcript(record: dict) -> list:
    lines = []
    for message in record["received"]:
        method = record["sent"].get(str(message.get("id"))) if "method" not in message else None
        label = f"response to {method}" if method else ("message" if "method" in message else "response")
        lines.append(f"{label}: {json.dumps(normalise(message), sort_keys=True, separators=(',', ':'), ensure_ascii=False)}")
    lines.append(f"client library: {'failed' if record['error'] else 'completed'}")
    return lines


def main() -> int:
    label, direct_path, gateway_path = sys.argv[1:4]
    with open(direct_path) as f:
        direct = json.load(f)
    with open(gateway_path) as f:
        gateway = json.load(f)
    a, b = transcript(direct), transcript(gateway)
    if not direct["received"]:
        print(f"{label}: the direct run received nothing ({direct['error']}), so there is nothing to compare")
        return 1
    if a == b:
        return 0
    print(f"{label}: what the client received through the gateway differs from direct:")
    for line in difflib.unified_diff(a, b, "direct", "through custody", lineterm="", n=0):
        print(f"  {line[:2000]}")
    for side, record in (("direct", direct), ("through custody", gateway)):
        if record["error"]:
            print(f"  the client library's error {side}: {record['error'][:500]}")
    return 1


if __name__ == "__main__":
    sys.exit(main())
