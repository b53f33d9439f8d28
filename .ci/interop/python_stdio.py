"""The official Python MCP client, with its stdio transport, through `custody connect`: the
client starts `custody connect URL` as its server process, as a CI job would.

usage: python_stdio.py CUSTODY URL TOOL ARGS_JSON EXPECT   (the job's token in $CUSTODY_TOKEN;
$CUSTODY_EVIDENCE, if set, is where `custody connect --evidence` writes the job's evidence)
Lists tools, calls TOOL and checks the result's text contains EXPECT; exits non-zero otherwise.
"""

import asyncio
import json
import os
import sys

from mcp import ClientSession
from mcp.client.stdio import StdioServerParameters, stdio_client


async def main() -> None:
    custody, url, tool, args, expect = sys.argv[1:6]
    server = StdioServerParameters(
        command=custody,
        args=["connect", url]
        + (["--evidence", os.environ["CUSTODY_EVIDENCE"]] if os.environ.get("CUSTODY_EVIDENCE") else []),
        # Only what a job would pass on: its token (and PATH for the process to start).
        env={"CUSTODY_TOKEN": os.environ["CUSTODY_TOKEN"], "PATH": os.environ.get("PATH", "")},
    )
    async with stdio_client(server) as (read, write):
        async with ClientSession(read, write) as session:
            await session.initialize()
            names = [t.name for t in (await session.list_tools()).tools]
            if tool not in names:
                raise SystemExit(f"{tool} not in tools/list through custody connect: {names}")
            result = await session.call_tool(tool, json.loads(args))
            text = " ".join(getattr(c, "text", "") for c in result.content)
            if result.is_error or expect not in text:
                raise SystemExit(f"{tool} answered {text!r} (error: {result.is_error}), expected {expect!r}")
            print(f"python mcp client (stdio) via custody connect: {tool}: {text[:80]}")


asyncio.run(main())
