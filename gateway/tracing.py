"""Optional OpenTelemetry traces (``[telemetry] traces = true``; off by default).

One span per turn, from the VAD's end-of-speech decision (or the first stage a text
turn has) to the end of the reply, with a child span per stage: ``stt`` (decision →
final transcript), ``llm`` (→ first token), ``tts`` (→ first audio), ``playout`` (→ the
reply heard or cut). Spans are built when the turn ends, from the pipeline's own
timestamps, so tracing adds nothing to the audio path. The SDK (opentelemetry-sdk, and
opentelemetry-exporter-otlp-proto-http for OTLP) is imported only when traces are on:
``pip install "gateway[otel]"``.
"""

from __future__ import annotations

import time
from typing import Any

from gateway.config import TelemetryConfig
from gateway.pipeline.telemetry import TurnTimes

STAGES = (("stt", "stopped_ms", "final_ms"), ("llm", "final_ms", "first_token_ms"),
          ("tts", "first_token_ms", "first_audio_ms"), ("playout", "first_audio_ms", "end_ms"))


class Tracing:
    def __init__(self, cfg: TelemetryConfig, exporter: Any = None) -> None:
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor

        self.provider = TracerProvider(
            resource=Resource.create({"service.name": cfg.service_name}))
        if exporter is None:
            self.provider.add_span_processor(BatchSpanProcessor(_exporter(cfg.exporter)))
        else:  # given (tests): exported as each span ends
            self.provider.add_span_processor(SimpleSpanProcessor(exporter))
        self.tracer = self.provider.get_tracer("gateway")
        # Pipeline times are monotonic; spans want the wall clock.
        self.offset_ns = time.time_ns() - time.monotonic_ns()

    def _ns(self, ms: float) -> int:
        return int(ms * 1_000_000) + self.offset_ns

    def turn(self, t: TurnTimes) -> None:
        from opentelemetry import trace

        marks = {"stopped_ms": t.stopped_ms, "final_ms": t.final_ms,
                 "first_token_ms": t.first_token_ms, "first_audio_ms": t.first_audio_ms,
                 "end_ms": t.end_ms}
        start = next((v for v in marks.values() if v is not None), t.end_ms)
        span = self.tracer.start_span("turn", start_time=self._ns(start), attributes={
            "gateway.turn_id": t.turn_id, "gateway.response_id": t.response_id,
            "gateway.interrupted": t.interrupted, "gateway.late_audio_chunks": t.underruns})
        context = trace.set_span_in_context(span)
        for name, begin, end in STAGES:
            a, b = marks[begin], marks[end]
            if a is not None and b is not None and b >= a:
                child = self.tracer.start_span(name, context=context, start_time=self._ns(a))
                child.end(end_time=self._ns(b))
        span.end(end_time=self._ns(t.end_ms))

    def shutdown(self) -> None:
        self.provider.shutdown()  # flushes what the batch processor holds


def _exporter(target: str) -> Any:
    if target == "console":
        from opentelemetry.sdk.trace.export import ConsoleSpanExporter

        return ConsoleSpanExporter()
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

    return OTLPSpanExporter(endpoint=target or None)
