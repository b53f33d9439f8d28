"""Checks of the rendered Kubernetes manifests (deploy/kubernetes), for .ci/interop/kubernetes.sh.

  check_kubernetes.py schemas MIN_VERSION FILE...   every resource against the Kubernetes
      schemas (kubernetes-validate, strict: unknown fields are errors) of every version from
      MIN_VERSION to the newest the package has; kinds it has no schema for are errors unless
      named with --crd (checked elsewhere)
  check_kubernetes.py rules FILE...                 what docs/operations.md promises of each
      rendered overlay (hardening, probes, the configuration's paths on the pod's volumes, the
      network policy that makes the gateway the only route to the MCP servers)
  check_kubernetes.py pod FILE CUSTODY WORKDIR      the gateway's pod, run here: its volumes laid
      out under WORKDIR, its init container's command run, `custody check-config` on its
      configuration, and for a log on the pod's volume, `custody serve` answering the pod's
      probes as the kubelet sends them

Exits 1 naming each failure.
"""

import argparse
import atexit
import os
import re
import shlex
import socket
import subprocess
import sys
import time
import tomllib
import urllib.error
import urllib.request

import yaml

GATEWAY = {"app.kubernetes.io/name": "custody", "app.kubernetes.io/component": "gateway"}
MCP_SERVER = ("custody.dev/mcp-server", "true")
WORKLOADS = ("Deployment", "StatefulSet", "DaemonSet", "Job", "CronJob")
FILE_REF = re.compile(r"\$\{file:([^}]+)\}")

failures = []



_scratch = []


def scratch_database():
    """A database of this check's own on the local PostgreSQL (trust authentication), dropped
    when the check ends: the PostgreSQL overlay's pod is started against it."""
    if not _scratch:
        name = f"custody_k8s_{os.getpid()}"
        psql = ["psql", "-h", "127.0.0.1", "-U", "postgres", "-d", "postgres", "-q", "-c"]
        quiet = dict(os.environ, PGOPTIONS="--client-min-messages=warning")
        subprocess.run(psql + [f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"], check=True, env=quiet)
        subprocess.run(psql + [f"CREATE DATABASE {name}"], check=True, env=quiet)
        atexit.register(
            lambda: subprocess.run(
                psql + [f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"], capture_output=True
            )
        )
        _scratch.append(name)
    return _scratch[0]

def fail(where, what):
    failures.append(f"{where}: {what}")
    print(f"FAIL {where}: {what}")


def load(path):
    with open(path) as f:
        return [d for d in yaml.safe_load_all(f) if d]


def name(doc):
    return f"{doc['kind']}/{doc['metadata']['name']}"


def matches(selector, labels):
    return all(labels.get(k) == v for k, v in (selector or {}).get("matchLabels", {}).items())


def pod_template(doc):
    if doc["kind"] == "CronJob":
        return doc["spec"]["jobTemplate"]["spec"]["template"]
    return doc["spec"]["template"]


def gateway_of(docs, where):
    found = [
        d
        for d in docs
        if d["kind"] in WORKLOADS and matches({"matchLabels": GATEWAY}, pod_template(d)["metadata"]["labels"])
    ]
    if len(found) != 1:
        fail(where, f"expected one gateway workload, found {[name(d) for d in found]}")
        return None
    return found[0]


def config_of(docs, gateway, where):
    """The gateway container, its config file's path in the pod, the parsed config, the volumes
    by mount path, and the ConfigMaps by name."""
    spec = pod_template(gateway)["spec"]
    main = next(c for c in spec["containers"] if c["name"] == "custody")
    args = main.get("args", [])
    config_path = args[args.index("--config") + 1]
    volumes = {v["name"]: v for v in spec.get("volumes", [])}
    for claim in gateway["spec"].get("volumeClaimTemplates", []):
        volumes[claim["metadata"]["name"]] = {"name": claim["metadata"]["name"], "persistentVolumeClaim": {}}
    mounts = {m["mountPath"]: (m, volumes[m["name"]]) for m in main.get("volumeMounts", [])}
    config_maps = {d["metadata"]["name"]: d for d in docs if d["kind"] == "ConfigMap"}
    mount_dir = os.path.dirname(config_path)
    if mount_dir not in mounts or "configMap" not in mounts[mount_dir][1]:
        fail(where, f"the configuration {config_path} is not in a ConfigMap mounted at {mount_dir}")
        return main, config_path, None, mounts, config_maps
    cm = config_maps[mounts[mount_dir][1]["configMap"]["name"]]
    text = cm["data"][os.path.basename(config_path)]
    return main, config_path, tomllib.loads(text), mounts, config_maps


def seconds(duration):
    """A configuration duration ("500ms", "20s", "5m", "1h") in seconds."""
    units = {"ms": 0.001, "s": 1, "m": 60, "h": 3600}
    match = re.fullmatch(r"(\d+)(ms|s|m|h)", duration)
    if not match:
        raise ValueError(f"{duration!r} is not a duration this check reads")
    return int(match.group(1)) * units[match.group(2)]


def mount_for(path, mounts):
    best = None
    for mount_path in mounts:
        if path == mount_path or path.startswith(mount_path.rstrip("/") + "/"):
            if best is None or len(mount_path) > len(best):
                best = mount_path
    return best


def strings(value):
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for v in value.values():
            yield from strings(v)
    elif isinstance(value, list):
        for v in value:
            yield from strings(v)


def config_paths(config, config_path):
    """What the configuration reads or writes: (what, path in the pod, must be writable)."""
    base = os.path.dirname(config_path)
    data_dir = config["server"].get("data_dir", "./custody-data")
    yield "server.data_dir", os.path.normpath(os.path.join(base, data_dir)), True
    key = config.get("audit", {}).get("key_file", os.path.join(data_dir, "log.key"))
    yield "audit.key_file", os.path.normpath(os.path.join(base, key)), False
    mask = config.get("masking", {}).get("key_file", os.path.join(data_dir, "mask.key"))
    yield "masking.key_file", os.path.normpath(os.path.join(base, mask)), False
    for f in config.get("policy", {}).get("files", []):
        yield "policy.files", os.path.normpath(os.path.join(base, f)), False
    for s in strings(config):
        for ref in FILE_REF.findall(s):
            yield f"${{file:{ref}}}", os.path.normpath(os.path.join(base, ref)), False


# --- schemas ------------------------------------------------------------------------------


def schemas(args):
    import kubernetes_validate
    from kubernetes_validate import utils

    versions = [
        v
        for v in utils.all_versions()
        if tuple(map(int, v.split("."))) >= tuple(map(int, args.min_version.split(".")))
    ]
    checked = 0
    for path in args.files:
        for doc in load(path):
            if doc["kind"] in args.crd:
                continue
            for version in versions:
                try:
                    kubernetes_validate.validate(doc, version + ".0", strict=True)
                except kubernetes_validate.ValidationError as e:
                    where = ".".join(str(p) for p in e.path)
                    fail(
                        f"{os.path.basename(path)} {name(doc)}", f"Kubernetes {version}: {where}: {e.message}"
                    )
                except utils.SchemaNotFoundError:
                    fail(
                        f"{os.path.basename(path)} {name(doc)}",
                        f"no Kubernetes {version} schema for {doc['apiVersion']} {doc['kind']}",
                    )
                checked += 1
    print(
        f"schemas: {checked} resource validations (Kubernetes {versions[0]} to {versions[-1]}, strict), {len(failures)} failed"
    )


# --- rules --------------------------------------------------------------------------------


def check_hardening(doc, where):
    spec = pod_template(doc)["spec"]
    pod_sc = spec.get("securityContext", {})
    if spec.get("automountServiceAccountToken") is not False:
        fail(where, "automountServiceAccountToken is not false")
    if spec.get("hostNetwork") or spec.get("hostPID") or spec.get("hostIPC"):
        fail(where, "shares a host namespace")
    for c in spec.get("initContainers", []) + spec["containers"]:
        sc = c.get("securityContext", {})
        at = f"{where} container {c['name']}"
        if not (sc.get("runAsNonRoot", pod_sc.get("runAsNonRoot")) is True):
            fail(at, "runAsNonRoot is not true")
        if sc.get("runAsUser", pod_sc.get("runAsUser")) in (None, 0):
            fail(at, "no non-root runAsUser")
        if sc.get("readOnlyRootFilesystem") is not True:
            fail(at, "readOnlyRootFilesystem is not true")
        if sc.get("allowPrivilegeEscalation") is not False:
            fail(at, "allowPrivilegeEscalation is not false")
        if sc.get("capabilities", {}).get("drop") != ["ALL"] or sc.get("capabilities", {}).get("add"):
            fail(at, "capabilities are not exactly drop: [ALL]")
        seccomp = sc.get("seccompProfile", pod_sc.get("seccompProfile", {}))
        if seccomp.get("type") != "RuntimeDefault":
            fail(at, "seccompProfile is not RuntimeDefault")
        for kind in ("requests", "limits"):
            for resource in ("cpu", "memory"):
                if resource not in c.get("resources", {}).get(kind, {}):
                    fail(at, f"no {resource} {kind}")


def check_gateway(docs, gateway, where):
    spec = pod_template(gateway)["spec"]
    labels = pod_template(gateway)["metadata"]["labels"]
    if gateway["kind"] == "StatefulSet":
        if gateway["spec"].get("replicas") != 1:
            fail(where, "the SQLite StatefulSet must have exactly one replica")
    elif gateway["kind"] == "Deployment":
        if gateway["spec"].get("replicas", 1) < 2:
            fail(where, "the replicas Deployment has fewer than 2 replicas")
        if not any(
            d["kind"] == "PodDisruptionBudget" and matches(d["spec"]["selector"], labels) for d in docs
        ):
            fail(where, "no PodDisruptionBudget selects the replicas")
        keys = {
            t["topologyKey"]
            for t in spec.get("topologySpreadConstraints", [])
            if matches(t["labelSelector"], labels)
        }
        if "kubernetes.io/hostname" not in keys:
            fail(where, "no topology spread of the replicas across nodes")
    else:
        fail(where, f"the gateway is a {gateway['kind']}")
    sa_name = spec.get("serviceAccountName", "default")
    sa = [d for d in docs if d["kind"] == "ServiceAccount" and d["metadata"]["name"] == sa_name]
    if not sa or sa[0].get("automountServiceAccountToken") is not False:
        fail(
            where, f"service account {sa_name} is not in the render with automountServiceAccountToken: false"
        )

    main, config_path, config, mounts, config_maps = config_of(docs, gateway, where)
    ports = {p["name"]: p["containerPort"] for p in main.get("ports", [])}
    want = {"startupProbe": "/healthz", "livenessProbe": "/healthz", "readinessProbe": "/readyz"}
    for probe, path in want.items():
        get = main.get(probe, {}).get("httpGet")
        if not get or get.get("path") != path:
            fail(where, f"{probe} is not an HTTP GET of {path}")
    if config is None:
        return
    listen_port = int(config["server"]["listen"].rsplit(":", 1)[1])
    for probe in want:
        port = main.get(probe, {}).get("httpGet", {}).get("port")
        if ports.get(port, port) != listen_port:
            fail(where, f"{probe} probes port {port}, but server.listen is {config['server']['listen']}")
    # SIGTERM comes after the preStop pause; custody then lets calls run for shutdown_grace and
    # still has the final checkpoint to sign, before the kubelet's SIGKILL.
    grace = seconds(config["server"].get("shutdown_grace", "10s"))
    pause = main.get("lifecycle", {}).get("preStop", {}).get("exec", {}).get("command", [])
    pause = float(pause[1]) if pause[:1] == ["sleep"] else 0.0
    budget = spec.get("terminationGracePeriodSeconds", 30)
    if pause + grace + 10 > budget:
        fail(
            where,
            f"terminationGracePeriodSeconds {budget} leaves under 10 s after the preStop pause ({pause:g} s)"
            f" and server.shutdown_grace ({grace:g} s) for the final checkpoint",
        )
    if not config["server"].get("allowed_hosts"):
        fail(where, "server.allowed_hosts is empty: the gateway refuses to listen beyond loopback without it")
    for what, path, writable in config_paths(config, config_path):
        mount_path = mount_for(path, mounts)
        if mount_path is None:
            fail(where, f"{what} {path} is on no volume (the root filesystem is read-only)")
            continue
        m, volume = mounts[mount_path]
        if writable and (m.get("readOnly") or "configMap" in volume or "secret" in volume):
            fail(where, f"{what} {path} is on a read-only mount ({mount_path})")
        if "configMap" in volume:
            data = config_maps[volume["configMap"]["name"]]["data"]
            if os.path.relpath(path, mount_path) not in data:
                fail(
                    where,
                    f"{what} {path}: ConfigMap {volume['configMap']['name']} has no key {os.path.relpath(path, mount_path)}",
                )
    if gateway["kind"] == "StatefulSet":
        data_dir = dict((w, p) for w, p, _ in config_paths(config, config_path))["server.data_dir"]
        mount_path = mount_for(data_dir, mounts)
        if mount_path is None or "persistentVolumeClaim" not in mounts[mount_path][1]:
            fail(where, f"the log's data directory {data_dir} is not on the persistent volume")
        elif data_dir == mount_path:
            fail(where, "the data directory is the volume's root, which custody cannot keep at mode 0700")


def check_network(docs, gateway, where):
    policies = [d for d in docs if d["kind"] == "NetworkPolicy"]
    namespace = gateway["metadata"].get("namespace")
    gw_labels = pod_template(gateway)["metadata"]["labels"]
    for d in docs:
        if d["kind"] in WORKLOADS:
            labels = pod_template(d)["metadata"]["labels"]
            if not any(matches(p["spec"]["podSelector"], labels) for p in policies):
                fail(where, f"{name(d)}: no NetworkPolicy selects its pods")
    servers = [
        d
        for d in docs
        if d["kind"] in WORKLOADS
        and pod_template(d)["metadata"]["labels"].get(MCP_SERVER[0]) == MCP_SERVER[1]
    ]
    guard = [
        p for p in policies if p["spec"]["podSelector"].get("matchLabels") == {MCP_SERVER[0]: MCP_SERVER[1]}
    ]
    if len(guard) != 1:
        fail(
            where, f"expected one NetworkPolicy selecting {MCP_SERVER[0]}={MCP_SERVER[1]}, found {len(guard)}"
        )
        return
    for p in policies:
        selects_servers = (
            any(matches(p["spec"]["podSelector"], pod_template(s)["metadata"]["labels"]) for s in servers)
            or p in guard
        )
        if not selects_servers:
            continue
        at = f"{where} {name(p)}"
        if "Ingress" not in p["spec"].get("policyTypes", []):
            fail(at, "selects MCP servers without governing their ingress")
        for rule in p["spec"].get("ingress", []):
            peers = rule.get("from")
            if not peers:
                fail(at, "admits MCP server traffic from anywhere")
            for peer in peers or []:
                ns = peer.get("namespaceSelector", {}).get("matchLabels", {})
                if ns != {"kubernetes.io/metadata.name": namespace}:
                    fail(
                        at,
                        f"admits namespaces {ns or 'of its own namespace'}, not only the gateway's ({namespace})",
                    )
                if (
                    "podSelector" not in peer
                    or not matches(peer["podSelector"], gw_labels)
                    or not peer["podSelector"].get("matchLabels")
                ):
                    fail(at, "admits pods other than the gateway's")
                if "ipBlock" in peer:
                    fail(at, "admits an IP block")
    egress_ok = any(
        matches(p["spec"]["podSelector"], gw_labels)
        and any(
            peer.get("podSelector", {}).get("matchLabels") == {MCP_SERVER[0]: MCP_SERVER[1]}
            for r in p["spec"].get("egress", [])
            for peer in r.get("to", [])
        )
        for p in policies
    )
    if not egress_ok:
        fail(where, "no egress rule lets the gateway reach the MCP servers")


def differences(a, b, at=""):
    """The key paths where two parsed configurations differ."""
    if isinstance(a, dict) and isinstance(b, dict):
        for key in sorted(set(a) | set(b)):
            yield from differences(a.get(key), b.get(key), f"{at}.{key}" if at else key)
    elif a != b:
        yield at


def rules(args):
    # The overlays' configurations are the same but for where the log is (`audit.store`).
    configs = {}
    for path in args.files:
        where = os.path.basename(path)
        docs = load(path)
        before = len(failures)
        for d in docs:
            if d["kind"] in WORKLOADS:
                check_hardening(d, f"{where} {name(d)}")
        namespaces = [d for d in docs if d["kind"] == "Namespace"]
        if (
            not namespaces
            or namespaces[0]["metadata"].get("labels", {}).get("pod-security.kubernetes.io/enforce")
            != "restricted"
        ):
            fail(where, "the namespace does not enforce the restricted Pod Security Standard")
        gateway = gateway_of(docs, where)
        if gateway is not None:
            check_gateway(docs, gateway, f"{where} {name(gateway)}")
            config = config_of(docs, gateway, where)[2]
            if config is not None:
                config.get("audit", {}).pop("store", None)
                configs[where] = config
            check_network(docs, gateway, where)
            ports = {
                p["name"] for c in pod_template(gateway)["spec"]["containers"] for p in c.get("ports", [])
            }
            for m in (d for d in docs if d["kind"] == "PodMonitor"):
                if not matches(m["spec"]["selector"], pod_template(gateway)["metadata"]["labels"]):
                    fail(f"{where} {name(m)}", "does not select the gateway's pods")
                for e in m["spec"]["podMetricsEndpoints"]:
                    if e.get("port") not in ports or e.get("path") != "/metrics":
                        fail(
                            f"{where} {name(m)}",
                            f"scrapes {e.get('port')}{e.get('path')}, not a gateway port's /metrics",
                        )
        print(f"rules: {where}: {len(docs)} resources, {len(failures) - before} failed")
    first = next(iter(configs), None)
    for where, config in configs.items():
        diff = list(differences(configs[first], config))
        if diff:
            fail(
                where,
                f"its custody.toml differs from {first}'s in {', '.join(diff)}; keep the overlays' in step",
            )


# --- the pod, run here --------------------------------------------------------------------


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def probe(url):
    """The kubelet's HTTP probe: the pod's IP as Host, success on 200-399."""
    req = urllib.request.Request(url, headers={"Host": "192.0.2.10:8080", "User-Agent": "kube-probe/1.33"})
    try:
        with urllib.request.urlopen(req, timeout=3) as r:
            return r.status, r.read().decode(errors="replace")
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode(errors="replace")
    except OSError as e:
        return None, str(e)


def pod(args):
    where = os.path.basename(args.file)
    docs = load(args.file)
    gateway = gateway_of(docs, where)
    if gateway is None:
        return
    main, config_path, config, mounts, config_maps = config_of(docs, gateway, where)
    if config is None:
        return
    root = os.path.abspath(args.workdir)
    here = lambda p: root + p  # noqa: E731: a path of the pod, on this machine
    spec = pod_template(gateway)["spec"]
    volumes = {v["name"]: v for v in spec.get("volumes", [])}
    # The volumes, as the kubelet lays them out (Secrets group-readable under fsGroup).
    all_mounts = [
        (m, volumes.get(m["name"], {}))
        for c in spec.get("initContainers", []) + [main]
        for m in c.get("volumeMounts", [])
    ]
    refs = [p for w, p, _ in config_paths(config, config_path) if w.startswith("${file:")]
    for m, volume in all_mounts:
        target = here(m["mountPath"])
        os.makedirs(target, exist_ok=True)
        if "configMap" in volume:
            for key, value in config_maps[volume["configMap"]["name"]]["data"].items():
                with open(os.path.join(target, key), "w") as f:
                    f.write(value)
        elif "secret" in volume:
            keys = [i["path"] for i in volume["secret"].get("items", [])]
            keys += [os.path.relpath(r, m["mountPath"]) for r in refs if mount_for(r, {m["mountPath"]: 0})]
            for key in keys:
                path = os.path.join(target, key)
                if key.endswith("log.key"):
                    subprocess.run(
                        [args.custody, "keygen", "--origin", config["audit"]["origin"], "--out", path],
                        check=True,
                        capture_output=True,
                    )
                    os.remove(path + ".pub")
                elif key.endswith("mask.key"):
                    with open(path, "w") as f:
                        f.write(os.urandom(32).hex() + "\n")
                elif key == "url":
                    with open(path, "w") as f:
                        f.write(f"postgres://postgres@127.0.0.1:5432/{scratch_database()}\n")
                else:
                    with open(path, "w") as f:
                        f.write(f"placeholder-credential-{key}\n")
                os.chmod(path, volume["secret"].get("defaultMode", 0o644))
    for init in spec.get("initContainers", []):
        command = [
            here(a) if a.startswith("/var/") or a.startswith("/etc/") else a
            for a in init["command"] + init.get("args", [])
        ]
        run = subprocess.run(command, capture_output=True, text=True)
        if run.returncode != 0:
            fail(where, f"init container {init['name']} ({shlex.join(command)}): {run.stderr.strip()}")
            return
    print(f"pod: {where}: volumes laid out under {root}; init containers ran")
    # The configuration with the pod's paths under root, on a free loopback port.
    text = config_maps[mounts[os.path.dirname(config_path)][1]["configMap"]["name"]]["data"][
        os.path.basename(config_path)
    ]
    port = free_port()
    text = text.replace(config["server"]["listen"], f"127.0.0.1:{port}")
    # One pass, longest mount first, so that no mapped path is mapped again.
    paths = "|".join(re.escape(m) for m in sorted(mounts, key=len, reverse=True))
    text = re.sub(r'([":])(' + paths + r")(?=[/\"}])", lambda m: m.group(1) + here(m.group(2)), text)
    local_config = here(config_path) + ".local"
    with open(local_config, "w") as f:
        f.write(text)
    check = subprocess.run(
        [args.custody, "check-config", "--config", local_config], capture_output=True, text=True
    )
    out = (check.stdout + check.stderr).strip()
    if check.returncode != 0:
        fail(where, f"custody check-config refuses the pod's configuration: {out}")
        return
    print(f"pod: {where}: custody check-config: {out.splitlines()[-1]}")
    log = open(os.path.join(root, "gateway.log"), "w")
    env = dict(os.environ, **{e["name"]: e["value"] for e in main.get("env", []) if "value" in e})
    command = [args.custody] + [local_config if a == config_path else a for a in main["args"]]
    server = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env)
    try:
        deadline = time.monotonic() + 30
        for kind in ("startupProbe", "livenessProbe", "readinessProbe"):
            path = main[kind]["httpGet"]["path"]
            while True:
                status, body = probe(f"http://127.0.0.1:{port}{path}")
                if status is not None and 200 <= status < 400:
                    print(f"pod: {where}: {kind} GET {path} -> {status} {body.strip()}")
                    break
                if server.poll() is not None or time.monotonic() > deadline:
                    fail(
                        where,
                        f"{kind} GET {path} -> {status} {body.strip()}; the gateway's log: {open(log.name).read()[-2000:]}",
                    )
                    return
                time.sleep(0.2)
    finally:
        server.terminate()
        try:
            code = server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
            code = server.wait()
            fail(where, "the gateway did not stop within 30 s of SIGTERM")
        if code != 0 and not failures:
            fail(where, f"the gateway exited {code} after SIGTERM; its log: {open(log.name).read()[-2000:]}")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    s = sub.add_parser("schemas")
    s.add_argument("min_version")
    s.add_argument("files", nargs="+")
    s.add_argument("--crd", action="append", default=[])
    r = sub.add_parser("rules")
    r.add_argument("files", nargs="+")
    p = sub.add_parser("pod")
    p.add_argument("file")
    p.add_argument("custody")
    p.add_argument("workdir")
    args = parser.parse_args()
    {"schemas": schemas, "rules": rules, "pod": pod}[args.command](args)
    if failures:
        print(f"{len(failures)} failure(s)")
        sys.exit(1)


if __name__ == "__main__":
    main()
