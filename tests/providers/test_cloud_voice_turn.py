"""Whole voice turns over the gateway's WebSocket with the cloud providers.

Real speech goes in; OpenAI transcription (streamed deltas as interim transcripts), the
hybrid backend's answer and ElevenLabs speech (with alignment -> word_timing and viseme
events) come out. Every provider is the real client against a local wire-format server.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from elevenlabs_server import LocalElevenLabsServer
from fake_speech import speech
from hybrid_server import LocalHybridServer
from openai_server import LocalOpenAIServer
from voice_client import VoiceClient, silence, wav

from gateway.audio import pcm
from gateway.providers.elevenlabs_tts import ElevenLabsTTS
from gateway.providers.hybrid_llm import HybridLLM
from gateway.providers.openai_stt import OpenAISTT
from gateway.providers.openai_tts import OpenAITTS

REPLY = "The gateway is a voice server for browsers and kiosks. It also runs offline."


def cloud_providers(openai: LocalOpenAIServer, eleven: LocalElevenLabsServer,
                    hybrid: LocalHybridServer) -> dict[str, Any]:
    return {
        "stt": OpenAISTT(base_url=openai.base_url, model="gpt-4o-mini-transcribe",
                         api_key=openai.api_key, timeout_s=5.0),
        "llm": HybridLLM(url=hybrid.url, api_key=hybrid.token, timeout_s=5.0),
        "tts": ElevenLabsTTS(voice_id="voice-A", model_id="eleven_flash_v2_5",
                             api_key=eleven.api_key, base_url=eleven.base_url,
                             ws_url=eleven.ws_url, timeout_s=5.0),
    }


async def test_spoken_turn_through_the_cloud_providers(
    gateway_factory, openai_server: LocalOpenAIServer,
    elevenlabs_server: LocalElevenLabsServer, hybrid_server: LocalHybridServer,
) -> None:
    openai_server.audio.delta_delay_s = 0.03
    hybrid_server.mode = "sse_data"
    hybrid_server.reply = REPLY
    gw = gateway_factory(providers=cloud_providers(openai_server, elevenlabs_server,
                                                   hybrid_server))
    client = await VoiceClient.connect(gw.ws_url)
    started = await client.wait_for("session_started")
    await client.stream(wav("what_is_the_gateway.wav") + silence(600), speed=3.0)
    end = await client.wait_for("stream_end", timeout=30)
    await client.close()
    rid = end["response_id"]
    assert not client.events("error")

    # Transcription: streamed deltas shown as interim text, then the final transcript.
    transcripts = client.events("transcription")
    final = [e for e in transcripts if e["final"]]
    assert [e["text"] for e in final] == ["What is the gateway?"]
    interim = [e["text"] for e in transcripts if not e["final"]]
    assert {"What", "What is", "What is the"} <= set(interim)
    upload = openai_server.audio.uploads[-1]
    assert upload["rate"] == 16000 and upload["frames"] > 16000  # the whole utterance

    # The hybrid backend's answer, asked with the conversation as sessionId.
    reply = client.events("agent_response")[0]
    assert reply["text"] == REPLY
    asked = hybrid_server.last["body"]
    assert asked["message"] == "What is the gateway?"
    assert asked["sessionId"] == started["conversation_id"]

    # ElevenLabs audio at the session's rate, sentence by sentence, nothing resampled.
    assert client.events("tts_start")[0]["sample_rate"] == 24000
    audio = client.audio_between("tts_start", "tts_complete", rid)
    # (a first sentence over 50 characters is spoken from its first phrase on)
    sentences = ["The gateway is a voice server", "for browsers and kiosks.",
                 "It also runs offline."]
    expected = b"".join(speech(s + " ", 24000)[0] for s in sentences)
    assert audio == expected
    assert [r.query["output_format"] for r in elevenlabs_server.requests] == ["pcm_24000"] * 3

    # Lip-sync from the character alignment, on the reply's audio clock.
    words = [w for e in client.events("word_timing") for w in e["words"]]
    assert [w["word"] for w in words] == REPLY.replace(".", "").split()
    second = len(sentences[0]) + len(sentences[1]) + 2  # where "It also" starts (chars)
    assert words[0]["start_ms"] == 0 and words[10]["start_ms"] == second * 60
    cues = [c for e in client.events("viseme") for c in e["visemes"]]
    assert {c["viseme"] for c in cues} - {"sil"} and cues[-1]["offset_ms"] <= len(audio) / 48
    types = client.types()
    assert types.index("tts_start") < types.index("word_timing") < types.index("stream_end")


async def test_phone_rate_session_gets_mulaw_without_resampling(
    gateway_factory, openai_server: LocalOpenAIServer,
    elevenlabs_server: LocalElevenLabsServer, hybrid_server: LocalHybridServer,
) -> None:
    hybrid_server.reply = "Thanks for calling."
    gw = gateway_factory(providers=cloud_providers(openai_server, elevenlabs_server,
                                                   hybrid_server))
    client = await VoiceClient.connect(gw.ws_url)
    await client.send_json({"type": "start", "sample_rate": 8000, "encoding": "mulaw"})
    started = await client.wait_for("session_started")
    assert started["output"] == {"encoding": "mulaw", "sample_rate": 8000}
    await client.send_json({"type": "text", "text": "Hello?"})
    end = await client.wait_for("stream_end", timeout=20)
    await client.close()
    assert elevenlabs_server.last.query["output_format"] == "ulaw_8000"
    audio = client.audio_between("tts_start", "tts_complete", end["response_id"])
    sent = pcm.mulaw_encode(speech("Thanks for calling. ", 8000)[0])  # what ElevenLabs sent
    # Byte for byte what ElevenLabs sent (μ-law's two zero codes aside).
    assert len(audio) == len(sent)
    assert pcm.mulaw_decode(audio) == pcm.mulaw_decode(sent)


async def test_openai_speech_turn(gateway_factory, openai_server: LocalOpenAIServer) -> None:
    tts = OpenAITTS(base_url=openai_server.base_url, model="gpt-4o-mini-tts", voice="sage",
                    api_key=openai_server.api_key)
    gw = gateway_factory(providers={"tts": tts})  # the extractive LLM answers
    client = await VoiceClient.connect(gw.ws_url)
    await client.wait_for("session_started")
    await client.send_json({"type": "text", "text": "What is the gateway?"})
    end = await client.wait_for("stream_end", timeout=20)
    await client.close()
    reply = client.events("agent_response")[0]["text"]
    audio = client.audio_between("tts_start", "tts_complete", end["response_id"])
    samples = np.frombuffer(audio, dtype="<i2")
    # one sentence spoken as two phrases (the space between them is not), 60 ms/char
    assert pcm.duration_ms(len(audio), 24000) == (len(reply) - 1) * 60
    assert np.abs(samples).max() > 5000
    assert openai_server.last.body["voice"] == "sage"
    assert not client.events("word_timing")  # OpenAI gives no timings: amplitude fallback
