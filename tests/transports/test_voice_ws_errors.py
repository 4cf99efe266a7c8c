"""Bad input gets a clear error and the session goes on; only abuse closes the socket."""

from __future__ import annotations

import asyncio
import base64
import time
from collections.abc import Iterator

import pytest
import websockets
from voice_client import VoiceClient, silence

from gateway.providers.base import ChatRequest
from gateway.providers.null import NullLLM


async def expect_error_then_pong(client: VoiceClient, n: int, fragment: str) -> None:
    err = await client.wait_for("error", count=n, timeout=5)
    assert err["code"] == "INVALID_REQUEST", err
    assert fragment in err["message"], err
    await client.send_json({"type": "ping"})
    await client.wait_for("pong", count=n, timeout=5)


async def test_each_bad_input_gets_an_error_and_the_session_goes_on(gateway) -> None:
    client = await VoiceClient.connect(gateway.ws_url)
    await client.wait_for("session_started")
    cases = [
        ("this is not json", "not valid JSON"),
        ('{"type": "dance"}', "unknown message type"),
        ('{"no_type": 1}', "missing field: type"),
        ('{"type": "text"}', "missing field: text"),
        ('{"type": "audio"}', "missing field: data"),
        ('{"type": "audio", "data": "***"}', "base64"),
        ("[1, 2, 3]", "JSON object"),
    ]
    for i, (raw, fragment) in enumerate(cases, start=1):
        await client.ws.send(raw)
        await expect_error_then_pong(client, i, fragment)
    n = len(cases)
    await client.ws.send(silence(1100))  # over 1 s
    await expect_error_then_pong(client, n + 1, "longer than 1000 ms")
    await client.ws.send(b"\x01\x02\x03")  # odd length
    await expect_error_then_pong(client, n + 2, "even number of bytes")
    await client.ws.send(silence(100))  # fine
    await client.send_json({"type": "start", "sample_rate": 8000})
    await expect_error_then_pong(client, n + 3, "may not change the audio format")
    b64 = base64.b64encode(silence(20)).decode()
    await client.send_json({"type": "audio", "data": b64})
    await client.send_json({"type": "ping"})
    await client.wait_for("pong", count=n + 4, timeout=5)
    assert len(client.events("error")) == n + 3
    assert not client.closed.is_set()
    await client.close()


async def test_start_then_format_is_used(gateway) -> None:
    client = await VoiceClient.connect(gateway.ws_url)
    await client.send_json({"type": "start", "sample_rate": 8000, "encoding": "mulaw"})
    started = await client.wait_for("session_started")
    assert started["input"] == {"encoding": "mulaw", "sample_rate": 8000}
    assert started["output"] == {"encoding": "mulaw", "sample_rate": 8000}
    await client.send_json({"type": "start", "sample_rate": 16000})
    err = await client.wait_for("error")
    assert "only once" in err["message"]
    await client.close()


async def test_oversized_message_closes_the_socket(gateway) -> None:
    client = await VoiceClient.connect(gateway.ws_url)
    await client.wait_for("session_started")
    with pytest.raises(websockets.ConnectionClosed):
        await client.ws.send(b"\x00" * (2 << 20))
        await asyncio.wait_for(client.closed.wait(), 5)
        await client.ws.send(b"\x00\x00")
    assert client.ws.close_code == 1009


async def test_idle_client_is_disconnected(gateway_factory) -> None:
    gw = gateway_factory(server={"idle_timeout_s": 1.0})
    client = await VoiceClient.connect(gw.ws_url)
    await client.wait_for("session_started")
    await asyncio.wait_for(client.closed.wait(), 5)
    assert client.ws.close_code == 4408


async def test_shutdown_lets_the_reply_finish_then_closes_1012(gateway_factory) -> None:
    """The reply in flight plays to its end; the session goes on until the drain's
    deadline, then is told to reconnect (a retryable error) and closed with 1012."""
    gw = gateway_factory(server={"drain_timeout_s": 6.0})
    client = await VoiceClient.connect(gw.ws_url)
    await client.wait_for("session_started")
    await client.send_json({"type": "text", "text": "How is the weather?"})
    await client.wait_for("tts_start", timeout=30)
    stopped = time.monotonic()
    gw.server.should_exit = True  # what SIGTERM does
    end = await client.wait_for("stream_end", timeout=15)
    await asyncio.sleep(0.3)
    assert not client.closed.is_set()  # not closed when the reply ended
    await asyncio.wait_for(client.closed.wait(), 15)
    assert client.ws.close_code == 1012 and time.monotonic() - stopped > 5.5
    [complete] = client.events("tts_complete")
    assert complete["interrupted"] is False and end["response_id"] == complete["response_id"]
    error = client.events("error")[-1]
    assert error["code"] == "UNAVAILABLE" and error["retryable"] is True


class CrashOnceLLM(NullLLM):
    """A provider with a bug: its first reply raises a plain exception (not a
    ProviderError, so no failover catches it), the next ones answer."""

    name = "crash_once"

    def __init__(self) -> None:
        super().__init__()
        self.calls = 0

    def generate(self, request: ChatRequest) -> Iterator[str]:
        self.calls += 1
        if self.calls == 1:
            raise RuntimeError("bug at /srv/gateway/llm.py:12")
        return super().generate(request)


async def test_a_crashing_reply_gives_internal_error_and_the_session_goes_on(
        gateway_factory) -> None:
    gw = gateway_factory(providers={"llm": CrashOnceLLM()})
    client = await VoiceClient.connect(gw.ws_url)
    await client.wait_for("session_started")
    await client.send_json({"type": "text", "text": "hello"})
    err = await client.wait_for("error", timeout=10)
    assert err["code"] == "INTERNAL_ERROR" and err["message"] == "internal error", err
    start = await client.wait_for("stream_start", timeout=10)
    end = await client.wait_for("stream_end", timeout=10)  # the failed reply is over
    assert end["response_id"] == start["response_id"]
    await client.send_json({"type": "text", "text": "hello again"})
    reply = await client.wait_for("agent_response", timeout=10)
    assert reply["text"] == "Hello! This is a benchmark reply."
    await client.wait_for("stream_end", count=2, timeout=10)
    assert len(client.events("error")) == 1
    assert not client.closed.is_set()
    await client.close()
