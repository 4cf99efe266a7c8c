"""Pacer with a fake clock (plain numbers in ms)."""

from __future__ import annotations

import pytest

from gateway.pipeline.pacing import Pacer

CHUNK = 20.0


def stream(p: Pacer, n: int, start: float = 0.0, chunk: float = CHUNK) -> float:
    """Send n chunks as fast as the pacer allows; returns the clock at the end."""
    now = start
    for _ in range(n):
        now += p.delay_ms(now)
        p.sent(chunk, now)
    return now


def test_fresh_pacer() -> None:
    p = Pacer(lead_ms=200)
    assert p.delay_ms(0) == 0.0
    assert p.delay_ms(12345) == 0.0
    assert p.buffered_ms(0) == 0.0
    assert p.played_ms(0) == 0.0
    assert p.sent_ms == 0.0 and p.underruns == 0


def test_first_chunk_is_immediate_and_playback_starts_with_it() -> None:
    p = Pacer(lead_ms=200)
    now = 1000.0
    assert p.delay_ms(now) == 0.0
    p.sent(CHUNK, now)
    assert p.buffered_ms(now) == CHUNK
    assert p.played_ms(now) == 0.0
    assert p.played_ms(now + 5) == pytest.approx(5.0)
    assert p.played_ms(now + 100) == CHUNK  # cannot have heard more than was sent


def test_lead_is_respected() -> None:
    p = Pacer(lead_ms=200)
    # A burst at t=0: free until the buffer exceeds the lead.
    for k in range(11):
        assert p.delay_ms(0) == 0.0, k
        p.sent(CHUNK, 0)
    assert p.buffered_ms(0) == 220
    assert p.delay_ms(0) == pytest.approx(20.0)
    assert p.delay_ms(10) == pytest.approx(10.0)
    assert p.delay_ms(20) == 0.0
    assert p.delay_ms(50) == 0.0


def test_steady_stream_stays_within_lead_and_runs_at_real_time() -> None:
    p = Pacer(lead_ms=200)
    now = stream(p, 500)
    # 500 chunks of 20 ms = 10 s of audio sent; the server is at most lead + 1 chunk ahead.
    assert p.sent_ms == 10_000
    assert now == pytest.approx(10_000 - 200 - CHUNK)
    assert p.buffered_ms(now) <= 200 + CHUNK
    assert p.underruns == 0


def test_buffer_never_exceeds_lead_plus_one_chunk() -> None:
    p = Pacer(lead_ms=60)
    now = 0.0
    for i in range(200):
        now += p.delay_ms(now)
        assert p.buffered_ms(now) <= 60 + 1e-9
        p.sent(10.0 + (i % 3) * 10, now)  # varying chunk sizes
        assert p.buffered_ms(now) <= 60 + 30 + 1e-9


def test_zero_lead() -> None:
    p = Pacer(lead_ms=0)
    p.sent(CHUNK, 0)
    assert p.delay_ms(0) == CHUNK
    assert p.delay_ms(CHUNK) == 0.0


def test_underrun_restarts_playback() -> None:
    p = Pacer(lead_ms=200)
    p.sent(100, 0)  # plays 0..100
    assert p.played_ms(300) == 100  # everything was heard, then silence
    assert p.buffered_ms(300) == 0
    assert p.delay_ms(300) == 0.0
    p.sent(CHUNK, 300)  # playback restarts now, not at t=100
    assert p.underruns == 1
    assert p.buffered_ms(300) == CHUNK
    assert p.played_ms(300) == 100
    assert p.played_ms(310) == pytest.approx(110)
    assert p.played_ms(320) == pytest.approx(120)


def test_exactly_on_time_is_not_an_underrun() -> None:
    p = Pacer(lead_ms=0)
    p.sent(CHUNK, 0)
    p.sent(CHUNK, CHUNK)  # arrives exactly when the buffer runs out
    assert p.underruns == 0
    assert p.buffered_ms(CHUNK) == CHUNK


def test_each_gap_counts_one_underrun() -> None:
    p = Pacer(lead_ms=100)
    now = stream(p, 10)
    for gap in (500, 1000, 50):
        now += gap + 300
        p.sent(CHUNK, now)
    assert p.underruns == 3


def test_played_ms_is_what_the_listener_heard_at_a_barge_in() -> None:
    p = Pacer(lead_ms=200)
    now = stream(p, 50)  # 1000 ms sent by now = 780 ms
    assert now == pytest.approx(780)
    assert p.played_ms(now) == pytest.approx(780)  # 220 ms still buffered
    assert p.played_ms(now + 100) == pytest.approx(880)
    assert p.played_ms(now + 10_000) == pytest.approx(1000)
