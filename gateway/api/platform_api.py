"""The AI Chat SDK Platform's discovery endpoints: models, features, prompt templates,
speech providers and the voice WebSocket configuration.

Everything reported here is what this gateway really runs: the assistants the caller
may use, the loaded STT/TTS/LLM providers and their voices and languages.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from pydantic import BaseModel
from sqlalchemy import select

from gateway.access.auth import Principal
from gateway.config import Config
from gateway.pipeline.prompt import TEMPLATE_BY_NAME, TEMPLATES, Template
from gateway.store.models import Assistant

from .deps import authed
from .errors import ERROR_RESPONSES, ApiError

router = APIRouter(tags=["platform"])
Caller = Annotated[Principal, Depends(authed())]

MAX_LISTED_ASSISTANTS = 100
VOICE_WS_PATH = "/api/v1/voice/ws"

STT_NAMES = {"whisper": "Whisper (local, faster-whisper)", "null": "Null STT (fixed text)",
             "openai": "OpenAI transcription"}
TTS_NAMES = {"piper": "Piper (local neural TTS)", "espeak": "eSpeak NG (local)",
             "null": "Null TTS (test tone)", "openai": "OpenAI speech",
             "elevenlabs": "ElevenLabs (streaming)"}
LLM_NAMES = {"llama": "llama.cpp (local)", "extractive": "Extractive (knowledge base)",
             "openai": "OpenAI-compatible", "null": "Null LLM (fixed reply)",
             "hybrid": "Hybrid backend"}
# voice id -> (display name, gender)
VOICE_INFO = {"joe": ("Joe", "male"), "en-us": ("English (US)", "neutral")}
VOICE_INFO.update({v: (v.capitalize(), "neutral") for v in (  # OpenAI's voices
    "alloy ash ballad coral echo fable nova onyx sage shimmer verse marin cedar".split())})
LANGUAGE_NAMES = {
    "en": "English", "es": "Spanish", "fr": "French", "de": "German", "it": "Italian",
    "pt": "Portuguese", "nl": "Dutch", "pl": "Polish", "ru": "Russian", "uk": "Ukrainian",
    "tr": "Turkish", "ar": "Arabic", "hi": "Hindi", "zh": "Chinese", "ja": "Japanese",
    "ko": "Korean", "sv": "Swedish", "cs": "Czech",
}


# --- what the runtime really has -----------------------------------------------------


def tts_voice_ids(tts: Any) -> set[str] | None:
    """Voices the loaded TTS accepts (lower case); None when it takes any (null)."""
    voices = getattr(tts, "voices", None)
    if isinstance(voices, set | frozenset):
        return {str(v).lower() for v in voices}
    voice = getattr(tts, "voice", None)
    return {str(voice).lower()} if voice else None


def tts_voices(tts: Any) -> list[dict[str, str]]:
    voice = str(getattr(tts, "voice", None) or "default")
    # Cloud TTSs offer several voices (``voice_list``): all listed, the default first.
    ids = [voice, *(str(v) for v in getattr(tts, "voice_list", ()) if v != voice)]
    return [{"provider": tts.name, "id": v, "name": VOICE_INFO.get(v, (v, "neutral"))[0],
             "gender": VOICE_INFO.get(v, (v, "neutral"))[1]} for v in ids]


def stt_languages(cfg: Config, stt: Any) -> list[dict[str, str]]:
    """Multilingual Whisper models take every listed language; ``*.en`` only English."""
    codes = list(LANGUAGE_NAMES) if getattr(stt, "multilingual", False) else [cfg.stt.language]
    return [{"code": c, "name": LANGUAGE_NAMES.get(c, c)} for c in codes]


def stt_providers(cfg: Config, stt: Any) -> dict[str, str]:
    label = STT_NAMES.get(stt.name, stt.name)
    if stt.name == "whisper":
        label = f"Whisper {cfg.stt.model} (local, faster-whisper)"
    return {stt.name: label}


def llm_model_name(cfg: Config, llm: Any) -> str:
    if llm.name == "openai":
        return cfg.llm.model
    if llm.name == "llama":
        return "SmolLM2-135M-Instruct"
    return str(llm.name)


# --- models and features -------------------------------------------------------------


class ModelInfo(BaseModel):
    id: str
    name: str
    display_name: str
    provider: str
    max_tokens: int
    context_length: int
    type: str
    description: str = ""


class ModelsResponse(BaseModel):
    models: list[ModelInfo]


@router.get("/api/models", response_model=ModelsResponse, responses=ERROR_RESPONSES,
            description="The assistants this caller may use (pass `name` as `model` or "
            "`chatModelId` to /api/chat), then the LLM the gateway runs.")
async def models(request: Request, principal: Caller) -> dict[str, Any]:
    st = request.app.state
    cfg, llm = st.cfg, st.runtime.llm
    q = select(Assistant).order_by(Assistant.id).limit(MAX_LISTED_ASSISTANTS)
    if principal.assistant_scope is not None:
        q = q.where(Assistant.id == principal.assistant_scope)
    async with st.db.session() as s:
        assistants = list(await s.scalars(q))
    limits = {"max_tokens": cfg.llm.max_tokens, "context_length": cfg.llm.context_tokens}
    out = [{"id": a.id, "name": a.id, "display_name": a.name, "provider": "gateway",
            "type": "assistant", "description": a.description, **limits} for a in assistants]
    out.append({"id": f"llm_{llm.name}", "name": llm_model_name(cfg, llm),
                "display_name": LLM_NAMES.get(llm.name, llm.name), "provider": llm.name,
                "type": "llm", "description": "the LLM behind every assistant", **limits})
    return {"models": out}


class Feature(BaseModel):
    id: str
    name: str
    enabled: bool
    description: str


class FeaturesResponse(BaseModel):
    features: list[Feature]
    tier: str


@router.get("/api/available_features", response_model=FeaturesResponse,
            responses=ERROR_RESPONSES)
async def available_features(
    request: Request, principal: Caller
) -> dict[str, Any]:
    rt = request.app.state.runtime
    stt_ok, tts_ok = rt.stt.name != "null", rt.tts.name != "null"
    rows = [
        ("voice_chat", stt_ok and tts_ok, "speech in, speech out (WebSocket, /api/chat/voice)"),
        ("semantic_search", True, "ranked search of conversations, messages and documents "
         "by the database's full-text engine (FTS5 / PostgreSQL tsvector)"),
        ("multi_agent", False, "not supported"),
        ("streaming", True, "Server-Sent Events on /api/chat"),
        ("knowledge_base", True, "answers grounded in the assistant's documents"),
        ("transcription", stt_ok, "POST /api/transcribe"),
        ("text_to_speech", tts_ok, "spoken replies"),
        ("prompt_templates", True, "GET /api/templates"),
        ("feedback", True, "POST /api/feedback"),
        ("tools", True, "function tools per assistant: knowledge-base search, date/time, "
         "end/transfer a call, HTTP webhooks (with an LLM that calls tools)"),
    ]
    return {"tier": principal.tier,
            "features": [{"id": f"feature_{i}", "name": n, "enabled": e, "description": d}
                         for i, (n, e, d) in enumerate(rows, 1)]}


# --- templates -----------------------------------------------------------------------


class TemplateSummary(BaseModel):
    id: str
    name: str
    display_name: str
    description: str


class TemplatesResponse(BaseModel):
    templates: list[TemplateSummary]


class TemplateDetail(TemplateSummary):
    system_prompt: str
    variables: list[str]
    example_usage: str


def template_detail(t: Template) -> dict[str, Any]:
    index = TEMPLATES.index(t) + 1
    example = {name: "Focus on technical explanations" if name == "additional_instructions"
               else t.defaults.get(name, "...") for name in t.variables}
    return {**t.summary(index), "system_prompt": t.system_prompt,
            "variables": list(t.variables),
            "example_usage": f"Pass variables such as {example} with the template name."}


@router.get("/api/templates", response_model=TemplatesResponse, responses=ERROR_RESPONSES)
async def templates(principal: Caller) -> dict[str, Any]:
    return {"templates": [t.summary(i) for i, t in enumerate(TEMPLATES, 1)]}


@router.get("/api/template/{template_name}", response_model=TemplateDetail,
            responses=ERROR_RESPONSES,
            description="`{name}` placeholders in `system_prompt` are the variables; "
            "`{assistant_name}` is filled in by the gateway.")
async def template(template_name: str,
                   principal: Caller) -> dict[str, Any]:
    found = TEMPLATE_BY_NAME.get(template_name)
    if found is None:
        raise ApiError(404, "NOT_FOUND", "unknown template name")
    return template_detail(found)


# --- speech and the WebSocket --------------------------------------------------------


class SpeechProviders(BaseModel):
    providers: dict[str, str]


@router.get("/api/speech/providers", response_model=SpeechProviders,
            responses=ERROR_RESPONSES, description="The speech-to-text providers loaded.")
async def speech_providers(request: Request,
                           principal: Caller) -> dict[str, Any]:
    st = request.app.state
    return {"providers": stt_providers(st.cfg, st.runtime.stt)}


class WebSocketEndpoint(BaseModel):
    url: str
    port: int
    path: str
    protocol: str
    auth: str


class VoiceOption(BaseModel):
    provider: str
    id: str
    name: str
    gender: str


class TTSInfo(BaseModel):
    providers: dict[str, str]
    voices: list[VoiceOption]


class Language(BaseModel):
    code: str
    name: str


class WebSocketConfig(BaseModel):
    websocket: WebSocketEndpoint
    tts: TTSInfo
    stt: SpeechProviders
    languages: list[Language]
    defaults: dict[str, Any]


def voice_ws_endpoint(request: Request) -> dict[str, Any]:
    """The voice WebSocket as this request reached us (host and port from the request)."""
    secure = request.url.scheme in ("https", "wss")
    try:
        port = request.url.port or (443 if secure else 80)
    except ValueError:  # a Host header with a port out of range
        port = request.app.state.cfg.server.port
    host = request.url.hostname or request.app.state.cfg.server.host
    if ":" in host:  # an IPv6 literal
        host = f"[{host}]"
    default = port == (443 if secure else 80)
    netloc = host if default else f"{host}:{port}"
    return {"url": f"{'wss' if secure else 'ws'}://{netloc}{VOICE_WS_PATH}", "port": port,
            "path": VOICE_WS_PATH, "protocol": "gateway voice protocol v1 (docs/protocol.md)",
            "auth": "?token=<token from POST /api/get-access-token>, or an API key in the "
                    "Authorization header"}


@router.get("/api/websocket/config", response_model=WebSocketConfig, responses=ERROR_RESPONSES)
async def websocket_config(request: Request,
                           principal: Caller) -> dict[str, Any]:
    st = request.app.state
    cfg, rt = st.cfg, st.runtime
    voices = tts_voices(rt.tts)
    voice = voices[0]["id"]
    return {
        "websocket": voice_ws_endpoint(request),
        "tts": {"providers": {rt.tts.name: TTS_NAMES.get(rt.tts.name, rt.tts.name)},
                "voices": voices},
        "stt": {"providers": stt_providers(cfg, rt.stt)},
        "languages": stt_languages(cfg, rt.stt),
        "defaults": {"tts_provider": rt.tts.name, f"{rt.tts.name}_voice": voice,
                     "voice": voice, "stt_provider": rt.stt.name,
                     "language": cfg.stt.language,
                     "input_sample_rate": cfg.audio.input_sample_rate,
                     "output_sample_rate": cfg.audio.output_sample_rate,
                     "encoding": cfg.audio.input_encoding},
    }
