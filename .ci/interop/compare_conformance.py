"""Compares MCP conformance results run directly against a server and through the gateway.

usage: compare_conformance.py [--details] LABEL DIRECT_DIR GATEWAY_DIR [GATEWAY_DIR ...]

Each DIR holds the suite's output (one `server-<scenario>-<time>/checks.json` per scenario).
Fails when any scenario's checks (id and status) differ between the direct run and a gateway
run, when a run produced no results, or when the direct run fails a scenario outside the
extensions the fixture does not implement (so a broken fixture cannot make the comparison pass
vacuously).

With --details, each check's error message and details must be equal too, after this
normalisation and nothing else: the URL each run targeted (and its host:port) becomes <url>
(<host>), values that differ on every run of the same server (`requestState`, subscription ids)
become placeholders, the human-readable `message` of an error answering one of the gateway's own
security checks (OWN_CHECKS: the gateway refuses these itself, with its own words, and
docs/configuration.md lists them) becomes <gateway's message>, and the gateway's receipt (`_meta["dev.custody/receipt"]`, with a `_meta`
left empty by its removal) is removed wherever it appears.
"""

import glob
import json
import os
import re
import sys
from collections import Counter

# The tasks extension (io.modelcontextprotocol/tasks) is optional and not implemented by the
# fixture; the suite reports it as not scored.
NOT_IMPLEMENTED = re.compile(r"^tasks-")


RECEIPT = "dev.custody/receipt"
VOLATILE = {"requestState": "<request state>", "subscriptionId": "<subscription id>",
            "io.modelcontextprotocol/subscriptionId": "<subscription id>"}


# Checks the gateway answers itself, before any upstream: header consistency (SEP-2243), the
# 2026-07-28 `_meta` envelope and the DNS-rebinding Host check. Their codes and statuses must still
# equal direct; only the message text is the gateway's own.
OWN_CHECKS = re.compile(
    r"^(sep-2243-server-(reject|validate)-.*|sep-2575-(http-server-header-mismatch-400|http-server-meta-invalid-400|request-meta-invalid-.*)|localhost-host-rebinding-rejected)$"
)


def own_message(value):
    """Replaces the message of every JSON-RPC error object in a check's details."""
    if isinstance(value, dict):
        out = {k: own_message(v) for k, v in value.items()}
        if isinstance(out.get("error"), dict) and "code" in out["error"] and "message" in out["error"]:
            out["error"] = {**out["error"], "message": "<gateway's message>"}
        return out
    if isinstance(value, list):
        return [own_message(v) for v in value]
    return value


def scrub(value, url: str, host: str):
    """The normalisation --details applies (see the module's doc)."""
    if isinstance(value, dict):
        out = {}
        for key, item in value.items():
            if key in VOLATILE and isinstance(item, (str, int)):
                out[key] = VOLATILE[key]
            elif key == "_meta" and isinstance(item, dict) and RECEIPT in item:
                rest = {k: scrub(v, url, host) for k, v in item.items() if k != RECEIPT}
                if rest:
                    out[key] = rest
            else:
                out[key] = scrub(item, url, host)
        return out
    if isinstance(value, list):
        return [scrub(item, url, host) for item in value]
    if isinstance(value, str):
        return value.replace(url, "<url>").replace(host, "<host>") if url else value
    return value


def target_url(directory: str) -> str:
    """The URL the suite was pointed at, from the log beside its output directory."""
    try:
        with open(directory.rstrip("/") + ".log") as f:
            found = re.search(r"https?://127\.0\.0\.1:\d+/\S*", f.read())
            return found.group(0).rstrip(".,)") if found else ""
    except OSError:
        return ""


def load(directory: str, details: bool = False) -> dict:
    results = {}
    url = target_url(directory) if details else ""
    host = re.sub(r"^https?://([^/]+).*$", r"\1", url)
    for path in glob.glob(os.path.join(directory, "*", "checks.json")):
        name = os.path.basename(os.path.dirname(path))
        scenario = re.sub(r"^server-", "", re.sub(r"-\d{4}-\d{2}-\d{2}T.*$", "", name))
        with open(path) as f:
            checks = json.load(f)
        if details:
            results[scenario] = Counter(
                (c["id"], c["status"], json.dumps(scrub(own_message([c.get("errorMessage"), c.get("details")]) if OWN_CHECKS.match(c["id"]) else [c.get("errorMessage"), c.get("details")], url, host), sort_keys=True))
                for c in checks
            )
        else:
            results[scenario] = Counter((c["id"], c["status"]) for c in checks)
    return results


def summary(results: dict) -> str:
    statuses = Counter()
    for checks in results.values():
        for (_, status, *_), n in checks.items():
            statuses[status] += n
    return ", ".join(f"{n} {s.lower()}" for s, n in sorted(statuses.items()))


def main() -> int:
    args = sys.argv[1:]
    details = args[0] == "--details"
    if details:
        args = args[1:]
    label, direct_dir, gateway_dirs = args[0], args[1], args[2:]
    direct = load(direct_dir, details)
    ok = True
    if not direct:
        print(f"{label}: the direct run produced no results in {direct_dir}")
        return 1
    print(f"{label}: direct: {len(direct)} scenarios ({summary(direct)})")
    for scenario, checks in sorted(direct.items()):
        failed = {key[0] for key in checks if key[1] == "FAILURE"}
        if failed and not NOT_IMPLEMENTED.match(scenario):
            print(f"  direct run fails {scenario}: {', '.join(sorted(failed))}")
            ok = False
    for gateway_dir in gateway_dirs:
        through = load(gateway_dir, details)
        print(f"{label}: {os.path.basename(gateway_dir)}: {len(through)} scenarios ({summary(through)})")
        for scenario in sorted(set(direct) | set(through)):
            a, b = direct.get(scenario), through.get(scenario)
            if a == b:
                continue
            ok = False
            if a is None or b is None:
                print(f"  {scenario}: only in {'the gateway run' if a is None else 'the direct run'}")
                continue
            for key in sorted(set(a) | set(b)):
                if a[key] != b[key]:
                    detail = f" {key[2][:1500]}" if details else ""
                    print(f"  {scenario}: {key[0]} {key[1]}: direct {a[key]}, through gateway {b[key]}{detail}")
    print(f"{label}: {'results through the gateway equal the direct results' if ok else 'DIFFERENT'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
