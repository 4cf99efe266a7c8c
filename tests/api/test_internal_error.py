"""A bug in an HTTP route: the documented 500 body, nothing internal in it, and the
client's keep-alive connection still serves its next request."""

from __future__ import annotations

import asyncio
import json


async def _exchange(reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                    path: str) -> tuple[int, dict[str, object]]:
    writer.write(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode())
    await writer.drain()
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
    lines = head.decode().split("\r\n")
    status = int(lines[0].split()[1])
    length = next(int(h.split(":")[1]) for h in lines if h.lower().startswith("content-length"))
    body = await asyncio.wait_for(reader.readexactly(length), 10)
    return status, json.loads(body)


async def test_a_route_bug_is_a_500_and_the_connection_lives_on(gateway) -> None:
    async def boom() -> None:
        raise RuntimeError("secret internal detail /srv/db password=hunter2")

    gateway.app.add_api_route("/api/test-boom", boom)
    reader, writer = await asyncio.open_connection("127.0.0.1", gateway.cfg.server.port)
    try:
        status, body = await _exchange(reader, writer, "/api/test-boom")
        assert status == 500
        assert body == {"error": {"code": "INTERNAL_ERROR", "message": body["error"]["message"]}}
        assert "hunter2" not in json.dumps(body) and "RuntimeError" not in json.dumps(body)
        status, body = await _exchange(reader, writer, "/api/health")  # same connection
        assert status == 200, body
    finally:
        writer.close()
