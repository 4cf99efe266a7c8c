"""/metrics (Prometheus) after real turns, and OpenTelemetry spans per turn (issue 12)."""

from __future__ import annotations

import re

import httpx
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from voice_client import VoiceClient, silence, wav

from gateway.config import TelemetryConfig
from gateway.pipeline.telemetry import TurnTimes
from gateway.tracing import Tracing


def sample(text: str, name: str, **labels: str) -> float:
    want = ",".join(f'{k}="{v}"' for k, v in labels.items())
    pattern = rf"^{re.escape(name)}{re.escape('{' + want + '}') if want else ''} (\S+)$"
    found = re.search(pattern, text, re.M)
    assert found, f"{name} {labels} not in:\n{text}"
    return float(found[1])


async def test_metrics_count_sessions_turns_and_stage_latency(gateway_factory) -> None:
    # One turn for "Hello? What is the weather like today?" (see test_barge_in_words).
    gw = gateway_factory(server={"max_sessions": 1}, turn={"pause_ms": 400})
    client = await VoiceClient.connect(gw.ws_url)
    await client.wait_for("session_started")
    async with httpx.AsyncClient(base_url=gw.base) as http:
        live = (await http.get("/metrics")).text
        assert sample(live, "gateway_sessions_live", transport="ws") == 1
        assert sample(live, "gateway_sessions_live", transport="twilio") == 0
        # The node is full: readiness says so, and one more session is refused.
        ready = await http.get("/api/health/ready")
        assert ready.status_code == 503 and ready.json()["status"] == "full"
        refused = await VoiceClient.connect(gw.ws_url)
        await refused.closed.wait()
        assert refused.ws.close_code == 1013

        await client.stream(wav("hello_weather.wav") + silence(1500))  # a spoken turn
        await client.wait_for("tts_complete", timeout=60)
        await client.close()
        text = (await http.get("/metrics")).text
        assert (await http.get("/api/health/ready")).status_code == 200
    assert text.startswith("# HELP") and "# TYPE gateway_turn_latency_seconds histogram" in text
    assert sample(text, "gateway_turns_total", outcome="completed") == 1
    assert sample(text, "gateway_admissions_refused_total") == 1
    assert sample(text, "gateway_sessions_total") == 1
    assert sample(text, "gateway_draining") == 0
    assert sample(text, "gateway_cluster_nodes") == 1  # one node: itself
    assert sample(text, "gateway_failovers_total", stage="llm") == 0
    sample(text, "gateway_late_audio_chunks_total")  # exported (0 unless the loop stalled)
    for stage in ("stt_final", "first_token", "first_audio"):
        assert sample(text, "gateway_turn_latency_seconds_count", stage=stage) == 1
    first_audio = sample(text, "gateway_turn_latency_seconds_sum", stage="first_audio")
    assert 0 < first_audio < 30


def test_a_turn_is_one_span_with_a_child_per_stage() -> None:
    exporter = InMemorySpanExporter()
    tracing = Tracing(TelemetryConfig(traces=True, service_name="gw-test"), exporter=exporter)
    t0 = 1_000_000.0  # monotonic ms
    tracing.turn(TurnTimes(3, "resp_x", t0, t0 + 200, t0 + 230, t0 + 600, t0 + 2600,
                           interrupted=False, underruns=0))
    tracing.shutdown()
    spans = {s.name: s for s in exporter.get_finished_spans()}
    assert set(spans) == {"turn", "stt", "llm", "tts", "playout"}
    turn = spans["turn"]
    assert turn.attributes is not None and turn.attributes["gateway.turn_id"] == 3
    assert turn.resource.attributes["service.name"] == "gw-test"
    for name, ms in (("stt", 200), ("llm", 30), ("tts", 370), ("playout", 2000)):
        span = spans[name]
        assert span.parent is not None and span.parent.span_id == turn.context.span_id
        assert span.end_time is not None and span.start_time is not None
        assert abs((span.end_time - span.start_time) / 1e6 - ms) < 0.01, name
    assert turn.end_time - turn.start_time == 2600 * 1_000_000  # type: ignore[operator]


def test_stage_latencies_from_the_vad_decision() -> None:
    t = TurnTimes(1, "r", 100.0, 350.0, 400.0, None, 900.0, interrupted=True, underruns=2)
    assert t.since_stop() == {"stt_final": 0.25, "first_token": 0.3}
    text_turn = TurnTimes(1, "r", None, 10.0, 20.0, 30.0, 40.0, False, 0)
    assert text_turn.since_stop() == {}
