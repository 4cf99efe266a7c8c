"""The client-safe error table, and the leak check every test runs (tests/leakcheck.py)."""

from __future__ import annotations

import pytest
from leakcheck import Collector, error_texts, leaks

from gateway.protocol import errors, v1


def test_every_fixed_message_is_clean_and_human() -> None:
    fixed = [*errors.PROVIDER_MESSAGES.values(), errors.PROVIDER_MESSAGE, errors.STT_BEHIND,
             errors.INTERNAL_MESSAGE, errors.SESSION_ENDS]
    for message in fixed:
        assert leaks(message) == [] and message[0].islower() and ":" not in message
    assert errors.provider_message("llm") == \
        "the language model is unavailable, please try again"
    assert errors.provider_message("no-such-stage") == errors.PROVIDER_MESSAGE
    assert v1.provider_error("tts", retryable=False) == {
        "type": "error", "code": "PROVIDER_ERROR", "retryable": False,
        "message": "speech synthesis is unavailable, please try again"}


@pytest.mark.parametrize(("text", "kind"), [
    ('Traceback (most recent call last):\n  File "x", line 3, in f', "traceback"),
    ("psycopg.OperationalError: connection refused", "exception"),
    ("[Errno 111] Connection refused", "exception"),
    ("cannot load /srv/internal-llm/app/worker.py", "path"),
    ("tts: cannot reach http://127.0.0.1:9/v1/audio/speech", "url"),
    ("db-primary.internal.corp:5432 user=svc_llm", "host"),
    ("could not connect to 10.0.3.17", "host"),
    ("sample_rate must be one of [8000, 16000, 24000, 48000]", None),
    ("unknown message type: 'hello'", None),
])
def test_the_check_finds_internals(text: str, kind: str | None) -> None:
    found = leaks(text)
    assert (kind in found) if kind else found == [], (text, found)


def test_error_messages_are_found_in_every_shape() -> None:
    v1_event = {"type": "error", "code": "X", "message": "a"}
    http = {"error": {"code": "X", "message": "b"}}
    realtime = {"type": "error", "event_id": "e", "error": {"message": "c", "type": "t"}}
    failed = {"type": "response.done", "response": {"status_details": {"error": {
        "message": "d"}}}}
    tool = {"type": "tool_end", "result": {"error": "for the model"}}
    assert error_texts(v1_event) == ["a"] and error_texts(http) == ["b"]
    assert error_texts(realtime) == ["c"] and error_texts(failed) == ["d"]
    assert error_texts(tool) == []
    c = Collector()
    c.text("ws", '{"type":"error","message":"File \\"/srv/app.py\\""}')
    c.text("ws", '{"type":"token","text":"an error in http://x"}')  # not an error
    assert [kinds for _, _, kinds in c.leaked()] == [["traceback", "path"]]


def test_a_provider_errors_text_is_a_leak_wherever_it_appears() -> None:
    from gateway.providers.base import ProviderError

    c = Collector()
    c.raised.add(str(ProviderError("all llm providers failed (openai: Error code: 500)")))
    c.text("sse", '{"error":{"code":"PROVIDER_ERROR","message":"llm: all llm providers '
           'failed (openai: Error code: 500)"}}')
    c.text("sse", '{"error":{"code":"PROVIDER_ERROR","message":"the language model is '
           'unavailable, please try again"}}')
    assert [kinds for _, _, kinds in c.leaked()] == [["provider error text"]]
