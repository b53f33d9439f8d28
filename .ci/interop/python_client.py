"""The official Python MCP client through the gateway, in both protocol generations.

usage: python_client.py URL TOOL ARGS_JSON EXPECT [--session-only]
Lists tools, checks TOOL is among them, calls it with ARGS_JSON and checks the text of the
result contains EXPECT. Sends $CUSTODY_TOKEN as a bearer token when set. Exits non-zero with a
message on any failure.
"""

import asyncio
import json
import os
import sys

import httpx2
from mcp import ClientSession
from mcp.client.streamable_http import streamable_http_client


async def run(url: str, tool: str, args: dict, expect: str, modern: bool) -> None:
    generation = "2026-07-28 (stateless)" if modern else "session-based"
    headers = {}
    if os.environ.get("CUSTODY_TOKEN"):
        headers["Authorization"] = f"Bearer {os.environ['CUSTODY_TOKEN']}"
    async with httpx2.AsyncClient(headers=headers, timeout=30) as http:
        async with streamable_http_client(url, http_client=http) as (read, write):
            async with ClientSession(read, write) as session:
                if modern:
                    await session.discover()
                else:
                    await session.initialize()
                listed = await session.list_tools()
                names = [t.name for t in listed.tools]
                if tool not in names:
                    raise SystemExit(f"{generation}: {tool} not in tools/list of {url}: {names}")
                result = await session.call_tool(tool, args)
                if result.is_error:
                    raise SystemExit(f"{generation}: {tool} returned an error: {result.content}")
                text = " ".join(getattr(c, "text", "") for c in result.content)
                if expect not in text:
                    raise SystemExit(f"{generation}: {tool} answered {text!r}, expected {expect!r}")
                print(f"python mcp client, {generation}: {url}: {len(names)} tools, {tool} -> {text[:60]!r}")


async def main() -> None:
    url, tool, args, expect = sys.argv[1], sys.argv[2], json.loads(sys.argv[3]), sys.argv[4]
    await run(url, tool, args, expect, modern=False)
    if "--session-only" not in sys.argv:
        await run(url, tool, args, expect, modern=True)


if __name__ == "__main__":
    asyncio.run(main())
