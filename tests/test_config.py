"""Config: defaults < TOML file < environment, coercion, validation, frozen."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from gateway.config import Config, ConfigError, load_config


def write(tmp_path: Path, text: str, name: str = "gateway.toml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


# --- defaults ----------------------------------------------------------------------


def test_defaults() -> None:
    cfg = load_config(environ={})
    assert cfg == Config()
    assert cfg.server.host == "127.0.0.1" and cfg.server.port == 8080
    assert cfg.server.allow_anonymous == "auto"
    assert cfg.server.cors_origins == ()
    assert cfg.audio.input_sample_rate == 16000 and cfg.audio.output_sample_rate == 24000
    assert cfg.vad.provider == "webrtcvad" and cfg.vad.frame_ms == 20
    assert cfg.stt.provider == "whisper" and cfg.llm.provider == "grounded"
    assert cfg.tts.provider == "piper" and cfg.tts.voice == "joe"
    assert cfg.knowledge.path == "" and cfg.knowledge.top_k == 3
    assert cfg.queues.outbox == 512
    assert cfg.auth.token_ttl_s == 600
    assert cfg.llm.api_key == "" and cfg.auth.token_secret == ""
    assert cfg.data_path == Path("data")


def test_environ_none_reads_os_environ(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GATEWAY_SERVER__PORT", "9123")
    assert load_config().server.port == 9123


def test_secrets_are_not_in_repr() -> None:
    cfg = load_config(
        environ={"GATEWAY_LLM__API_KEY": "sk-secret", "GATEWAY_AUTH__TOKEN_SECRET": "tok-secret"}
    )
    assert cfg.llm.api_key == "sk-secret" and cfg.auth.token_secret == "tok-secret"
    assert "sk-secret" not in repr(cfg) and "tok-secret" not in repr(cfg)


# --- TOML ----------------------------------------------------------------------------


def test_toml_file(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
        [server]
        host = "0.0.0.0"
        port = 9000
        idle_timeout_s = 30
        cors_origins = ["https://a.example", "https://b.example"]

        [vad]
        provider = "silero"
        frame_ms = 30
        silero_threshold = 0.7

        [llm]
        provider = "extractive"
        temperature = 0
        """,
    )
    for p in (path, str(path)):
        cfg = load_config(p, environ={})
        assert cfg.server.host == "0.0.0.0" and cfg.server.port == 9000
        assert cfg.server.idle_timeout_s == 30.0 and isinstance(cfg.server.idle_timeout_s, float)
        assert cfg.server.cors_origins == ("https://a.example", "https://b.example")
        assert cfg.vad.provider == "silero" and cfg.vad.frame_ms == 30
        assert cfg.vad.silero_threshold == 0.7
        assert cfg.llm.provider == "extractive" and cfg.llm.temperature == 0.0
        # untouched values keep their defaults
        assert cfg.vad.stop_ms == 400 and cfg.tts == Config().tts


def test_empty_toml_file(tmp_path: Path) -> None:
    assert load_config(write(tmp_path, ""), environ={}) == Config()


def test_config_path_from_environment(tmp_path: Path) -> None:
    path = write(tmp_path, "[tts]\nvoice = 'amy'\n")
    cfg = load_config(environ={"GATEWAY_CONFIG": str(path)})
    assert cfg.tts.voice == "amy"


def test_integral_float_in_toml_is_accepted_for_int(tmp_path: Path) -> None:
    cfg = load_config(write(tmp_path, "[server]\nport = 9000.0\n"), environ={})
    assert cfg.server.port == 9000 and isinstance(cfg.server.port, int)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read config file"):
        load_config(tmp_path / "nope.toml", environ={})


def test_directory_instead_of_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read config file"):
        load_config(tmp_path, environ={})


@pytest.mark.parametrize("text", ["[server\nport = 1", "port = ", "[server]\nport = 1\nport = 2"])
def test_bad_toml(tmp_path: Path, text: str) -> None:
    with pytest.raises(ConfigError, match="cannot read config file"):
        load_config(write(tmp_path, text), environ={})


def test_unknown_section_in_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"unknown config section \[speech\]"):
        load_config(write(tmp_path, "[speech]\nx = 1\n"), environ={})


def test_top_level_key_is_an_unknown_section(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"unknown config section \[port\]"):
        load_config(write(tmp_path, "port = 8080\n"), environ={})


def test_unknown_key_in_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"unknown config key server\.prot"):
        load_config(write(tmp_path, "[server]\nprot = 1\n"), environ={})


@pytest.mark.parametrize(
    "text",
    [
        "[server]\nport = 'eighty'",
        "[server]\nport = 80.5",
        "[server]\nport = [80]",
        "[server]\nidle_timeout_s = 'soon'",
        "[server]\ncors_origins = 5",
        "[vad]\naggressiveness = {}",
    ],
)
def test_bad_value_types_in_file(tmp_path: Path, text: str) -> None:
    with pytest.raises(ConfigError):
        load_config(write(tmp_path, text), environ={})


@pytest.mark.parametrize("text", ["server = 5", "llm = 'openai'", "vad = [1, 2]"])
def test_section_that_is_not_a_table(tmp_path: Path, text: str) -> None:
    with pytest.raises(ConfigError):
        load_config(write(tmp_path, text), environ={})


@pytest.mark.parametrize(
    "text",
    [
        "[server]\nport = true",
        "[vad]\nsilero_threshold = false",
        "[server]\nhost = ['a', 'b']",
        "[llm]\nprovider = { name = 'openai' }",
    ],
)
def test_wrongly_typed_toml_values_are_refused(tmp_path: Path, text: str) -> None:
    with pytest.raises(ConfigError):
        load_config(write(tmp_path, text), environ={})


# --- environment -----------------------------------------------------------------------


def test_env_overrides_with_coercion() -> None:
    cfg = load_config(
        environ={
            "GATEWAY_SERVER__PORT": "9001",
            "GATEWAY_SERVER__IDLE_TIMEOUT_S": "12.5",
            "GATEWAY_SERVER__CORS_ORIGINS": "https://a.example, https://b.example,,",
            "GATEWAY_SERVER__HOST": "0.0.0.0",
            "GATEWAY_LLM__PROVIDER": "null",
            "GATEWAY_VAD__FRAME_MS": " 30 ",
            "GATEWAY_QUEUES__OUTBOX": "64",
        }
    )
    assert cfg.server.port == 9001 and isinstance(cfg.server.port, int)
    assert cfg.server.idle_timeout_s == 12.5
    assert cfg.server.cors_origins == ("https://a.example", "https://b.example")
    assert cfg.server.host == "0.0.0.0"
    assert cfg.llm.provider == "null"
    assert cfg.vad.frame_ms == 30
    assert cfg.queues.outbox == 64


def test_env_names_are_case_insensitive_after_the_prefix() -> None:
    cfg = load_config(environ={"GATEWAY_Server__Port": "9002"})
    assert cfg.server.port == 9002


def test_env_beats_toml(tmp_path: Path) -> None:
    path = write(tmp_path, "[server]\nport = 9000\nhost = '10.0.0.1'\n")
    cfg = load_config(path, environ={"GATEWAY_SERVER__PORT": "9500"})
    assert cfg.server.port == 9500
    assert cfg.server.host == "10.0.0.1"


def test_unrelated_env_vars_are_ignored() -> None:
    cfg = load_config(
        environ={
            "GATEWAY_DEBUG": "1",
            "HOME": "/root",
            "gateway_server__port": "1",
            "XGATEWAY_SERVER__PORT": "1",
        }
    )
    assert cfg == Config()


def test_unknown_env_section_and_key() -> None:
    with pytest.raises(ConfigError, match=r"unknown config section \[nope\]"):
        load_config(environ={"GATEWAY_NOPE__X": "1"})
    with pytest.raises(ConfigError, match=r"unknown config key server\.nope"):
        load_config(environ={"GATEWAY_SERVER__NOPE": "1"})


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("GATEWAY_SERVER__PORT", "http"),
        ("GATEWAY_SERVER__PORT", "80.0"),
        ("GATEWAY_SERVER__PORT", ""),
        ("GATEWAY_SERVER__IDLE_TIMEOUT_S", "5s"),
        ("GATEWAY_VAD__AGGRESSIVENESS", "high"),
    ],
)
def test_bad_env_values(name: str, value: str) -> None:
    with pytest.raises(ConfigError, match="cannot use"):
        load_config(environ={name: value})


def test_openai_api_key_fallback() -> None:
    assert load_config(environ={"OPENAI_API_KEY": "sk-a"}).llm.api_key == "sk-a"
    cfg = load_config(environ={"OPENAI_API_KEY": "sk-a", "GATEWAY_LLM__API_KEY": "sk-b"})
    assert cfg.llm.api_key == "sk-b"  # the gateway-specific name wins


# --- validation -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("env", "match"),
    [
        ({"GATEWAY_VAD__FRAME_MS": "25"}, "vad.frame_ms"),
        ({"GATEWAY_VAD__AGGRESSIVENESS": "4"}, "vad.aggressiveness"),
        ({"GATEWAY_VAD__AGGRESSIVENESS": "-1"}, "vad.aggressiveness"),
        ({"GATEWAY_AUDIO__INPUT_SAMPLE_RATE": "44100"}, "audio.input_sample_rate"),
        ({"GATEWAY_AUTH__TOKEN_TTL_S": "5"}, "auth.token_ttl_s"),
        ({"GATEWAY_AUTH__TOKEN_TTL_S": "7201"}, "auth.token_ttl_s"),
        ({"GATEWAY_SERVER__ALLOW_ANONYMOUS": "maybe"}, "server.allow_anonymous"),
    ],
)
def test_validation(env: dict[str, str], match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        load_config(environ=env)


def test_validation_limits_are_inclusive() -> None:
    cfg = load_config(
        environ={
            "GATEWAY_AUTH__TOKEN_TTL_S": "7200",
            "GATEWAY_VAD__FRAME_MS": "10",
            "GATEWAY_VAD__AGGRESSIVENESS": "0",
        }
    )
    assert cfg.auth.token_ttl_s == 7200


def test_config_error_is_a_value_error() -> None:
    assert issubclass(ConfigError, ValueError)


# --- frozen ----------------------------------------------------------------------------


def test_frozen() -> None:
    cfg = load_config(environ={})
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.server.port = 1  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.server = cfg.server  # type: ignore[misc]
    with pytest.raises((AttributeError, TypeError)):
        cfg.server.new_field = 1  # type: ignore[attr-defined]
    assert hash(cfg) == hash(Config())


# --- anonymous access ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("host", "allowed"),
    [
        ("127.0.0.1", True),
        ("127.0.0.2", True),
        ("::1", True),
        ("localhost", True),
        ("0.0.0.0", False),
        ("::", False),
        ("", False),
        ("192.168.1.10", False),
        ("example.com", False),
    ],
)
def test_anonymous_allowed_auto(host: str, allowed: bool) -> None:
    cfg = Config().replace(server={"host": host})
    assert cfg.server.allow_anonymous == "auto"
    assert cfg.anonymous_allowed() is allowed


@pytest.mark.parametrize(
    ("value", "allowed"),
    [
        ("true", True),
        ("TRUE", True),
        ("yes", True),
        ("1", True),
        ("false", False),
        ("No", False),
        ("0", False),
    ],
)
@pytest.mark.parametrize("host", ["127.0.0.1", "0.0.0.0"])
def test_anonymous_allowed_explicit(value: str, allowed: bool, host: str) -> None:
    cfg = load_config(
        environ={"GATEWAY_SERVER__ALLOW_ANONYMOUS": value, "GATEWAY_SERVER__HOST": host}
    )
    assert cfg.anonymous_allowed() is allowed


# --- replace --------------------------------------------------------------------------


def test_replace() -> None:
    base = Config()
    cfg = base.replace(llm={"provider": "null", "max_tokens": "50"}, server={"port": 1234})
    assert cfg.llm.provider == "null" and cfg.llm.max_tokens == 50
    assert cfg.server.port == 1234
    assert cfg.llm.temperature == base.llm.temperature and cfg.tts is base.tts
    # the original is untouched
    assert base.llm.provider == "grounded" and base.server.port == 8080
    assert base.replace() == base


def test_replace_errors() -> None:
    with pytest.raises(ConfigError, match="unknown config section"):
        Config().replace(nope={"x": 1})
    with pytest.raises(ConfigError, match="unknown config key"):
        Config().replace(llm={"nope": 1})
    with pytest.raises(ConfigError, match="cannot use"):
        Config().replace(server={"port": "http"})
