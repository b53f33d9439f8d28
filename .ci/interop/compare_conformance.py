"""Compares MCP conformance results run directly against a server and through the gateway.

usage: compare_conformance.py LABEL DIRECT_DIR GATEWAY_DIR [GATEWAY_DIR ...]

Each DIR holds the suite's output (one `server-<scenario>-<time>/checks.json` per scenario).
Fails when any scenario's checks (id and status) differ between the direct run and a gateway
run, when a run produced no results, or when the direct run fails a scenario outside the
extensions the fixture does not implement (so a broken fixture cannot make the comparison pass
vacuously).
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


def load(directory: str) -> dict:
    results = {}
    for path in glob.glob(os.path.join(directory, "*", "checks.json")):
        name = os.path.basename(os.path.dirname(path))
        scenario = re.sub(r"^server-", "", re.sub(r"-\d{4}-\d{2}-\d{2}T.*$", "", name))
        with open(path) as f:
            checks = json.load(f)
        results[scenario] = Counter((c["id"], c["status"]) for c in checks)
    return results


def summary(results: dict) -> str:
    statuses = Counter()
    for checks in results.values():
        for (_, status), n in checks.items():
            statuses[status] += n
    return ", ".join(f"{n} {s.lower()}" for s, n in sorted(statuses.items()))


def main() -> int:
    label, direct_dir, gateway_dirs = sys.argv[1], sys.argv[2], sys.argv[3:]
    direct = load(direct_dir)
    ok = True
    if not direct:
        print(f"{label}: the direct run produced no results in {direct_dir}")
        return 1
    print(f"{label}: direct: {len(direct)} scenarios ({summary(direct)})")
    for scenario, checks in sorted(direct.items()):
        failed = [cid for (cid, status), _ in checks.items() if status == "FAILURE"]
        if failed and not NOT_IMPLEMENTED.match(scenario):
            print(f"  direct run fails {scenario}: {', '.join(sorted(failed))}")
            ok = False
    for gateway_dir in gateway_dirs:
        through = load(gateway_dir)
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
                    print(f"  {scenario}: {key[0]} {key[1]}: direct {a[key]}, through gateway {b[key]}")
    print(f"{label}: {'results through the gateway equal the direct results' if ok else 'DIFFERENT'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
