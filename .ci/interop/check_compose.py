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

# The high-availability variant: two replicas on one log in PostgreSQL behind a load balancer.
ha = yaml.safe_load((root / "compose.replicas.yaml").read_text())
hs = ha.get("services", {})
check(set(hs) == {"lb", "custody-1", "custody-2", "postgres", "demo"},
      f"the replicas variant's services are lb, custody-1, custody-2, postgres, demo, not {sorted(hs)}")
check(hs.get("lb", {}).get("ports") == ["127.0.0.1:8080:8080"],
      "only the load balancer publishes a port, on loopback")
for name, svc in hs.items():
    if name != "lb":
        check("ports" not in svc, f"{name} publishes no port")
check(ha.get("networks", {}).get("db", {}).get("internal") is True, "the database's network is internal")
check(hs.get("postgres", {}).get("networks") == ["db"], "the database is on its network only")
data = []
for name in ("custody-1", "custody-2"):
    svc = hs.get(name, {})
    vols = svc.get("volumes", [])
    check("custody-keys:/var/lib/custody-keys" in vols, f"{name} mounts the shared keys")
    data += [v for v in vols if v.endswith(":/var/lib/custody")]
    check(svc.get("hostname") == name, f"{name} is named {name} in the log (its host name)")
    check("db" in svc.get("networks", []), f"{name} reaches the database")
check(len(set(data)) == 2, "each replica has a data volume of its own")
for name, secret in ha.get("secrets", {}).items():
    check((root / secret["file"]).exists(), f"the replicas variant's secret {name}'s file exists")
for svc in hs.values():
    for mount in svc.get("volumes", []):
        source = mount.split(":")[0]
        if source.startswith("./"):
            check((root / source).exists(), f"{source} (mounted by the replicas variant) exists")
rconfig = (root / "deploy/compose/replicas/custody.toml").read_text()
check('store = "${file:/run/secrets/postgres_url}"' in rconfig,
      "the replicas' store URL comes from the compose secret, by reference")
check('key_file = "/var/lib/custody-keys/log.key"' in rconfig, "the replicas share the log key")
check('key_file = "/var/lib/custody-keys/mask.key"' in rconfig, "the replicas share the masking key")
nginx = (root / "deploy/compose/replicas/nginx.conf").read_text()
check("$http_mcp_session_id" in nginx and "hash $affinity consistent" in nginx,
      "the load balancer keeps a session on one replica")
check("proxy_buffering off" in nginx, "the load balancer passes event streams through unbuffered")
check("/var/lib/custody-keys" in dockerfile, "the image owns the shared keys' mount point")

if problems:
    for p in problems:
        print(f"compose check: {p}: NO")
    sys.exit(1)
print(f"compose check: compose.yaml, compose.replicas.yaml, deploy/compose and the Dockerfile are consistent ({len(services)} + {len(hs)} services, {len(stages)} stages)")
