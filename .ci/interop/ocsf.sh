#!/usr/bin/env bash
# OCSF export: `custody log export --format ocsf` on a log with real calls must produce events
# that validate against the OCSF 1.5.0 API Activity schema. The schema comes from the
# ocsf-json-schema package (the OCSF releases, packaged), checked with jsonschema.
# Usage: ocsf.sh CUSTODY CACHE DATA_DIR
set -euo pipefail
custody=${1:?usage: ocsf.sh CUSTODY CACHE DATA_DIR}
cache=${2:?usage: ocsf.sh CUSTODY CACHE DATA_DIR}
data=${3:?usage: ocsf.sh CUSTODY CACHE DATA_DIR}
here=$(cd "$(dirname "$0")" && pwd)
packages=(ocsf-json-schema==1.2.0 jsonschema==4.26.0)
venv="$cache/ocsf-venv"
if [[ ! -f "$venv/installed" || "$(cat "$venv/installed")" != "${packages[*]}" ]]; then
  rm -rf "$venv"
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check "${packages[@]}"
  echo "${packages[*]}" > "$venv/installed"
fi
"$custody" log export --format ocsf --data "$data" | "$venv/bin/python" "$here/check_ocsf.py"
