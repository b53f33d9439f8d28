"""The official Python MCP client as a comparison peer: lists tools and makes calls, and writes
every JSON-RPC message it received (as the transport parsed it, before the session validates
results) to OUT as JSON.

usage: peer_python.py GENERATION OUT CALLS_JSON (--url URL | --stdio COMMAND [ARG...])
  GENERATION: session (initialize) or 2026-07-28 (server/discover, then stateless requests)
  CALLS_JSON: [[TOOL, ARGS], ...], made in order after tools/list
$CUSTODY_TOKEN, when set, is sent as a bearer token on HTTP. A stdio server gets this process's
environment. Exits 0 whatever the peer answered: the comparison is the verdict.
"""

import asyncio
import json
import os
import sys
from contextlib import asynccontextmanager

import anyio
import httpx2
from mcp import ClientSession, types
from mcp.client.stdio import StdioServerParameters, stdio_client
from mcp.client.streamable_http import streamable_http_client


def dump(message) -> dict:
    return types.jsonrpc_message_adapter.dump_python(message, mode="json", by_alias=True, exclude_unset=True)


@asynccontextmanager
async def recorded(streams, record: dict):
    """Puts a recorder between the transport and the session, in both directions."""
    read, write = streams
    to_session, from_recorder = anyio.create_memory_object_stream(64)

    async def pump():
        async with to_session:
            async for item in read:
                if not isinstance(item, Exception):
                    record["received"].append(dump(item.message))
                await to_session.send(item)

    class Writer:
        async def send(self, item):
            message = dump(item.message)
            if "method" in message and "id" in message:
                record["sent"][str(message["id"])] = message["method"]
            await write.send(item)

        async def aclose(self):
            await write.aclose()

        async def __aenter__(self):
            return self

        async def __aexit__(self, *exc):
            return None

    async with anyio.create_task_group() as tg:
        tg.start_soon(pump)
        try:
            yield from_recorder, Writer()
        finally:
            tg.cancel_scope.cancel()


@asynccontextmanager
async def transport(how: str, target: list):
    if how == "--url":
        headers = {}
        if os.environ.get("CUSTODY_TOKEN"):
            headers["Authorization"] = f"Bearer {os.environ['CUSTODY_TOKEN']}"
        async with httpx2.AsyncClient(headers=headers, timeout=30) as http:
            async with streamable_http_client(target[0], http_client=http) as streams:
                yield streams
    else:
        server = StdioServerParameters(command=target[0], args=target[1:], env=dict(os.environ))
        with open(os.devnull, "w") as devnull:
            async with stdio_client(server, errlog=devnull) as streams:
                yield streams


async def main() -> None:
    generation, out, calls, how, target = sys.argv[1], sys.argv[2], json.loads(sys.argv[3]), sys.argv[4], sys.argv[5:]
    if generation not in ("session", "2026-07-28") or how not in ("--url", "--stdio"):
        raise SystemExit(__doc__)
    record = {"client": "python-sdk", "generation": generation, "sent": {}, "received": [], "error": None}
    try:
        with anyio.fail_after(40):
            async with transport(how, target) as streams, recorded(streams, record) as (read, write):
                async with ClientSession(read, write, read_timeout_seconds=20) as session:
                    if generation == "session":
                        await session.initialize()
                    else:
                        await session.discover()
                    await session.list_tools()
                    for name, args in calls:
                        await session.call_tool(name, args)
    except BaseException as e:  # noqa: BLE001 - every failure is part of the record
        while isinstance(e, BaseExceptionGroup) and len(e.exceptions) == 1:
            e = e.exceptions[0]
        record["error"] = f"{type(e).__name__}: {e}"
    with open(out, "w") as f:
        json.dump(record, f, indent=1)


if __name__ == "__main__":
    asyncio.run(main())
