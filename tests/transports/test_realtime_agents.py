"""The OpenAI Agents SDK's realtime agent (``openai-agents``: ``RealtimeAgent`` /
``RealtimeRunner``) against the gateway, unchanged except for the URL: a spoken
question, the agent's own ``@function_tool`` called through the SDK's tool machinery, and
the spoken answer using its result. Installed for the tests by ``scripts/install --test``
(without its websockets<17 pin)."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import test_realtime_tools as tools
from agents import function_tool
from agents.realtime import RealtimeAgent, RealtimeRunner
from test_realtime import api_key, speech

from gateway.audio import pcm

CHUNK = 24000 * 40 // 1000 * 2  # 40 ms of 24 kHz s16le
FORECAST = tools.FORECAST
llm_server, upstream = tools.llm_server, tools.upstream  # the tool-calling model server


async def test_agents_sdk_realtime_agent_calls_its_tool(gateway_factory, upstream) -> None:
    gw = tools.tool_gateway(gateway_factory, upstream)
    calls: list[str] = []

    @function_tool
    def get_weather(city: str) -> str:
        """The weather forecast for a city."""
        calls.append(city)
        return FORECAST

    agent = RealtimeAgent(name="Assistant", instructions="Be brief.",
                                   tools=[get_weather])
    runner = RealtimeRunner(agent, config={"model_settings": {
        "modalities": ["audio"],
        "turn_detection": {"type": "server_vad", "silence_duration_ms": 500}}})
    url = f"ws://127.0.0.1:{gw.cfg.server.port}/v1/realtime?model=gpt-realtime"
    session = await runner.run(model_config={"url": url, "api_key": await api_key(gw)})
    seen: list[Any] = []
    audio = bytearray()
    async with session:
        async def listen() -> None:
            async for event in session:
                seen.append(event)
                if event.type == "audio":
                    audio.extend(event.audio.data)

        reader = asyncio.create_task(listen())
        voice = speech("what_is_the_gateway.wav")
        start = time.monotonic()
        for i, off in enumerate(range(0, len(voice), CHUNK)):
            await asyncio.sleep(max(0.0, start + i * 0.04 - time.monotonic()))
            await session.send_audio(voice[off:off + CHUNK])
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline and not any(
                e.type == "audio_end" for e in seen[next((n for n, e in enumerate(seen)
                                                          if e.type == "tool_end"), len(seen)):]):
            await asyncio.sleep(0.1)
        reader.cancel()
    kinds = [e.type for e in seen]
    assert calls and kinds.index("tool_start") < kinds.index("tool_end"), kinds
    assert "error" not in kinds, [e for e in seen if e.type == "error"]
    assert calls[0].strip()  # the city the model put in its JSON arguments
    # The agent's own record of the conversation: its answer, spoken, from the tool's result.
    history = [e for e in seen if e.type == "history_updated"][-1].history
    answers = [str(part.transcript) for item in history if item.type == "message"
               and item.role == "assistant" for part in item.content
               if getattr(part, "transcript", None)]
    assert any(FORECAST in a for a in answers), answers
    assert pcm.rms_dbfs(bytes(audio)) > -35

