"""Prometheus ``/metrics`` (prometheus_client), one registry per app.

Read at scrape time from the objects that keep them (the session registry, the
failover chains, the worker pools), so nothing on the audio path updates a metric;
turns and their stage latencies come from the pipeline's turn observer.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from gateway.pipeline.telemetry import TurnTimes

# Seconds from the VAD's end-of-speech decision: a fast turn's first audio is ~0.3-1 s.
LATENCY_BUCKETS = (0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0)
TRANSPORTS = ("ws", "twilio", "realtime", "webrtc")


class Metrics:
    """``app.state.metrics``: the app's registry, and the pipeline's turn observer."""

    def __init__(self, state: Any) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.turns = Counter("gateway_turns", "Turns answered, by outcome",
                             ["outcome"], registry=self.registry)
        self.latency = Histogram(
            "gateway_turn_latency_seconds",
            "From the VAD end-of-speech decision to each stage: final transcript "
            "(stt_final), first LLM token, first reply audio", ["stage"],
            buckets=LATENCY_BUCKETS, registry=self.registry)
        self.late_chunks = Counter(
            "gateway_late_audio_chunks", "Reply audio sent after the listener's buffer ran "
            "dry (an audible gap)", registry=self.registry)
        self.registry.register(_StateCollector(state))

    def turn(self, times: TurnTimes) -> None:
        self.turns.labels("interrupted" if times.interrupted else "completed").inc()
        for stage, seconds in times.since_stop().items():
            self.latency.labels(stage).observe(seconds)
        if times.underruns:
            self.late_chunks.inc(times.underruns)


class _StateCollector(Collector):
    """Sessions, admission, drain, failover and pools, read when scraped."""

    def __init__(self, state: Any) -> None:
        self.state = state

    def collect(self) -> Iterator[Metric]:
        sessions = getattr(self.state, "sessions", None)
        runtime = getattr(self.state, "runtime", None)
        cluster = getattr(self.state, "cluster", None)
        if sessions is not None:
            yield from _sessions(sessions)
        if cluster is not None:
            yield from _cluster(cluster)
        if runtime is not None:
            yield from _runtime(runtime)


def _sessions(sessions: Any) -> Iterator[Metric]:
    live = GaugeMetricFamily("gateway_sessions_live", "Live sessions, by transport",
                             labels=["transport"])
    counts = sessions.by_transport()
    for transport in sorted({*TRANSPORTS, *counts}):
        live.add_metric([transport], counts.get(transport, 0))
    yield live
    yield GaugeMetricFamily("gateway_sessions_admitted", "Sessions admitted and not yet "
                            "released (set-up included)", value=sessions.active)
    yield GaugeMetricFamily("gateway_sessions_limit", "server.max_sessions",
                            value=sessions.limit)
    yield CounterMetricFamily("gateway_sessions", "Sessions admitted", value=sessions.total)
    yield CounterMetricFamily("gateway_admissions_refused", "Sessions refused: node full "
                              "or draining", value=sessions.refused)
    yield GaugeMetricFamily("gateway_draining", "1 while the node drains (SIGTERM)",
                            value=1 if sessions.draining else 0)


def _cluster(cluster: Any) -> Iterator[Metric]:
    """The service as this node last read it from the directory (per heartbeat)."""
    peers = cluster.peers()
    live = GaugeMetricFamily("gateway_cluster_sessions_live", "Live sessions on each live "
                             "node of the cluster", labels=["node"])
    for node, state in sorted(peers.items()):
        live.add_metric([node], state.get("live", 0))
    yield live
    yield GaugeMetricFamily("gateway_cluster_nodes", "Live nodes (heartbeat within "
                            "cluster.node_ttl_s)", value=len(peers))


def _runtime(runtime: Any) -> Iterator[Metric]:
    failovers = CounterMetricFamily("gateway_failovers", "Turns handed to a fallback "
                                    "provider", labels=["stage"])
    exhausted = CounterMetricFamily("gateway_provider_chain_exhausted", "Turns where every "
                                    "provider of a stage failed", labels=["stage"])
    for stage, detail in runtime.provider_details().items():
        failovers.add_metric([stage], detail["failovers"])
        exhausted.add_metric([stage], detail["all_failed"])
    refused = CounterMetricFamily("gateway_pool_refused", "Inference jobs refused: no "
                                  "worker in time", labels=["stage"])
    for name, pool in runtime.pools.items():
        refused.add_metric([name], pool.refused)
    yield from (failovers, exhausted, refused)
