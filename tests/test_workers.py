"""Several worker processes on one port: sessions are served by both, SIGTERM stops all."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import psutil
from voice_client import VoiceClient


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_two_workers_share_the_port(tmp_path: Path) -> None:
    port = free_port()
    env = {**os.environ, "GATEWAY_SERVER__PORT": str(port),
           "GATEWAY_SERVER__DATA_DIR": str(tmp_path), "GATEWAY_SERVER__WORKERS": "2",
           "GATEWAY_SERVER__LOG_LEVEL": "warning", "GATEWAY_STT__PROVIDER": "null",
           "GATEWAY_LLM__PROVIDER": "null", "GATEWAY_TTS__PROVIDER": "null",
           "GATEWAY_RATELIMIT__ENABLED": "false"}
    proc = subprocess.Popen([sys.executable, "-m", "gateway", "serve"], env=env,  # noqa: ASYNC220
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as http:
            while True:
                assert time.monotonic() < deadline, "gateway did not start"
                try:
                    if (await http.get("/api/health")).status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                await asyncio.sleep(0.2)
        workers = psutil.Process(proc.pid).children()
        assert len(workers) == 2
        clients = [await VoiceClient.connect(f"ws://127.0.0.1:{port}/api/v1/voice/ws")
                   for _ in range(8)]
        for c in clients:
            await c.wait_for("session_started")
            await c.send_json({"type": "text", "text": "hello"})
        for c in clients:
            await c.wait_for("stream_end", timeout=20)
        # Every session is held by one of the workers (the parent accepts nothing).
        held = [sum(1 for conn in w.net_connections(kind="tcp")
                    if conn.laddr and conn.laddr.port == port and conn.status == "ESTABLISHED")
                for w in workers]
        parent = [c for c in psutil.Process(proc.pid).net_connections(kind="tcp")
                  if c.status == "ESTABLISHED"]
        assert sum(held) == 8 and not parent, held
        for c in clients:
            await c.close()
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)
        assert proc.returncode == 0
        assert not any(w.is_running() and w.status() != psutil.STATUS_ZOMBIE for w in workers)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


async def test_worker_connections_skip_nagle() -> None:
    # Without TCP_NODELAY a reply's first audio waited ~20 ms behind the events before it.
    from gateway.server import listening_socket

    sock = listening_socket("127.0.0.1", 0)
    accepted: asyncio.Future[int] = asyncio.get_running_loop().create_future()

    def on_connect(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        raw = writer.get_extra_info("socket")
        accepted.set_result(raw.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))
        writer.close()

    server = await asyncio.start_server(on_connect, sock=sock)
    async with server:
        _, writer = await asyncio.open_connection(*sock.getsockname()[:2])
        assert await asyncio.wait_for(accepted, 5) != 0
        writer.close()
