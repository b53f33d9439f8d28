"""Calls custody's demo endpoint with the official MCP Python client.

    pip install mcp==2.3.0
    python examples/quickstart.py [URL]

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

URL = sys.argv[1] if len(sys.argv) > 1 else "http://127.0.0.1:8080/mcp/demo"


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


async def main() -> None:
    headers = {"Authorization": f"Bearer {token()}"}
    async with httpx2.AsyncClient(headers=headers, timeout=30) as http:
        async with streamable_http_client(URL, http_client=http) as (read, write):
            async with ClientSession(read, write) as session:
                await session.initialize()
                tools = await session.list_tools()
                print("tools:", ", ".join(t.name for t in tools.tools))
                result = await session.call_tool("echo", {"text": "hello through custody"})
                print("echo:", result.content[0].text)
                result = await session.call_tool("add", {"a": 2, "b": 40})
                print("add:", result.content[0].text)


asyncio.run(main())
