"""Checks the Docker Compose quick start without a Docker engine: compose.yaml parses and
wires what docs/deploy.md says (the gateway's port on loopback only, the upstream on an internal
network only, the data volume, the mounted files exist, the secret file exists), and the
Dockerfile builds in stages and runs as an unprivileged user with the log on a volume.

usage: check_compose.py REPO_ROOT
"""

import re
import sys
from pathlib import Path

import yaml

root = Path(sys.argv[1])
problems = []


def check(ok, what):
    if not ok:
        problems.append(what)


compose = yaml.safe_load((root / "compose.yaml").read_text())
services = compose.get("services", {})
check(set(services) == {"custody", "demo"}, f"services are custody and demo, not {sorted(services)}")
gw = services.get("custody", {})
up = services.get("demo", {})
check(gw.get("build") == ".", "the gateway is built from this repository")
check(gw.get("ports") == ["127.0.0.1:8080:8080"], "the gateway publishes 8080 on loopback only")
check("ports" not in up, "the upstream publishes no port")
check(up.get("networks") == ["upstreams"], "the upstream is on the upstreams network only")
check(compose.get("networks", {}).get("upstreams", {}).get("internal") is True,
      "the upstreams network is internal")
check("upstreams" in gw.get("networks", []), "the gateway reaches the upstreams network")
check("custody-data:/var/lib/custody" in gw.get("volumes", []), "the log is on a named volume")
for mount in gw.get("volumes", []):
    source = mount.split(":")[0]
    if source.startswith("./"):
        check((root / source).exists(), f"{source} (mounted into the gateway) exists")
for name, secret in compose.get("secrets", {}).items():
    check((root / secret["file"]).exists(), f"the secret {name}'s file exists")
for svc in (gw, up):
    check(svc.get("read_only") is True, "containers run read-only")
    check(svc.get("cap_drop") == ["ALL"], "containers drop all capabilities")
config = (root / "deploy/compose/custody.toml").read_text()
check('listen = "0.0.0.0:8080"' in config, "the gateway listens on the port compose publishes")
check('url = "http://demo:3000/mcp"' in config, "the gateway reaches the demo service by name")
check("/run/secrets/demo_api_key" in config, "the upstream key comes from the compose secret")
check(up.get("command") == ["demo-server", "--http", "0.0.0.0:3000"], "the demo listens on 3000")

dockerfile = (root / "Dockerfile").read_text()
stages = re.findall(r"^FROM\s+(\S+)(?:\s+AS\s+(\S+))?", dockerfile, re.M)
check(len(stages) == 2 and stages[0][1] == "build", "a build stage, then a runtime stage")
check("COPY --from=build" in dockerfile, "the runtime stage copies only the binary")
users = re.findall(r"^USER\s+(\S+)", dockerfile, re.M)
check(users and not users[-1].startswith(("root", "0")), "the container runs as an unprivileged user")
check('VOLUME ["/var/lib/custody"]' in dockerfile, "the data directory is a volume")
check("--locked" in dockerfile, "the build uses Cargo.lock")
toolchain = re.search(r"rust:(\d+\.\d+)", dockerfile)
check(toolchain is not None, "the build image pins a Rust version")

if problems:
    for p in problems:
        print(f"compose check: {p}: NO")
    sys.exit(1)
print(f"compose check: compose.yaml, deploy/compose and the Dockerfile are consistent ({len(services)} services, {len(stages)} stages)")
