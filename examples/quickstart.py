"""Calls custody's demo endpoint with the official MCP Python client.

    pip install mcp==2.3.0
    python examples/quickstart.py [URL]
"""

import asyncio
import sys

from mcp import ClientSession
from mcp.client.streamable_http import streamable_http_client

URL = sys.argv[1] if len(sys.argv) > 1 else "http://127.0.0.1:8080/mcp/demo"


async def main() -> None:
    async with streamable_http_client(URL) as (read, write):
        async with ClientSession(read, write) as session:
            await session.initialize()
            tools = await session.list_tools()
            print("tools:", ", ".join(t.name for t in tools.tools))
            result = await session.call_tool("echo", {"text": "hello through custody"})
            print("echo:", result.content[0].text)
            result = await session.call_tool("add", {"a": 2, "b": 40})
            print("add:", result.content[0].text)


asyncio.run(main())
