#!/usr/bin/env bash
# The Kubernetes deployment (deploy/kubernetes), checked as far as a machine without a cluster
# allows:
#   1. every overlay renders with `kubectl kustomize`, alone and with the monitoring component;
#   2. every resource validates against the Kubernetes schemas of each version from 1.27 on
#      (kubernetes-validate, strict), the PodMonitor against the Prometheus Operator's CRD
#      schema (@kubernetes-models/prometheus-operator);
#   3. what docs/operations.md promises holds in each render (check_kubernetes.py rules);
#   4. checkov finds nothing: no failed check, and every skipped one justified in the manifest;
#   5. with a custody binary: the gateway's pod runs here, its volumes laid out under a
#      directory, its init container's command run, `custody check-config` on its configuration,
#      and `custody serve` answering its three probes (the PostgreSQL overlay's on a scratch
#      database of the local PostgreSQL).
# Each tool is first shown a broken manifest that it must refuse, so a tool that passes
# everything cannot pass here. Helm is not checked: no registry this project reaches has it.
#
# usage: kubernetes.sh CACHE_DIR [CUSTODY_BINARY]
# Installs its tools into CACHE_DIR/k8s-venv and CACHE_DIR/k8s-npm (once per version set).
set -euo pipefail
cache=${1:?usage: kubernetes.sh CACHE_DIR [CUSTODY_BINARY]}
custody=${2:-}
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
k8s="$repo/deploy/kubernetes"
started=$SECONDS

pip_packages=(kubernetes-validate==1.37.0 checkov==3.3.30)
npm_packages=(@kubernetes-models/prometheus-operator@6.0.0)
min_kubernetes=1.27
overlays=(single replicas-postgres)

command -v kubectl >/dev/null || { echo "kubectl is not on this machine: the manifests cannot be rendered" >&2; exit 1; }
command -v node >/dev/null || { echo "node is not on this machine: the PodMonitor cannot be checked" >&2; exit 1; }

want="${pip_packages[*]} | ${npm_packages[*]}"
if [[ ! -f "$cache/k8s-installed" || "$(cat "$cache/k8s-installed")" != "$want" ]]; then
  echo "installing ${pip_packages[*]} ${npm_packages[*]}"
  rm -rf "$cache/k8s-venv" "$cache/k8s-npm"
  mkdir -p "$cache/k8s-npm"
  python3 -m venv "$cache/k8s-venv"
  "$cache/k8s-venv/bin/pip" install --quiet --disable-pip-version-check "${pip_packages[@]}"
  echo '{"name":"custody-k8s-checks","private":true}' >"$cache/k8s-npm/package.json"
  npm install --prefix "$cache/k8s-npm" --no-audit --no-fund --loglevel=error "${npm_packages[@]}"
  echo "$want" >"$cache/k8s-installed"
  echo "installed in $((SECONDS - started)) s"
fi
checks_started=$SECONDS
python="$cache/k8s-venv/bin/python"
checker="$here/check_kubernetes.py"

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/rendered" "$work/canary" "$work/out"

# --- 1. render -------------------------------------------------------------------------------
for overlay in "${overlays[@]}"; do
  kubectl kustomize "$k8s/overlays/$overlay" >"$work/rendered/$overlay.yaml"
  # The same overlay with the optional monitoring component, as a user would enable it.
  variant="$work/variants/$overlay-monitoring"
  mkdir -p "$variant"
  rel=$(realpath --relative-to="$variant" "$k8s")
  cat >"$variant/kustomization.yaml" <<EOF
apiVersion: kustomize.config.k8s.io/v1beta1
kind: Kustomization
namespace: custody
resources: [$rel/overlays/$overlay]
components: [$rel/components/monitoring]
EOF
  kubectl kustomize "$variant" >"$work/rendered/$overlay-monitoring.yaml"
done
echo "render: $(ls "$work/rendered" | wc -l) renders, $(cat "$work/rendered"/*.yaml | grep -c '^kind:') resources"

# --- the canary: a render with one typo, one privileged container and a broken PodMonitor -----
sed -e '0,/readOnlyRootFilesystem: true/s//readOnlyRootFilesytem: true/' \
  -e '0,/allowPrivilegeEscalation: false/s//allowPrivilegeEscalation: true/' \
  "$work/rendered/single-monitoring.yaml" >"$work/canary/canary.yaml"
sed -i 's/interval: 30s/interval: thirty/' "$work/canary/canary.yaml"
refuses() { # NAME PATTERN COMMAND...: the command must fail on the canary, saying PATTERN
  local name=$1 pattern=$2; shift 2
  if "$@" >"$work/out/canary-$name.log" 2>&1 || ! grep -q -- "$pattern" "$work/out/canary-$name.log"; then
    echo "FAIL $name did not refuse a broken manifest for '$pattern'; it is not checking:"
    cat "$work/out/canary-$name.log"
    exit 1
  fi
  echo "canary: $name refused the broken manifest ($pattern)"
}
refuses kubernetes-validate "readOnlyRootFilesytem' was unexpected" "$python" "$checker" schemas "$min_kubernetes" --crd PodMonitor "$work/canary/canary.yaml"
refuses rules "allowPrivilegeEscalation is not false" "$python" "$checker" rules "$work/canary/canary.yaml"

# --- 2. schemas ------------------------------------------------------------------------------
"$python" "$checker" schemas "$min_kubernetes" --crd PodMonitor "$work/rendered"/*.yaml
crds() { # FILE...: the Prometheus Operator resources, as JSON for check_podmonitor.mjs
  "$python" -c '
import json, sys, yaml
out = []
for path in sys.argv[1:]:
    with open(path) as f:
        for doc in yaml.safe_load_all(f):
            if doc and doc["apiVersion"].startswith("monitoring.coreos.com/"):
                out.append({"file": path.rsplit("/", 1)[-1], "resource": doc})
print(json.dumps(out))' "$@"
}
crds "$work/canary/canary.yaml" >"$work/out/canary-crds.json"
refuses prometheus-operator-schemas "interval must match pattern" node "$here/check_podmonitor.mjs" "$cache/k8s-npm/node_modules" "$work/out/canary-crds.json"
crds "$work/rendered"/*.yaml >"$work/out/crds.json"
node "$here/check_podmonitor.mjs" "$cache/k8s-npm/node_modules" "$work/out/crds.json"

# --- 3. what the docs promise ----------------------------------------------------------------
"$python" "$checker" rules "$work/rendered"/*.yaml

# --- 4. the security scan --------------------------------------------------------------------
checkov() { # DIR OUT: checkov's Kubernetes checks, offline, as JSON
  "$cache/k8s-venv/bin/checkov" -d "$1" --framework kubernetes --skip-download -o json >"$2" 2>"$2.err" || true
}
summarise() { # CHECKOV_JSON: prints the counts and each finding; fails on any finding
  "$python" -c '
import json, sys
data = json.load(open(sys.argv[1]))
reports = data if isinstance(data, list) else [data]
if not reports or "summary" not in reports[0]:
    sys.exit("checkov produced no report: %s" % open(sys.argv[1] + ".err").read()[-2000:])
bad = 0
for report in reports:
    s, r = report["summary"], report["results"]
    print("checkov %s (%s): %d passed, %d failed, %d skipped, %d parsing errors, %d resources" % (
        s["checkov_version"], report["check_type"], s["passed"], s["failed"], s["skipped"], s["parsing_errors"], s["resource_count"]))
    for c in r.get("failed_checks", []):
        print("FAIL %s %s %s (%s)" % (c["check_id"], c["resource"], c["check_name"], c["file_path"]))
    skips = {}
    for c in r.get("skipped_checks", []):
        reason = c["check_result"].get("suppress_comment") or ""
        if reason in ("", "No comment provided"):
            print("FAIL %s %s skipped without a reason in the manifest" % (c["check_id"], c["resource"]))
            bad += 1
        skips.setdefault((c["check_id"], c["resource"], reason), []).append(c["file_path"])
    for (check, resource, reason), files in sorted(skips.items()):
        print("skip %s %s (in %d renders): %s" % (check, resource, len(files), reason))
    bad += s["failed"] + s["parsing_errors"]
    if s["passed"] == 0:
        print("FAIL checkov passed no check: it did not scan")
        bad += 1
sys.exit(1 if bad else 0)' "$1"
}
checkov "$work/canary" "$work/out/canary-checkov.json"
refuses checkov "FAIL CKV_K8S_20" summarise "$work/out/canary-checkov.json"
checkov "$work/rendered" "$work/out/checkov.json"
summarise "$work/out/checkov.json"

# --- 5. the gateway's pod, run here ----------------------------------------------------------
if [[ -n $custody ]]; then
  for overlay in "${overlays[@]}"; do
    "$python" "$checker" pod "$work/rendered/$overlay.yaml" "$custody" "$work/pod-$overlay"
  done
else
  echo "pod: no custody binary given; the configuration was not run"
fi

echo "kubernetes: all checks passed in $((SECONDS - checks_started)) s (after install)"
