"""Two real gateway processes as one cluster (one PostgreSQL database, one Redis), and an
HAProxy in front of them: the processes the cluster tests start, and kill by PID.

Each cluster gets a fresh PostgreSQL database, its own Redis namespace (keys and
channels under a random prefix, deleted afterwards) and its own token secret.
"""

from __future__ import annotations

import secrets
import shutil
import subprocess
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import redis
from test_durability import GatewayProcess, free_port
from testdb import TestDatabases

REDIS_URL = "redis://127.0.0.1:6379/0"
HAPROXY = shutil.which("haproxy") or "/usr/sbin/haproxy"


@dataclass
class Node(GatewayProcess):
    extra: dict[str, str] = field(default_factory=dict)

    @property
    def env(self) -> dict[str, str]:
        return {**super().env, **self.extra}

    @property
    def ws(self) -> str:
        return f"ws://127.0.0.1:{self.port}/api/v1/voice/ws"


@dataclass
class Cluster:
    nodes: list[Node]
    prefix: str
    admin_key: str = ""

    def cleanup_redis(self) -> None:
        r = redis.Redis.from_url(REDIS_URL, socket_timeout=5)
        try:
            keys = list(r.scan_iter(match=f"{self.prefix}*", count=500))
            if keys:
                r.delete(*keys)
        finally:
            r.close()


def node_env(prefix: str, secret: str, node_id: str, **extra: str) -> dict[str, str]:
    return {
        "GATEWAY_CLUSTER__ENABLED": "true", "GATEWAY_CLUSTER__REDIS_URL": REDIS_URL,
        "GATEWAY_CLUSTER__PREFIX": prefix, "GATEWAY_CLUSTER__NODE_ID": node_id,
        "GATEWAY_CLUSTER__HEARTBEAT_S": "0.5", "GATEWAY_CLUSTER__NODE_TTL_S": "2",
        "GATEWAY_AUTH__TOKEN_SECRET": secret,
        # Rate limits go to the cluster's Redis by default; this run's own namespace.
        "GATEWAY_RATELIMIT__KEY_PREFIX": f"{prefix}-rl",
        # espeak-ng: replies last seconds in real time (a drain has one to wait for);
        # no embedder: a node starts in a few seconds.
        "GATEWAY_TTS__PROVIDER": "espeak", "GATEWAY_EMBEDDER__PROVIDER": "null",
        "GATEWAY_SERVER__DRAIN_TIMEOUT_S": "10",
        **extra,
    }


def start_cluster(tmp: Path, n: int = 2, **extra: str) -> Iterator[Cluster]:
    """``n`` nodes started together (they race for the fresh database's migrations),
    an admin key; everything stopped and deleted afterwards."""
    dbs = TestDatabases()
    url = dbs.new_url("postgres", tmp)
    prefix = f"gwtest-{secrets.token_hex(6)}"
    secret = secrets.token_urlsafe(32)
    nodes = [Node(tmp / f"node{i}", url,
                  extra=node_env(prefix, secret, f"node-{'ab'[i]}", **extra))
             for i in range(n)]
    cluster = Cluster(nodes, prefix)
    try:
        with ThreadPoolExecutor(n) as pool:
            list(pool.map(Node.start, nodes))
        cluster.admin_key = nodes[0].cli("keys", "create", "--name", "admin").strip()
        yield cluster
    finally:
        for node in nodes:
            node.stop()
        cluster.cleanup_redis()
        dbs.drop_all()


@dataclass
class Balancer:
    """HAProxy on 127.0.0.1 in front of the nodes: deploy/haproxy.cfg with readiness
    checks every 300 ms (a node is down after 3 failed ones: one slow answer on a loaded
    machine must not take it out), and an upgrade a draining node answers 503 retried on
    another node."""

    nodes: list[Node]
    folder: Path
    checks: bool = True  # False: no readiness checks, only the retry on a 503 upgrade
    port: int = field(default_factory=free_port)
    proc: subprocess.Popen[bytes] | None = None

    @property
    def ws(self) -> str:
        return f"ws://127.0.0.1:{self.port}/api/v1/voice/ws"

    def config(self) -> str:
        check = " check" if self.checks else ""
        servers = "\n".join(f"    server node{i} 127.0.0.1:{n.port}{check}"
                            for i, n in enumerate(self.nodes))
        return (Path(__file__).parent.parent / "deploy" / "haproxy.cfg").read_text() \
            .replace("bind :8080", f"bind 127.0.0.1:{self.port}") \
            .replace("    server-template gateway 2 gateway:8080 check resolvers dns "
                     "init-addr none\n", servers + "\n") \
            .replace("inter 2s fall 2 rise 2", "inter 300ms fall 3 rise 1")

    def start(self) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        cfg = self.folder / "haproxy.cfg"
        cfg.write_text(self.config())
        log = open(self.folder / "haproxy.log", "wb")
        self.proc = subprocess.Popen([HAPROXY, "-db", "-f", str(cfg)], stdout=log,
                                     stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"http://127.0.0.1:{self.port}/api/health/ready",
                             timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            assert self.proc.poll() is None, (self.folder / "haproxy.log").read_text()
            time.sleep(0.1)
        raise RuntimeError((self.folder / "haproxy.log").read_text())

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)
