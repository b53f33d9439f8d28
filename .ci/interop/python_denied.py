"""The official Python MCP client calls a tool that policy denies: it must get a clear error.

usage: python_denied.py URL TOOL EXPECT   (token in $CUSTODY_TOKEN)
Initializes a session, calls TOOL, and checks the client raised an MCPError whose message
contains EXPECT. Exits non-zero otherwise.
"""

import asyncio
import os
import sys

import httpx2
from mcp import ClientSession
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import MCPError


async def main() -> None:
    url, tool, expect = sys.argv[1], sys.argv[2], sys.argv[3]
    headers = {"Authorization": f"Bearer {os.environ['CUSTODY_TOKEN']}"}
    async with httpx2.AsyncClient(headers=headers, timeout=30) as http:
        async with streamable_http_client(url, http_client=http) as (read, write):
            async with ClientSession(read, write) as session:
                await session.initialize()
                try:
                    result = await session.call_tool(tool, {})
                except MCPError as e:
                    message = str(e.error.message)
                    if expect not in message:
                        raise SystemExit(f"the error says {message!r}, expected {expect!r}")
                    print(f"python mcp client: {tool} refused: {message}")
                    return
                raise SystemExit(f"{tool} was not refused: {result}")


if __name__ == "__main__":
    asyncio.run(main())
