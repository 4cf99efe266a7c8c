"""Golden wire output: one whole turn of pipeline events, rendered by each wire format.

The events are what a session emits for "What is the gateway?" answered with one spoken
sentence and a hand-off; each list below is the exact text that goes on that wire.
"""

from __future__ import annotations

from gateway.pipeline import events as ev
from gateway.protocol import twilio, v1, webrtc
from gateway.providers.visemes import VisemeCue, WordTiming

RID = "resp_0123456789abcdef"

TURN: list[ev.Event] = [
    ev.SpeechStarted(1),
    ev.Transcription(1, "what is", final=False),
    ev.SpeechStopped(1),
    ev.Transcription(1, "What is the gateway?", final=True),
    ev.StreamStart(1, RID),
    ev.Token(1, RID, "The gateway"),
    ev.ToolStarted(1, RID, "call_1", "end_call", {"reason": "done"}),
    ev.ToolEnded(1, RID, "call_1", "end_call", "the call ends after this reply", 0.4, True),
    ev.Token(1, RID, " is a voice server."),
    ev.AgentResponse(1, RID, "The gateway is a voice server.",
                     (ev.Source("About", None, "doc_1", 0.81),)),
    ev.TtsStart(RID, "pcm_s16le", 24000),
    ev.Visemes(RID, (VisemeCue(0, "sil"), VisemeCue(80, "DD"))),
    ev.WordTimings(RID, (WordTiming("The", 0, 120),)),
    ev.Metrics(1, RID, {"stt_ms": 120.5, "first_token_ms": 200.0, "first_audio_ms": 350.1}),
    ev.SegmentPlayed(RID, 0),
    ev.TtsComplete(RID, 1840, False, 1840),
    ev.StreamEnd(RID),
    ev.Handoff(ev.END_CALL, "done", response_id=RID),
]

V1 = [
    '{"type":"speech_started","turn_id":1}',
    '{"type":"transcription","text":"what is","final":false,"turn_id":1}',
    '{"type":"speech_stopped","turn_id":1}',
    '{"type":"transcription","text":"What is the gateway?","final":true,"turn_id":1}',
    '{"type":"stream_start","turn_id":1,"response_id":"resp_0123456789abcdef"}',
    '{"type":"token","text":"The gateway","response_id":"resp_0123456789abcdef"}',
    '{"type":"tool_start","response_id":"resp_0123456789abcdef","tool_call_id":"call_1",'
    '"name":"end_call","arguments":{"reason":"done"}}',
    '{"type":"tool_end","response_id":"resp_0123456789abcdef","tool_call_id":"call_1",'
    '"name":"end_call","result_summary":"the call ends after this reply","duration_ms":0.4,'
    '"ok":true}',
    '{"type":"token","text":" is a voice server.","response_id":"resp_0123456789abcdef"}',
    '{"type":"agent_response","text":"The gateway is a voice server.",'
    '"response_id":"resp_0123456789abcdef","sources":[{"title":"About","url":null,"document_id":"doc_1","relevance":0.81}]}',
    '{"type":"tts_start","response_id":"resp_0123456789abcdef","encoding":"pcm_s16le",'
    '"sample_rate":24000}',
    '{"type":"viseme","response_id":"resp_0123456789abcdef",'
    '"visemes":[{"offset_ms":0,"viseme":"sil"},{"offset_ms":80,"viseme":"DD"}]}',
    '{"type":"word_timing","response_id":"resp_0123456789abcdef",'
    '"words":[{"word":"The","start_ms":0,"end_ms":120}]}',
    '{"type":"metrics","turn_id":1,"response_id":"resp_0123456789abcdef","stt_ms":120.5,'
    '"first_token_ms":200.0,"first_audio_ms":350.1}',
    '{"type":"tts_complete","response_id":"resp_0123456789abcdef","duration_ms":1840,'
    '"interrupted":false,"played_ms":1840}',
    '{"type":"stream_end","response_id":"resp_0123456789abcdef"}',
]


def test_v1_renders_a_whole_turn() -> None:
    wire = [v1.encode(m) for e in TURN if (m := v1.render(e)) is not None]
    assert wire == V1


def test_webrtc_channel_is_v1_with_the_audio_on_the_opus_track() -> None:
    wire = [v1.encode(m) for e in TURN if (m := webrtc.render(e)) is not None]
    tts_start = ('{"type":"tts_start","response_id":"resp_0123456789abcdef",'
                 '"encoding":"opus","sample_rate":48000}')
    assert wire == [tts_start if line.startswith('{"type":"tts_start"') else line
                    for line in V1]


def test_twilio_renders_marks_and_clear_only() -> None:
    call = twilio.CallState()
    call.receive('{"event":"start","streamSid":"MZ1","start":{"callSid":"CA1",'
                 '"mediaFormat":{"encoding":"audio/x-mulaw","sampleRate":8000}}}')
    wire = [m for e in TURN if (m := call.render(e)) is not None]
    assert wire == [
        '{"event": "mark", "streamSid": "MZ1", "mark": {"name": "resp_0123456789abcdef:0"}}',
        '{"event": "mark", "streamSid": "MZ1", "mark": {"name": "resp_0123456789abcdef:end"}}',
        '{"event": "mark", "streamSid": "MZ1", "mark": {"name": "end_call"}}',
    ]
    cut = [call.render(e) for e in (ev.Interrupted(RID), ev.TtsComplete(RID, 900, True, 400),
                                     ev.Handoff(ev.TRANSFER, "billing", "+15550100", RID))]
    assert cut == ['{"event": "clear", "streamSid": "MZ1"}', None,
                   '{"event": "mark", "streamSid": "MZ1", "mark": {"name": "transfer:+15550100"}}']


def test_failures_are_rendered_with_fixed_texts() -> None:
    assert [v1.render(e) for e in (ev.ProviderFailed("llm"), ev.SttBehind(3),
                                   ev.SessionCrashed(), ev.TurnNotStored(4))] == [
        {"type": "error", "code": "PROVIDER_ERROR", "retryable": True,
         "message": "the language model is unavailable, please try again"},
        {"type": "error", "code": "PROVIDER_ERROR", "retryable": True,
         "message": "speech recognition is behind; a turn was dropped, please repeat it"},
        {"type": "error", "code": "INTERNAL_ERROR", "retryable": False,
         "message": "internal error; the session ends"},
        {"type": "error", "code": "INTERNAL_ERROR", "retryable": False, "turn_id": 4,
         "message": "this turn could not be saved to the conversation history"},
    ]


def test_every_event_type_has_a_v1_rendering() -> None:
    from typing import get_args
    assert set(get_args(ev.Event)) == set(v1._RENDER)
