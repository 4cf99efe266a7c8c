"""The one configuration object: read once from TOML + environment, then frozen.

Precedence: built-in defaults < TOML file < secrets file (``[secrets] file``) <
environment (``GATEWAY_<SECTION>__<KEY>``). Nothing else in the package reads
``os.environ``; secrets are read here too and passed on explicitly. Credentials (API keys)
come only from the environment or the secrets file, and stay out of ``repr``.
"""

from __future__ import annotations

import dataclasses
import functools
import ipaddress
import os
import tomllib
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gateway import secretfile
from gateway.errors import ConfigError

ENV_PREFIX = "GATEWAY_"


@dataclass(frozen=True, slots=True)
class ServerConfig:
    host: str = "127.0.0.1"
    port: int = 8080
    data_dir: str = "data"
    # "auto": anonymous sessions only while bound to loopback.
    allow_anonymous: str = "auto"
    idle_timeout_s: float = 300.0
    max_message_bytes: int = 1 << 20
    session_close_timeout_s: float = 5.0
    # Shutdown (SIGTERM): how long live sessions may go on (replies finish, callers hang
    # up); the rest are then cut like a barge-in (stored as heard) and closed with 1012.
    # Keep it under the orchestrator's kill timeout.
    drain_timeout_s: float = 25.0
    max_sessions: int = 1000  # per worker process
    # Worker processes sharing the port (one event loop each); 1: a single process.
    workers: int = 1
    log_format: str = "auto"  # auto | json | console
    log_level: str = "info"
    cors_origins: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class AudioConfig:
    input_sample_rate: int = 16000
    input_encoding: str = "pcm_s16le"
    output_sample_rate: int = 24000
    # Output audio chunk size and how far ahead of real time the server may send.
    output_chunk_ms: int = 20
    pacing_lead_ms: int = 200
    max_chunk_ms: int = 1000


@dataclass(frozen=True, slots=True)
class VADConfig:
    provider: str = "webrtcvad"  # webrtcvad | silero | null
    aggressiveness: int = 2
    frame_ms: int = 20
    # Speech this long starts a turn; silence this long ends it.
    start_ms: int = 60
    stop_ms: int = 400
    # Speech during a reply must last this long before it interrupts (a cough does not).
    barge_in_min_ms: int = 250
    # Audio kept from before the speech start, so STT hears the first syllable.
    preroll_ms: int = 200
    silero_threshold: float = 0.5
    # Frames quieter than this are never speech (cuts webrtcvad's smoothing tail).
    min_speech_dbfs: float = -50.0


@dataclass(frozen=True, slots=True)
class STTConfig:
    provider: str = "whisper"  # whisper | null
    fallbacks: tuple[str, ...] = ()  # tried in order when the provider fails
    # The turn's final transcript. base hears the eval's varied voices far better (39/41
    # answers right against 35/41 for tiny.en) for ~3x tiny.en's decode.
    model: str = "base"  # tiny.en | base
    # Whisper: the decodes turn-taking waits on -- the words at a pause (turn checks, the
    # speculative first sentence), interim text, speech over a reply -- run on this
    # smaller model beside the final one; "" or = model: one model for all.
    quick_model: str = "tiny.en"
    language: str = "en"
    interim_interval_ms: int = 1000
    # Decode speculatively after this much silence; if the turn then ends with no more
    # speech, that decode is the final transcript (saves stop_ms - early_final_ms). 0: off.
    # 100, not 60: gaps of 60-100 ms between words are common, and each got the final
    # model's decode too (113 of them at pauses in a run against 83), which crowded the
    # end of turn's own: first audio p95 1068-1070 ms in 3 of 5 live evals from 60 ms.
    early_final_ms: int = 100
    # Two models: the quick model's decode of a pause (the words the turn checks at
    # turn.pause_ms wait on, with their score) starts after this much silence; 0 (or not
    # under early_final_ms): with the final model's. 60 against 100: complete questions'
    # end of turn p50 405-443 -> 368-379 ms (live evals, README "evening").
    pause_words_ms: int = 60
    # Whisper beam search: on the eval's espeak/Piper callers tiny.en's WER falls from
    # 20 % (greedy) to 13 % for ~30 % more decode time (scripts/bench_stt.py). 1: greedy.
    beam_size: int = 5
    # The quick model's beam (its decodes are what turn-taking waits on). Greedy tiny.en
    # decodes the eval's questions in 110 ms against 142 (median, one core), but live it
    # misheard more last words ("Containers use the sauna.", last word p 0.20): those
    # questions waited hold_ms (eval p95 841 -> 1066 ms). 1: greedy.
    quick_beam_size: int = 5
    # Whisper: utterances up to this long are decoded in a window of max(10 s, twice the
    # audio) instead of 30 s (~4x faster for a short question, same WER). 0: off.
    fit_window_s: float = 15.0
    max_utterance_s: float = 30.0
    timeout_s: float = 15.0


@dataclass(frozen=True, slots=True)
class InterruptionsConfig:
    # Speech over a reply: "words" (a quick decode decides; backchannels and noise do not
    # interrupt, the reply keeps playing meanwhile) | "speech" (any speech over
    # vad.barge_in_min_ms interrupts). Assistants override it (turn_taking.interruptions).
    mode: str = "words"
    backchannels: tuple[str, ...] = ()  # empty: the built-in list (interruptions.py)
    min_words: int = 1  # words that are not backchannels needed to interrupt
    partial_min_ms: int = 700  # ...while the speech goes on: once it lasts this (or a "wait")
    min_confidence: float = 0.45  # less sure transcripts count as noise (whisper: 0..1)
    # ...and speech shorter than partial_min_ms, decoded whole, without a "wait" word.
    short_min_confidence: float = 0.5
    check_interval_ms: int = 500  # re-decode this often while the overlap goes on
    continuation_ms: int = 800  # speech this soon after the user's turn ended: their words
    on_overlap: str = "play"  # while deciding: play on | pause, resume if no words
    resume_ms: int = 1000  # "pause": resume after this long without a verdict of words


@dataclass(frozen=True, slots=True)
class TurnConfig:
    # End of turn: smart_turn (Smart Turn v3.2 judges each pause) | silence (vad.stop_ms).
    detector: str = "smart_turn"
    pause_ms: int = 200  # silence before the model is asked
    recheck_ms: int = 400  # asked again this often while the silence lasts
    max_wait_ms: int = 2500  # silence that ends a turn the model kept calling incomplete
    threshold: float = 0.5  # probability of "complete" that ends the turn
    # The words at a pause, scored by a small language model (smollm2 | none): under
    # words_hold the sentence cannot end there (a "complete" is held while the pause is
    # under hold_ms); from words_end it clearly does (an "incomplete" ends at a recheck),
    # and from words_sure an "incomplete" ends at the first check already.
    words: str = "smollm2"
    words_hold: float = 0.01
    words_end: float = 0.2
    words_sure: float = 0.4
    hold_ms: int = 900
    # The recogniser's probability of the last word at the pause: under this it was a
    # guess ("how much is a" heard as "how much is that?") and a "complete" is held too.
    last_word_min: float = 0.35
    # Checks run in their own pool; one that waits longer than wait_ms for a thread (or
    # finds max_waiting ahead of it) is skipped, and that pause ends on vad.stop_ms.
    threads: int = 2  # the sound's and the words' checks of one pause run side by side
    max_waiting: int = 8
    wait_ms: int = 150
    # While a pause is judged, synthesise the reply's first sentence for the words
    # decoded at it (only with an LLM that runs nothing and bills nothing: grounded,
    # extractive); used if the turn ends there (gateway/pipeline/speculation.py).
    speculate: bool = True


@dataclass(frozen=True, slots=True)
class LLMConfig:
    provider: str = "grounded"  # grounded | llama | extractive | openai | hybrid | null
    fallbacks: tuple[str, ...] = ()
    system_prompt: str = (
        "You are the voice assistant of {assistant_name}. Answer in one or two short "
        "spoken sentences, using only the facts in the passages below."
    )
    assistant_name: str = "the gateway"
    max_tokens: int = 120
    temperature: float = 0.2
    history_turns: int = 8
    first_token_timeout_s: float = 10.0
    total_timeout_s: float = 60.0
    # OpenAI-compatible servers (OpenAI, vLLM, llama.cpp server, Ollama).
    base_url: str = "https://api.openai.com/v1"
    model: str = "gpt-4o-mini"
    api_key: str = field(default="", repr=False)
    context_tokens: int = 2048
    threads: int = 2


@dataclass(frozen=True, slots=True)
class TTSConfig:
    provider: str = "piper"  # piper | espeak | null
    fallbacks: tuple[str, ...] = ()
    voice: str = "joe"
    speed: float = 1.0
    timeout_s: float = 15.0


@dataclass(frozen=True, slots=True)
class KnowledgeConfig:
    path: str = ""  # empty: the sample knowledge base shipped in the package
    top_k: int = 3
    # Larger documents are refused on import (DOCUMENT_TOO_LARGE); split them instead.
    max_document_bytes: int = 1 << 20


@dataclass(frozen=True, slots=True)
class EmbedderConfig:
    # Sentence embeddings for semantic search and retrieval: "minilm" (all-MiniLM-L6-v2,
    # int8 ONNX from a wheel) or "null" (none: full-text search only).
    provider: str = "minilm"
    max_tokens: int = 128  # longer texts are cut (a passage is ~700 characters at most)
    batch_size: int = 32
    threads: int = 1  # onnxruntime threads per call (one call at a time per process)
    timeout_s: float = 10.0
    # Search results found only by meaning (no shared word) need at least this cosine
    # similarity to the query (unrelated sentences score ~0.0-0.2, paraphrases ~0.35+).
    min_similarity: float = 0.25


@dataclass(frozen=True, slots=True)
class WorkersConfig:
    # Threads running model inference; shared by every session in the process.
    threads: int = 2
    # Jobs waiting for a thread beyond this are refused, not queued forever.
    max_waiting: int = 32
    wait_timeout_s: float = 5.0
    # Work made ahead of need (the final model's decode at a pause, in case the turn ends
    # there, on a copy of Whisper loaded nicer since CTranslate2 decodes in threads of
    # its own; the speculative first sentence's TTS) runs this much nicer, so the quick
    # words and the turn checks the caller is waiting on get the cores first. 0: off.
    ahead_nice: int = 5


@dataclass(frozen=True, slots=True)
class QueueConfig:
    stt: int = 4
    llm: int = 2
    tts: int = 16
    playout: int = 1000
    outbox: int = 512


@dataclass(frozen=True, slots=True)
class AuthConfig:
    token_ttl_s: int = 600
    token_ttl_min_s: int = 10
    token_ttl_max_s: int = 7200
    token_secret: str = field(default="", repr=False)
    # OAuth 2 (gateway.api.oauth): access tokens and legacy chatbot JWTs, authorization codes.
    oauth_access_ttl_s: int = 3600
    oauth_code_ttl_s: int = 60


@dataclass(frozen=True, slots=True)
class RateLimitConfig:
    """Limits in the ``limits`` notation ("60/minute", "10/minute;100/day"; "" = none)."""

    enabled: bool = True
    # memory:// (one process) | async+redis://host:6379 (shared by several gateways)
    storage_url: str = field(default="memory://", repr=False)
    # moving-window: exact. sliding-window-counter: O(1) per key, may admit ~1 extra
    # request at a window boundary. fixed-window: O(1), bursts up to 2x at a boundary.
    strategy: str = "moving-window"
    key_prefix: str = "gateway"
    # Per endpoint group, per caller (key, user, or client IP when anonymous).
    group_chat: str = "60/minute"
    group_token: str = "10/minute"
    group_health: str = "100/minute"
    group_import: str = "100/minute"
    group_query: str = "60/minute"
    group_search: str = "60/minute"
    group_voice: str = "30/minute"
    group_oauth: str = "30/minute"
    group_default: str = "120/minute"
    # Per caller over all endpoints, by the credential's (or the assistant's) tier.
    tier_free: str = "10/minute;100/day"
    tier_basic: str = "60/minute;1000/day"
    tier_pro: str = "120/minute;5000/day"
    tier_enterprise: str = "500/minute;50000/day"


@dataclass(frozen=True, slots=True)
class FailoverConfig:
    # A provider failing this many calls in a row is skipped for cooldown_s, then probed.
    breaker_threshold: int = 3
    breaker_cooldown_s: float = 30.0


@dataclass(frozen=True, slots=True)
class ToolsConfig:
    # Built-in tools for sessions whose assistant declares none (search_knowledge_base,
    # get_current_datetime, end_call, transfer_call). Webhook tools are per assistant.
    enabled: tuple[str, ...] = ()
    # A tool still running this long into a turn with nothing said yet: a spoken filler.
    filler_after_ms: int = 1200
    filler_text: str = "One moment, let me check that."
    timeout_s: float = 5.0  # per call, unless a webhook declares its own timeout_s
    max_rounds: int = 3  # tool rounds per turn; then the model must answer in words
    max_result_chars: int = 4000  # a longer result is cut before the model sees it
    timezone: str = "UTC"  # get_current_datetime when the model names none


@dataclass(frozen=True, slots=True)
class DatabaseConfig:
    # Empty: SQLite in the data dir. PostgreSQL: postgresql+asyncpg://user@host/db
    url: str = field(default="", repr=False)


@dataclass(frozen=True, slots=True)
class WebRTCConfig:
    # ICE servers of the gateway's own agent ("stun:host:port", "turn:host:port?transport=udp");
    # aioice uses the first STUN and the first TURN entry. Empty: none (no outside traffic).
    stun_servers: tuple[str, ...] = ()
    turn_servers: tuple[str, ...] = ()
    turn_username: str = ""
    turn_credential: str = field(default="", repr=False)
    # Host candidates the gateway offers: IPs, CIDR networks or interface names.
    # Empty: every interface except loopback (aioice's default).
    host_candidates: tuple[str, ...] = ()
    ipv6: bool = True
    output_sample_rate: int = 48000  # reply track rate handed to the Opus encoder
    max_pending_offers: int = 16  # peers answered but not yet connected
    ice_gathering_timeout_s: float = 5.0
    connect_timeout_s: float = 20.0  # answered but never connected: dropped


@dataclass(frozen=True, slots=True)
class OpenAIConfig:
    """OpenAI speech: ``stt.provider = "openai"`` and ``tts.provider = "openai"``.

    The LLM keeps its own ``[llm] base_url`` and key (any OpenAI-compatible server)."""

    base_url: str = "https://api.openai.com/v1"
    api_key: str = field(default="", repr=False)
    stt_model: str = "gpt-4o-mini-transcribe"  # | gpt-4o-transcribe | whisper-1
    stt_stream: bool = True  # partial transcripts while a final transcription runs
    stt_prompt: str = ""  # spelling hints: names, jargon
    tts_model: str = "gpt-4o-mini-tts"  # | tts-1 | tts-1-hd
    tts_voice: str = "alloy"
    tts_instructions: str = ""  # how to speak (gpt-4o-mini-tts only)
    connect_timeout_s: float = 5.0
    max_retries: int = 1


@dataclass(frozen=True, slots=True)
class ElevenLabsConfig:
    base_url: str = "https://api.elevenlabs.io"
    ws_url: str = "wss://api.elevenlabs.io"
    api_key: str = field(default="", repr=False)
    model_id: str = "eleven_flash_v2_5"
    voice_id: str = "JBFqnCBsd6RMkjVDRZzb"
    voices: tuple[str, ...] = ()  # more voice ids a session may choose
    mode: str = "websocket"  # websocket (stream-input) | http (stream with timestamps)
    # auto: follows the session (ulaw_8000 for 8 kHz telephony, else pcm_<rate>).
    output_format: str = "auto"
    stability: float = 0.5
    similarity_boost: float = 0.75
    connect_timeout_s: float = 5.0


@dataclass(frozen=True, slots=True)
class HybridConfig:
    """A company backend answering instead of the LLM (SmarterAvatar hybrid integration)."""

    url: str = ""  # POST {message, sessionId, context} -> {response, sources} or SSE
    timeout_s: float = 30.0
    api_key: str = field(default="", repr=False)  # sent as "Authorization: Bearer <key>"
    headers: tuple[str, ...] = field(default=(), repr=False)  # "Name: value" entries


@dataclass(frozen=True, slots=True)
class SecretsConfig:
    # KEY=VALUE lines (or TOML, by the .toml suffix) holding secrets only; it must not be
    # readable by group or others. Precedence: config file < secrets file < environment.
    file: str = ""


@dataclass(frozen=True, slots=True)
class ClusterConfig:
    """Several gateways as one service: PostgreSQL holds the data, Redis the live state
    (rate limits, the registry of live sessions, events between nodes)."""

    enabled: bool = False
    # redis:// or rediss:// URL (a password in it: put the URL in the secrets file).
    redis_url: str = field(default="", repr=False)
    node_id: str = ""  # empty: <hostname>-<pid>
    prefix: str = "gateway"  # Redis key and channel namespace (one per deployment)
    heartbeat_s: float = 2.0  # each node refreshes its registry entry this often
    node_ttl_s: float = 10.0  # a node silent this long is dead: its entries expire


@dataclass(frozen=True, slots=True)
class TelemetryConfig:
    """OpenTelemetry traces: one span per turn, a child span per stage. Off by default."""

    traces: bool = False
    # OTLP/HTTP traces endpoint; empty: the SDK's own default (OTEL_EXPORTER_OTLP_*).
    # "console": spans printed as JSON lines (a quick look without a collector).
    exporter: str = ""
    service_name: str = "gateway"


@dataclass(frozen=True, slots=True)
class Config:
    server: ServerConfig = ServerConfig()
    audio: AudioConfig = AudioConfig()
    vad: VADConfig = VADConfig()
    stt: STTConfig = STTConfig()
    turn: TurnConfig = TurnConfig()
    interruptions: InterruptionsConfig = InterruptionsConfig()
    llm: LLMConfig = LLMConfig()
    tts: TTSConfig = TTSConfig()
    knowledge: KnowledgeConfig = KnowledgeConfig()
    embedder: EmbedderConfig = EmbedderConfig()
    workers: WorkersConfig = WorkersConfig()
    queues: QueueConfig = QueueConfig()
    auth: AuthConfig = AuthConfig()
    database: DatabaseConfig = DatabaseConfig()
    failover: FailoverConfig = FailoverConfig()
    webrtc: WebRTCConfig = WebRTCConfig()
    ratelimit: RateLimitConfig = RateLimitConfig()
    tools: ToolsConfig = ToolsConfig()
    openai: OpenAIConfig = OpenAIConfig()
    elevenlabs: ElevenLabsConfig = ElevenLabsConfig()
    hybrid: HybridConfig = HybridConfig()
    secrets: SecretsConfig = SecretsConfig()
    cluster: ClusterConfig = ClusterConfig()
    telemetry: TelemetryConfig = TelemetryConfig()

    @property
    def data_path(self) -> Path:
        return Path(self.server.data_dir)

    def anonymous_allowed(self) -> bool:
        value = self.server.allow_anonymous.lower()
        if value in ("true", "yes", "1"):
            return True
        if value in ("false", "no", "0"):
            return False
        return _is_loopback(self.server.host)

    def replace(self, **sections: Mapping[str, Any]) -> Config:
        """A copy with some fields changed, e.g. ``cfg.replace(llm={"provider": "null"})``."""
        cfg = _merge(self, {k: dict(v) for k, v in sections.items()})
        _validate(cfg)
        return cfg


def _is_loopback(host: str) -> bool:
    if host in ("localhost", ""):
        return host == "localhost"
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _coerce(value: Any, typ: Any, where: str) -> Any:
    origin = typing.get_origin(typ)
    try:
        if typ is bool:
            if isinstance(value, str):
                if value.lower() in ("1", "true", "yes", "on"):
                    return True
                if value.lower() in ("0", "false", "no", "off"):
                    return False
                raise ValueError(value)
            return bool(value)
        if typ is str:
            if not isinstance(value, str):
                raise TypeError(value)
            return value
        if typ in (int, float):
            # From TOML a number, from the environment a string; never a bool or a list.
            if isinstance(value, bool) or not isinstance(value, int | float | str):
                raise TypeError(value)
            if typ is int and isinstance(value, float) and not value.is_integer():
                raise ValueError(value)
            return typ(value)
        if origin is tuple:
            if isinstance(value, str):
                value = [v.strip() for v in value.split(",") if v.strip()]
            return tuple(str(v) for v in value)
        if origin in (types.UnionType, typing.Union):
            return value
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{where}: cannot use {value!r} as {typ}") from exc
    raise ConfigError(f"{where}: unsupported type {typ}")


def _merge(cfg: Config, overrides: Mapping[str, Mapping[str, Any]]) -> Config:
    hints = typing.get_type_hints(Config)
    new_sections: dict[str, Any] = {}
    for section, values in overrides.items():
        if section not in hints:
            raise ConfigError(f"unknown config section [{section}]")
        if not isinstance(values, Mapping):
            raise ConfigError(f"[{section}] must be a table of keys")
        current = getattr(cfg, section)
        fhints = typing.get_type_hints(type(current))
        changes: dict[str, Any] = {}
        for key, value in values.items():
            if key not in fhints:
                raise ConfigError(f"unknown config key {section}.{key}")
            changes[key] = _coerce(value, fhints[key], f"{section}.{key}")
        new_sections[section] = dataclasses.replace(current, **changes)
    return dataclasses.replace(cfg, **new_sections)


def _env_overrides(environ: Mapping[str, str]) -> dict[str, dict[str, str]]:
    out: dict[str, dict[str, str]] = {}
    for name, value in environ.items():
        if not name.startswith(ENV_PREFIX) or "__" not in name:
            continue
        section, _, key = name[len(ENV_PREFIX) :].lower().partition("__")
        out.setdefault(section, {})[key] = value
    return out


def load_config(
    path: str | Path | None = None, environ: Mapping[str, str] | None = None
) -> Config:
    """Read the config file (if any), the secrets file (if named) and the environment,
    once, into a frozen Config."""
    env = dict(os.environ if environ is None else environ)
    path = path or env.get("GATEWAY_CONFIG")
    data: dict[str, Any] = {}
    if path:
        try:
            with open(path, "rb") as fh:
                data = tomllib.load(fh)
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise ConfigError(f"cannot read config file {path}: {exc}") from exc
        _refuse_credentials(data, str(path))
    base = _merge(Config(), data)
    env_overrides = _env_overrides(env)
    secrets_path = _merge(base, env_overrides).secrets.file
    file_vars = read_secrets_file(secrets_path) if secrets_path else {}
    cfg = _merge(_merge(base, _env_overrides(file_vars)), env_overrides)
    cfg = _well_known_secrets(cfg, {**file_vars, **env})
    cfg = _cluster_defaults(cfg)
    _validate(cfg)
    return cfg


def _cluster_defaults(cfg: Config) -> Config:
    """In a cluster the rate limits live in the cluster's Redis unless set otherwise:
    per-process counters would let each node grant the whole limit again."""
    c = cfg.cluster
    if c.enabled and c.redis_url and cfg.ratelimit.storage_url == "memory://":
        return _merge(cfg, {"ratelimit": {"storage_url": "async+" + c.redis_url}})
    return cfg


# --- secrets ---------------------------------------------------------------------------

# Well-known variables, so a deployment needs no gateway-specific names; a key set under
# its gateway name (GATEWAY_LLM__API_KEY) wins.
WELL_KNOWN_SECRETS: dict[str, tuple[tuple[str, str], ...]] = {
    "OPENAI_API_KEY": (("llm", "api_key"), ("openai", "api_key")),
    "ELEVENLABS_API_KEY": (("elevenlabs", "api_key"),),
}
# Credentials come from the environment or the secrets file, never from the config file.
CREDENTIALS = frozenset({
    ("llm", "api_key"), ("openai", "api_key"), ("elevenlabs", "api_key"),
    ("hybrid", "api_key"), ("auth", "token_secret"), ("webrtc", "turn_credential"),
})
_MIN_SECRET_CHARS = 6  # shorter values would scrub ordinary words out of logs


@functools.cache
def secret_fields() -> frozenset[tuple[str, str]]:
    """(section, key) of every field kept out of repr: the values to protect."""
    hints = typing.get_type_hints(Config)
    return frozenset((name, f.name) for name, section in hints.items()
                     for f in dataclasses.fields(section) if not f.repr)


def secret_values(cfg: Config) -> tuple[str, ...]:
    """Every secret value the config holds, longest first (for scrubbing text)."""
    found: set[str] = set()
    default = Config()
    for section, key in secret_fields():
        value = getattr(getattr(cfg, section), key)
        if value == getattr(getattr(default, section), key):  # "memory://" is no secret
            continue
        for item in value if isinstance(value, tuple) else (value,):
            found.update(secretfile.secret_parts(str(item)))
    return tuple(sorted((v for v in found if len(v) >= _MIN_SECRET_CHARS),
                        key=lambda v: (-len(v), v)))


def read_secrets_file(path: str) -> dict[str, str]:
    """NAME -> value from the secrets file; only secret settings may be in it."""
    allowed = {f"{ENV_PREFIX}{s.upper()}__{k.upper()}" for s, k in secret_fields()}
    try:
        return secretfile.read(path, allowed | set(WELL_KNOWN_SECRETS))
    except secretfile.SecretsFileError as exc:
        raise ConfigError(str(exc)) from None


def _refuse_credentials(data: Mapping[str, Any], path: str) -> None:
    for section, key in sorted(CREDENTIALS):
        table = data.get(section)
        if isinstance(table, Mapping) and table.get(key):
            raise ConfigError(f"{path}: {section}.{key} is a credential; set it in the "
                              "environment or the secrets file ([secrets] file)")


def _well_known_secrets(cfg: Config, env: Mapping[str, str]) -> Config:
    for name, targets in WELL_KNOWN_SECRETS.items():
        value = env.get(name)
        for section, key in targets:
            if value and not getattr(getattr(cfg, section), key):
                cfg = _merge(cfg, {section: {key: value}})
    return cfg


def _validate(cfg: Config) -> None:
    if cfg.vad.frame_ms not in (10, 20, 30):
        raise ConfigError("vad.frame_ms must be 10, 20 or 30")
    if not 0 <= cfg.vad.aggressiveness <= 3:
        raise ConfigError("vad.aggressiveness must be 0..3")
    if cfg.audio.input_sample_rate not in (8000, 16000, 24000, 48000):
        raise ConfigError("audio.input_sample_rate must be 8000, 16000, 24000 or 48000")
    lo, hi = cfg.auth.token_ttl_min_s, cfg.auth.token_ttl_max_s
    if not lo <= cfg.auth.token_ttl_s <= hi:
        raise ConfigError(f"auth.token_ttl_s must be within {lo}..{hi}")
    _validate_turn(cfg.turn)
    _validate_interruptions(cfg.interruptions)
    _validate_ratelimit(cfg.ratelimit)
    _validate_cloud(cfg)
    _validate_tools(cfg.tools)
    if cfg.webrtc.output_sample_rate not in (16000, 24000, 48000):
        raise ConfigError("webrtc.output_sample_rate must be 16000, 24000 or 48000")
    if cfg.embedder.provider not in ("minilm", "null"):
        raise ConfigError("embedder.provider must be minilm or null")
    if cfg.embedder.max_tokens < 8 or cfg.embedder.batch_size < 1 or cfg.embedder.timeout_s <= 0:
        raise ConfigError("embedder: max_tokens >= 8, batch_size >= 1, timeout_s > 0")
    _validate_cluster(cfg)
    if cfg.server.allow_anonymous.lower() not in (
        "auto", "true", "false", "yes", "no", "1", "0"
    ):
        raise ConfigError("server.allow_anonymous must be auto, true or false")


def _validate_cluster(cfg: Config) -> None:
    """Cluster mode needs what makes nodes interchangeable: one shared database, one
    Redis, and one token secret (a token minted on one node is redeemed on another)."""
    c = cfg.cluster
    if c.heartbeat_s <= 0 or c.node_ttl_s <= 2 * c.heartbeat_s:
        raise ConfigError("cluster: heartbeat_s > 0 and node_ttl_s > 2 * heartbeat_s")
    if not c.enabled:
        return
    if not c.redis_url.startswith(("redis://", "rediss://", "unix://")):
        raise ConfigError("cluster.enabled needs cluster.redis_url (redis://host:6379/0)")
    if not cfg.auth.token_secret:
        raise ConfigError("cluster.enabled needs auth.token_secret, the same on every node "
                          "(GATEWAY_AUTH__TOKEN_SECRET or the secrets file); a secret "
                          "generated per node would refuse tokens minted on the others")
    if not cfg.database.url.startswith("postgresql"):
        raise ConfigError("cluster.enabled needs a shared PostgreSQL database "
                          "(database.url = \"postgresql+asyncpg://…\")")


def _validate_turn(t: TurnConfig) -> None:
    if t.detector not in ("smart_turn", "silence"):
        raise ConfigError("turn.detector must be smart_turn or silence")
    if min(t.pause_ms, t.recheck_ms, t.max_wait_ms, t.threads) <= 0 or t.max_waiting < 0 \
            or t.wait_ms < 0:
        raise ConfigError("turn: pause_ms, recheck_ms, max_wait_ms and threads must be "
                          "positive, max_waiting and wait_ms >= 0")
    if not 0.0 < t.threshold < 1.0:
        raise ConfigError("turn.threshold must be between 0 and 1")
    if t.words not in ("smollm2", "none"):
        raise ConfigError("turn.words must be smollm2 or none")
    if not 0.0 <= t.words_hold <= t.words_end <= t.words_sure <= 1.0 or t.hold_ms < 0:
        raise ConfigError("turn: 0 <= words_hold <= words_end <= words_sure <= 1 "
                          "and hold_ms >= 0")
    if not 0.0 <= t.last_word_min <= 1.0:
        raise ConfigError("turn: last_word_min must be within 0..1")


def _validate_interruptions(i: InterruptionsConfig) -> None:
    from gateway.pipeline.interruptions import from_config  # pure; checks like the API

    try:
        from_config(i)
    except ValueError as exc:
        raise ConfigError(str(exc)) from exc


def _validate_tools(tools: ToolsConfig) -> None:
    if tools.max_rounds < 0 or tools.timeout_s <= 0 or tools.filler_after_ms < 0:
        raise ConfigError("tools: max_rounds and filler_after_ms must be >= 0, timeout_s > 0")
    if tools.enabled:  # checked at startup, not found out on the first call
        from gateway.pipeline.tool_kinds import BUILTINS

        unknown = [n for n in tools.enabled if n not in BUILTINS]
        if unknown:
            raise ConfigError(f"tools.enabled: unknown built-in tool(s) {', '.join(unknown)} "
                              f"(known: {', '.join(BUILTINS)})")


def _validate_ratelimit(rl: RateLimitConfig) -> None:
    from limits import parse_many  # the limiter's own parser: what it accepts, we accept

    if rl.strategy not in ("sliding-window-counter", "moving-window", "fixed-window"):
        raise ConfigError("ratelimit.strategy must be sliding-window-counter, moving-window "
                          "or fixed-window")
    for f in dataclasses.fields(rl):
        if f.name.startswith(("group_", "tier_")) and getattr(rl, f.name).strip():
            try:
                parse_many(getattr(rl, f.name))
            except ValueError as exc:
                raise ConfigError(f"ratelimit.{f.name}: {exc}") from exc


def _validate_cloud(cfg: Config) -> None:
    el = cfg.elevenlabs
    if el.mode not in ("websocket", "http"):
        raise ConfigError("elevenlabs.mode must be websocket or http")
    formats = ("auto", "ulaw_8000", "pcm_8000", "pcm_16000", "pcm_22050", "pcm_24000",
               "pcm_44100", "pcm_48000")
    if el.output_format not in formats:
        raise ConfigError(f"elevenlabs.output_format must be one of {', '.join(formats)}")
    if cfg.hybrid.timeout_s <= 0:
        raise ConfigError("hybrid.timeout_s must be positive")
    for header in cfg.hybrid.headers:
        if ":" not in header or not header.split(":", 1)[0].strip():
            raise ConfigError("hybrid.headers entries must look like \"Name: value\"")
