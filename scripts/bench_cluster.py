"""``scripts/bench --cluster N``: N gateway nodes in cluster mode behind HAProxy.

The nodes share a fresh PostgreSQL database (created on the local server, dropped after)
and a Redis namespace (a random key prefix, deleted after); HAProxy runs
deploy/haproxy.cfg with the nodes as its servers, so the bench's sessions take the path
a deployment's do (readiness checks, leastconn). The nodes' CPU and RSS are summed
(``group_pids``); HAProxy's own CPU is reported beside them.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
PG_ADMIN = os.environ.get("GATEWAY_TEST_PG", "postgresql://postgres@127.0.0.1:5432/test")
REDIS_URL = os.environ.get("GATEWAY_BENCH_REDIS", "redis://127.0.0.1:6379/0")


async def _pg(sql: str) -> None:
    import asyncpg

    conn = await asyncpg.connect(PG_ADMIN, timeout=10)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


class ClusterRun:
    def __init__(self, nodes: int, env: dict[str, str], folder: Path,
                 free_port: Any) -> None:
        self.n = nodes
        self.env = env
        self.folder = folder
        self.free_port = free_port
        self.db = f"gw_bench_{secrets.token_hex(5)}"
        self.prefix = f"gwbench-{secrets.token_hex(5)}"
        self.nodes: list[subprocess.Popen[bytes]] = []
        self.ports: list[int] = []
        self.lb: subprocess.Popen[bytes] | None = None
        self.lb_port = free_port()

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.lb_port}"

    def start(self) -> str:
        asyncio.run(_pg(f'CREATE DATABASE "{self.db}"'))
        url = PG_ADMIN.rsplit("/", 1)[0].replace("postgresql://", "postgresql+asyncpg://")
        secret = secrets.token_urlsafe(32)
        for i in range(self.n):
            port = self.free_port()
            env = {**self.env, "GATEWAY_SERVER__PORT": str(port),
                   "GATEWAY_SERVER__DATA_DIR": str(self.folder / f"node{i}"),
                   "GATEWAY_DATABASE__URL": f"{url}/{self.db}",
                   "GATEWAY_CLUSTER__ENABLED": "true", "GATEWAY_CLUSTER__REDIS_URL": REDIS_URL,
                   "GATEWAY_CLUSTER__PREFIX": self.prefix,
                   "GATEWAY_CLUSTER__NODE_ID": f"bench-{i}",
                   "GATEWAY_AUTH__TOKEN_SECRET": secret}
            with open(self.folder / f"node{i}.log", "wb") as log:
                self.nodes.append(subprocess.Popen([sys.executable, "-m", "gateway", "serve"],
                                                   cwd=ROOT, env=env, stdout=log,
                                                   stderr=subprocess.STDOUT))
            self.ports.append(port)
        for port in self.ports:
            self._wait(f"http://127.0.0.1:{port}/api/health/ready", 120)
        self._start_lb()
        self._wait(self.base + "/api/health/ready", 20)
        return self.base

    def _start_lb(self) -> None:
        servers = "\n".join(f"    server node{i} 127.0.0.1:{p} check"
                            for i, p in enumerate(self.ports))
        cfg = (ROOT / "deploy" / "haproxy.cfg").read_text() \
            .replace("bind :8080", f"bind 127.0.0.1:{self.lb_port}") \
            .replace("    server-template gateway 2 gateway:8080 check resolvers dns "
                     "init-addr none\n", servers + "\n")
        path = self.folder / "haproxy.cfg"
        path.write_text(cfg)
        haproxy = shutil.which("haproxy") or "/usr/sbin/haproxy"
        with open(self.folder / "haproxy.log", "wb") as log:
            self.lb = subprocess.Popen([haproxy, "-db", "-f", str(path)], stdout=log,
                                       stderr=subprocess.STDOUT)

    def _wait(self, url: str, timeout: float) -> None:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if any(p.poll() is not None for p in [*self.nodes, *([self.lb] if self.lb else [])]):
                raise RuntimeError(f"a cluster process exited; logs in {self.folder}")
            try:
                with urllib.request.urlopen(url, timeout=2) as resp:
                    if resp.status == 200:
                        return
            except (urllib.error.URLError, OSError):
                pass
            time.sleep(0.2)
        raise RuntimeError(f"{url} not ready after {timeout:.0f} s")

    def group_pids(self) -> list[int]:
        return [p.pid for p in self.nodes]

    def lb_cpu_s(self) -> float | None:
        if self.lb is None:
            return None
        try:
            with open(f"/proc/{self.lb.pid}/stat") as fh:
                fields = fh.read().rsplit(")", 1)[1].split()
            return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
        except OSError:
            return None

    def describe(self) -> str:
        return (f"cluster of {self.n} nodes (ports {self.ports}) behind HAProxy "
                f"{self.base}, PostgreSQL {self.db}, Redis prefix {self.prefix}")

    def stop(self, stop_process: Any) -> None:
        for proc in [*([self.lb] if self.lb else []), *self.nodes]:
            stop_process(proc)
        try:
            import redis

            r = redis.Redis.from_url(REDIS_URL, socket_timeout=5)
            keys = list(r.scan_iter(match=f"{self.prefix}*", count=500))
            if keys:
                r.delete(*keys)
            r.close()
        finally:
            asyncio.run(_pg(f'DROP DATABASE IF EXISTS "{self.db}" WITH (FORCE)'))
