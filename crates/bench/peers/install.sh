#!/usr/bin/env bash
# Installs the peer gateways custody-bench peers runs beside custody into CACHE (a directory
# outside the repository or ignored by it): FastMCP's proxy (Python), pinned.
#   crates/bench/peers/install.sh CACHE
set -euo pipefail
cache=${1:?usage: install.sh CACHE}
mkdir -p "$cache"
if [ ! -x "$cache/fastmcp/bin/python" ]; then
  python3 -m venv "$cache/fastmcp"
fi
"$cache/fastmcp/bin/pip" install --quiet --disable-pip-version-check fastmcp==4.2.3
echo "peers installed in $cache: $("$cache/fastmcp/bin/python" -c 'import fastmcp; print("fastmcp", fastmcp.__version__)')"
