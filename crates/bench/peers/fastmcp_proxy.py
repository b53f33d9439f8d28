"""A peer gateway for custody-bench peers: FastMCP's proxy relaying Streamable HTTP.

Usage: python fastmcp_proxy.py UPSTREAM_URL PORT
"""
import sys

from fastmcp.server import create_proxy

create_proxy(sys.argv[1]).run(
    transport="http",
    host="127.0.0.1",
    port=int(sys.argv[2]),
    path="/mcp",
    show_banner=False,
    log_level="warning",
)
