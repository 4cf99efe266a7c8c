"""The Chat SDK Platform's discovery endpoints and /api/transcribe, over real HTTP."""

from __future__ import annotations

import asyncio
import json

import pytest
import websockets
from chat_helpers import add_assistant, assert_error, client, convert, make_key, wav_bytes

from gateway.providers import registry

WAV = "what_is_the_gateway.wav"


async def test_models(gateway_factory) -> None:
    gw = gateway_factory(server={"allow_anonymous": "false"})
    await add_assistant(gw, "museum", name="Museum guide")
    async with client(gw, await make_key(gw)) as admin:
        models = (await admin.get("/api/models")).json()["models"]
    async with client(gw, await make_key(gw, "museum")) as scoped:
        only = (await scoped.get("/api/models")).json()["models"]
    for m in models:
        assert {"id", "name", "display_name", "provider", "max_tokens", "context_length"} <= set(m)
        assert m["max_tokens"] > 0 and m["context_length"] > 0
    assistants = [m["name"] for m in models if m["type"] == "assistant"]
    assert assistants == ["default", "museum"]
    assert models[-1]["type"] == "llm" and models[-1]["provider"] == "extractive"
    assert [m["name"] for m in only if m["type"] == "assistant"] == ["museum"]
    display = {m["name"]: m["display_name"] for m in models}
    assert display["museum"] == "Museum guide"


async def test_features_follow_the_runtime(gateway_factory, models) -> None:
    gw = gateway_factory()
    null = gateway_factory(providers={"tts": registry.create("tts", "null", gw.cfg)})
    for server, voice in ((gw, True), (null, False)):
        async with client(server) as http:
            body = (await http.get("/api/available_features")).json()
        found = {f["name"]: f["enabled"] for f in body["features"]}
        assert found["voice_chat"] is voice and found["multi_agent"] is False
        assert found["semantic_search"] is True
        assert all({"id", "name", "enabled"} <= set(f) for f in body["features"])


async def test_templates(gateway) -> None:
    async with client(gateway) as http:
        listed = (await http.get("/api/templates")).json()["templates"]
        names = [t["name"] for t in listed]
        assert names == ["standard_assistant", "expert_assistant", "customer_support_assistant"]
        assert all(set(t) == {"id", "name", "display_name", "description"} for t in listed)
        detail = (await http.get("/api/template/standard_assistant")).json()
        assert detail["name"] == "standard_assistant"
        assert "additional_instructions" in detail["variables"]
        assert "{additional_instructions}" in detail["system_prompt"]
        assert detail["example_usage"]
        assert_error(await http.get("/api/template/nope"), 404, "NOT_FOUND")


async def test_speech_providers(gateway) -> None:
    async with client(gateway) as http:
        body = (await http.get("/api/speech/providers")).json()
    assert list(body["providers"]) == ["whisper"]
    assert "Whisper base" in body["providers"]["whisper"]  # the default final model


async def test_websocket_config_points_at_a_working_socket(gateway) -> None:
    async with client(gateway) as http:
        body = (await http.get("/api/websocket/config")).json()
    ws = body["websocket"]
    port = gateway.cfg.server.port
    assert ws["url"] == f"ws://127.0.0.1:{port}/api/v1/voice/ws" and ws["port"] == port
    assert body["tts"]["providers"] == {"piper": "Piper (local neural TTS)"}
    assert body["tts"]["voices"] == [{"provider": "piper", "id": "joe", "name": "Joe",
                                      "gender": "male"}]
    assert list(body["stt"]["providers"]) == ["whisper"]
    # Whisper base is multilingual: English first, then the others it transcribes.
    assert body["languages"][0] == {"code": "en", "name": "English"}
    assert {"code": "de", "name": "German"} in body["languages"]
    defaults = body["defaults"]
    assert defaults["tts_provider"] == "piper" and defaults["piper_voice"] == "joe"
    assert defaults["language"] == "en"
    async with websockets.connect(ws["url"]) as sock:
        first = json.loads(await asyncio.wait_for(sock.recv(), 5))
    assert first["type"]


async def test_websocket_config_uses_the_request_host(gateway) -> None:
    async with client(gateway, Host="voice.example.com:8443") as http:
        body = (await http.get("/api/websocket/config")).json()
    assert body["websocket"]["url"] == "ws://voice.example.com:8443/api/v1/voice/ws"
    assert body["websocket"]["port"] == 8443


@pytest.mark.slow
@pytest.mark.parametrize("fmt", ["WAV", "FLAC", "OGG", "WAV-stereo-44k"])
async def test_transcribe_formats(gateway, fmt: str) -> None:
    if fmt == "WAV":
        data, mime = wav_bytes(WAV), "audio/wav"
    elif fmt == "WAV-stereo-44k":
        data, mime = convert(WAV, "WAV", rate=44100, stereo=True), "audio/wav"
    else:
        data, mime = convert(WAV, fmt), f"audio/{fmt.lower()}"
    async with client(gateway) as http:
        resp = await http.post("/api/transcribe", files={"audio": (f"q.{fmt}", data, mime)},
                               data={"provider": "openai", "language_code": "en"})
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert {"text", "detected_language", "confidence"} <= set(body)
    words = body["text"].lower()
    assert "what" in words and "gateway" in words
    assert body["detected_language"] == "en"
    assert body["duration_s"] == pytest.approx(2.3, abs=1.0)
    # exp(mean token log-probability) of Whisper's decode: clear speech is well above 0.5.
    assert 0.5 < body["confidence"] <= 1.0


@pytest.mark.slow
async def test_transcribe_errors(gateway) -> None:
    async with client(gateway) as http:
        assert_error(await http.post("/api/transcribe", data={"provider": "openai"}), 400,
                     "INVALID_REQUEST")
        wav = {"audio": ("q.wav", wav_bytes(WAV), "audio/wav")}
        assert_error(await http.post("/api/transcribe", files=wav,
                                     data={"language_code": "en; rm -rf"}),
                     400, "INVALID_REQUEST")
        for junk in (b"", b"OggS garbage", b"\x00" * 1000):
            resp = await http.post("/api/transcribe", files={"audio": ("x.ogg", junk)})
            assert_error(resp, 400, "INVALID_REQUEST")

        async def chunked():  # no Content-Length: the cap counts the bytes as they come
            yield (b'--xyz\r\nContent-Disposition: form-data; name="audio"; '
                   b'filename="a.wav"\r\nContent-Type: audio/wav\r\n\r\n')
            for _ in range(25):
                yield b"\0" * (1024 * 1024)

        resp = await http.post(
            "/api/transcribe", content=chunked(),
            headers={"content-type": "multipart/form-data; boundary=xyz"})
        assert_error(resp, 413, "INVALID_REQUEST")
        big = {"audio": ("big.wav", b"\0" * (21 * 1024 * 1024), "audio/wav")}
        assert_error(await http.post("/api/transcribe", files=big), 413, "INVALID_REQUEST")


async def test_discovery_needs_auth_when_anonymous_is_off(gateway_factory) -> None:
    gw = gateway_factory(server={"allow_anonymous": "false"})
    async with client(gw) as http:
        for path in ("/api/models", "/api/available_features", "/api/templates",
                     "/api/speech/providers", "/api/websocket/config"):
            assert_error(await http.get(path), 401, "UNAUTHORIZED")
    async with client(gw, await make_key(gw)) as http:
        assert (await http.get("/api/templates")).status_code == 200


async def test_openapi_declares_the_credentials(gateway) -> None:
    async with client(gateway) as http:
        doc = (await http.get("/openapi.json")).json()
    schemes = doc["components"]["securitySchemes"]
    assert schemes["bearerAuth"] == {**schemes["bearerAuth"], "type": "http", "scheme": "bearer"}
    assert schemes["apiKeyHeader"]["in"] == "header"
    assert schemes["apiKeyHeader"]["name"] == "x-api-key"
    assert {"bearerAuth": []} in doc["security"] and {} in doc["security"]


async def test_transcribe_uses_the_callers_assistants_stt(gateway_factory) -> None:
    gw = gateway_factory()
    await add_assistant(gw, "kiosk", stt_provider="null")
    wav = {"audio": ("q.wav", wav_bytes(WAV), "audio/wav")}
    async with client(gw, await make_key(gw, "kiosk")) as scoped:
        resp = await scoped.post("/api/transcribe", files=wav)
    assert resp.status_code == 200, resp.text
    assert resp.json()["provider"] == "null"
    assert resp.json()["text"] == "hello"  # the null STT's fixed text
