"""Calls the demo's `deploy` tool, which the embedded default's policy holds until a person
approves it, with the official MCP Python client.

    pip install mcp==2.3.0
    python examples/deploy_with_approval.py [URL] [VERSION]

While the call waits, the client prints custody's progress notifications. Approve (or deny) it
from another terminal in the gateway's directory:

    custody approvals list --token-file custody-data/approver-token
    custody approvals approve ID --token-file custody-data/approver-token

The gateway wants a bearer token: this sends $CUSTODY_TOKEN, or else the dev token the
embedded default wrote to ./custody-data/dev-token (run it from the gateway's directory).
"""

import asyncio
import os
import sys
from pathlib import Path

import httpx2
from mcp import ClientSession
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import MCPError

URL = sys.argv[1] if len(sys.argv) > 1 else "http://127.0.0.1:8080/mcp/demo"
VERSION = sys.argv[2] if len(sys.argv) > 2 else "1.4.2"


def token() -> str:
    if os.environ.get("CUSTODY_TOKEN"):
        return os.environ["CUSTODY_TOKEN"]
    path = Path("custody-data/dev-token")
    if path.exists():
        return path.read_text().strip()
    raise SystemExit(
        "no token: set CUSTODY_TOKEN to the dev token custody printed at start"
        " (or run this from the directory where custody serve runs)"
    )


async def waiting(progress: float, total: float | None, message: str | None) -> None:
    print(f"waiting: {message}", flush=True)


async def main() -> str | None:
    """Returns why the call was refused, or None when it ran."""
    headers = {"Authorization": f"Bearer {token()}"}
    # The call can wait up to the gateway's approvals.timeout (10 minutes by default).
    async with httpx2.AsyncClient(headers=headers, timeout=900) as http:
        async with streamable_http_client(URL, http_client=http) as (read, write):
            async with ClientSession(read, write) as session:
                await session.initialize()
                try:
                    result = await session.call_tool(
                        "deploy",
                        {"service": "api", "version": VERSION, "environment": "staging"},
                        read_timeout_seconds=900,
                        progress_callback=waiting,
                    )
                except MCPError as e:
                    return e.error.message
                print("deploy:", result.content[0].text)
                return None


refused = asyncio.run(main())
if refused:
    sys.exit(f"deploy refused: {refused}")
