"""kill -9: whatever the gateway acknowledged (2xx) is still there after a SIGKILL.

The gateway runs as a real process (``python -m gateway serve``, configured through
GATEWAY_* variables) on the test backend (GATEWAY_TEST_DB: SQLite in the data dir, or a
fresh PostgreSQL database). An API key comes from the CLI. Over HTTP we import documents,
chat (JSON and SSE, both seed request shapes), give feedback and log a conversation; the
last burst of writes runs concurrently and the process is killed with SIGKILL the moment
the last response arrives. A new process on the same data dir and database must then
show every acknowledged document, message, feedback and logged conversation.
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from testdb import selected_backend

TESTS = Path(__file__).resolve().parent
ROOT = TESTS.parent
START_TIMEOUT_S = 90


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def gateway_env(data_dir: Path, port: int, database_url: str | None) -> dict[str, str]:
    """The parent's environment without GATEWAY_* settings, plus this gateway's."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("GATEWAY_")}
    env.update({
        "HF_HUB_OFFLINE": "1",
        "GATEWAY_SERVER__PORT": str(port), "GATEWAY_SERVER__DATA_DIR": str(data_dir),
        "GATEWAY_SERVER__LOG_LEVEL": "warning", "GATEWAY_SERVER__LOG_FORMAT": "json",
        "GATEWAY_SERVER__ALLOW_ANONYMOUS": "false",
        "GATEWAY_KNOWLEDGE__PATH": str(TESTS / "data" / "knowledge"),
        # Real text pipeline, no speech models: the process starts in seconds.
        "GATEWAY_LLM__PROVIDER": "extractive", "GATEWAY_VAD__PROVIDER": "webrtcvad",
        "GATEWAY_STT__PROVIDER": "null", "GATEWAY_TTS__PROVIDER": "null",
    })
    if database_url:  # else the embedded default: SQLite in the data dir
        env["GATEWAY_DATABASE__URL"] = database_url
    return env


@dataclass
class GatewayProcess:
    data_dir: Path
    database_url: str | None
    port: int = field(default_factory=free_port)
    proc: subprocess.Popen[bytes] | None = None
    starts: int = 0

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def env(self) -> dict[str, str]:
        return gateway_env(self.data_dir, self.port, self.database_url)

    @property
    def log(self) -> Path:
        return self.data_dir / f"server{self.starts}.log"

    def cli(self, *args: str) -> str:
        done = subprocess.run([sys.executable, "-m", "gateway", *args], env=self.env, cwd=ROOT,
                              capture_output=True, text=True, timeout=120, check=False)
        assert done.returncode == 0, done.stderr[-3000:]
        return done.stdout

    def start(self) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.starts += 1
        with open(self.log, "wb") as log:  # the child keeps its own descriptor
            self.proc = subprocess.Popen([sys.executable, "-m", "gateway", "serve"],
                                         env=self.env, cwd=ROOT, stdout=log,
                                         stderr=subprocess.STDOUT)
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:  # uvicorn answers only once the lifespan (migrations) is done
            try:
                if httpx.get(f"{self.base}/api/health", timeout=2).status_code < 500:
                    return
            except httpx.HTTPError:
                pass
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"gateway did not start:\n{self.log.read_text()[-3000:]}")
            time.sleep(0.1)

    def kill9(self) -> None:
        assert self.proc is not None and self.proc.poll() is None, "the gateway died early"
        os.kill(self.proc.pid, signal.SIGKILL)
        assert self.proc.wait(timeout=10) == -signal.SIGKILL

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)


@pytest.fixture
def gateway_process(
    tmp_path: Path, new_database_url: Callable[..., str]
) -> Iterator[GatewayProcess]:
    url = new_database_url() if selected_backend() == "postgres" else None
    gw = GatewayProcess(tmp_path / "data", url)
    yield gw
    gw.stop()


# --- what the first life of the gateway acknowledges ------------------------------------


@dataclass
class Acknowledged:
    documents: dict[str, str] = field(default_factory=dict)  # id -> its unique word
    messages: dict[str, set[str]] = field(default_factory=dict)  # conversation -> ids
    feedback: dict[str, set[str]] = field(default_factory=dict)  # conversation -> ids
    logged: dict[str, list[tuple[str, str]]] = field(default_factory=dict)
    sessions: set[str] = field(default_factory=set)

    def add_exchange(self, body: dict[str, Any]) -> None:
        ids = self.messages.setdefault(body["conversation_id"], set())
        ids.update((body["user_message_id"], body["message_id"]))


def ok(resp: httpx.Response) -> dict[str, Any]:
    assert resp.is_success, f"{resp.request.method} {resp.request.url}: " \
                            f"{resp.status_code} {resp.text[:500]}"
    return resp.json()  # type: ignore[no-any-return]


async def import_documents(http: httpx.AsyncClient, acked: Acknowledged, n: int) -> None:
    words = [f"durable{secrets.token_hex(4)}" for _ in range(n)]
    body = ok(await http.post("/api/v1/documents/import", json={
        "chatModelId": "default",
        "documents": [{"title": f"Durability note {w}", "url": f"https://example.com/{w}",
                       "content": f"# Note\n\nThe keyword {w} proves this note survived.",
                       "metadata": {"category": "durability"}} for w in words],
    }))
    assert body["success"] is True and body["imported"] == n
    for doc, word in zip(body["documents"], words, strict=True):
        acked.documents[doc["id"]] = word


async def chat(http: httpx.AsyncClient, acked: Acknowledged, **body: Any) -> dict[str, Any]:
    answer = ok(await http.post("/api/chat", json=body))
    acked.add_exchange(answer)
    acked.sessions.add(answer["sessionId"])
    return answer


async def chat_streaming(http: httpx.AsyncClient, acked: Acknowledged, message: str) -> str:
    """An SSE chat: acknowledged once ``agent_response`` arrives (sent after storing)."""
    events: list[tuple[str, dict[str, Any]]] = []
    async with http.stream("POST", "/api/chat?stream=true",
                           json={"message": message, "user_id": "durable-user"}) as resp:
        assert resp.status_code == 200
        name = ""
        async for line in resp.aiter_lines():
            if line.startswith("event:"):
                name = line[6:].strip()
            elif line.startswith("data:") and name:
                events.append((name, json.loads(line[5:])))
    names = [n for n, _ in events]
    assert names[0] == "stream_start" and names[-1] == "stream_end", names
    (answer,) = [d for n, d in events if n == "agent_response"]
    acked.add_exchange(answer)
    return str(answer["conversation_id"])


async def give_feedback(http: httpx.AsyncClient, acked: Acknowledged, conversation_id: str,
                        message_id: str, thumbs_up: bool) -> None:
    body = ok(await http.post("/api/feedback", json={
        "conversation_id": conversation_id, "message_id": message_id,
        "feedback_type": "thumbs_up" if thumbs_up else "thumbs_down",
        "feedback_value": 1 if thumbs_up else 0, "comment": "durability",
        "user_id": "durable-user"}))
    assert body["status"] == "success"
    acked.feedback.setdefault(conversation_id, set()).add(body["feedback_id"])


async def log_conversation(http: httpx.AsyncClient, acked: Acknowledged, n: int) -> None:
    session = f"avatar-{secrets.token_hex(4)}"
    messages = [("user", f"Hello number {n}"), ("assistant", f"Hi there, number {n}!")]
    body = ok(await http.post("/api/conversations/log", json={
        "sessionId": session, "messages": [{"role": r, "content": c} for r, c in messages],
        "metadata": {"duration": 180, "source": "web"}}))
    assert body["success"] is True
    acked.logged.setdefault(body["conversationId"], []).extend(messages)


async def first_life(base: str, key: str) -> Acknowledged:
    acked = Acknowledged()
    headers = {"Authorization": f"Bearer {key}"}
    async with httpx.AsyncClient(base_url=base, headers=headers, timeout=30) as http:
        await import_documents(http, acked, 3)
        platform = await chat(http, acked, message="What is the gateway?", model="gpt-4o",
                              user_id="durable-user", conversation_id=None,
                              system_prompt="You are a helpful assistant.")
        conv = platform["conversation_id"]
        await chat(http, acked, message="Tell me about barge-in", user_id="durable-user",
                   conversation_id=conv)
        avatar = await chat(http, acked, message="What products do you offer?",
                            sessionId=f"sess-{secrets.token_hex(4)}", history=[])
        await chat(http, acked, message="And does it work offline?",
                   sessionId=avatar["sessionId"], history=[])
        streamed = await chat_streaming(http, acked, "How do session tokens work?")
        await give_feedback(http, acked, conv, platform["message_id"], thumbs_up=True)
        # The last burst, all at once; the process dies the moment the last one answers.
        ids = sorted(acked.messages[streamed])
        await asyncio.gather(
            import_documents(http, acked, 2),
            log_conversation(http, acked, 1), log_conversation(http, acked, 2),
            chat(http, acked, message="Is latency measured?", user_id="durable-user",
                 conversation_id=conv),
            *(give_feedback(http, acked, streamed, mid, thumbs_up=i % 2 == 0)
              for i, mid in enumerate(ids * 3)),
        )
    return acked


# --- what the second life must show -------------------------------------------------------


async def check_documents(http: httpx.AsyncClient, acked: Acknowledged) -> None:
    for doc_id, word in acked.documents.items():
        found = ok(await http.post("/api/v1/documents/search", json={
            "chatModelId": "default", "query": word, "limit": 5}))
        # First: notes that only look alike ("durable<hex>") may follow, found by meaning.
        assert [d["id"] for d in found["documents"]][:1] == [doc_id], word
        full = ok(await http.get(f"/api/v1/documents/{doc_id}"))["document"]
        assert word in full["content"] and full["url"] == f"https://example.com/{word}"


async def check_messages(http: httpx.AsyncClient, acked: Acknowledged) -> None:
    for conv, ids in acked.messages.items():
        page = ok(await http.get(f"/api/conversation/{conv}/messages", params={"limit": 200}))
        stored = {m["id"] for m in page["messages"]}
        assert ids <= stored, f"lost messages of {conv}: {ids - stored}"
        assert page["total"] >= len(ids)
    for conv, messages in acked.logged.items():
        page = ok(await http.get(f"/api/conversation/{conv}/messages"))
        assert [(m["role"], m["content"]) for m in page["messages"]] == messages
    listed = ok(await http.get("/api/conversations", params={"limit": 100}))
    assert set(acked.messages) | set(acked.logged) <= {c["id"] for c in listed["conversations"]}
    found = ok(await http.post("/api/search/messages", json={"query": "latency"}))
    assert any(r["conversation_id"] in acked.messages for r in found["results"])


async def check_feedback(http: httpx.AsyncClient, acked: Acknowledged) -> None:
    for conv, ids in acked.feedback.items():
        analysis = ok(await http.get(f"/api/feedback/analyze/{conv}"))
        stored = {d["feedback_id"] for d in analysis["feedback_details"]}
        assert ids <= stored, f"lost feedback of {conv}: {ids - stored}"
        assert analysis["total_feedback"] >= len(ids)
        assert analysis["positive_feedback"] + analysis["negative_feedback"] >= len(ids)


async def second_life(base: str, key: str, acked: Acknowledged) -> None:
    headers = {"Authorization": f"Bearer {key}"}
    async with httpx.AsyncClient(base_url=base, headers=headers, timeout=30) as http:
        await check_documents(http, acked)
        await check_messages(http, acked)
        await check_feedback(http, acked)


async def test_acknowledged_writes_survive_kill_9(gateway_process: GatewayProcess) -> None:
    gw = gateway_process
    await asyncio.to_thread(gw.start)
    key = (await asyncio.to_thread(gw.cli, "keys", "create", "--name", "durability")).strip()
    assert key.startswith("gw_")
    acked = await first_life(gw.base, key)
    gw.kill9()  # no shutdown, no flush, no lifespan exit
    assert len(acked.documents) == 5 and sum(map(len, acked.feedback.values())) == 7
    await asyncio.to_thread(gw.start)  # same data dir, same database
    await second_life(gw.base, key, acked)
