"""Secrets: only from the environment or the secrets file, never in repr or in a log line."""

from __future__ import annotations

import io
import json
import logging
import sys
from pathlib import Path

import pytest
import structlog

from gateway.config import Config, ConfigError, load_config, secret_values
from gateway.logs import configure_logging
from gateway.redact import Redactor


def secrets_file(tmp_path: Path, text: str, name: str = "gateway.secrets",
                 mode: int = 0o600) -> Path:
    path = tmp_path / name
    path.write_text(text)
    path.chmod(mode)
    return path


def test_key_value_file(tmp_path: Path) -> None:
    path = secrets_file(tmp_path, "# comment\n\nOPENAI_API_KEY=sk-file-1\n"
                        "export ELEVENLABS_API_KEY='xi-file-2'\n"
                        "GATEWAY_HYBRID__API_KEY=\"hyb-file-3\"\n"
                        "GATEWAY_HYBRID__HEADERS=X-A: one,X-B: two\n")
    cfg = load_config(environ={"GATEWAY_SECRETS__FILE": str(path)})
    assert cfg.llm.api_key == cfg.openai.api_key == "sk-file-1"
    assert cfg.elevenlabs.api_key == "xi-file-2" and cfg.hybrid.api_key == "hyb-file-3"
    assert cfg.hybrid.headers == ("X-A: one", "X-B: two")


def test_toml_file_named_in_the_config(tmp_path: Path) -> None:
    path = secrets_file(tmp_path, 'OPENAI_API_KEY = "sk-toml"\n[elevenlabs]\n'
                        'api_key = "xi-toml"\n', name="secrets.toml")
    config = tmp_path / "gateway.toml"
    config.write_text(f'[secrets]\nfile = "{path}"\n')
    cfg = load_config(config, environ={})
    assert cfg.openai.api_key == "sk-toml" and cfg.elevenlabs.api_key == "xi-toml"


def test_environment_wins_over_the_file(tmp_path: Path) -> None:
    path = secrets_file(tmp_path, "GATEWAY_OPENAI__API_KEY=sk-file\nELEVENLABS_API_KEY=xi-f\n")
    cfg = load_config(environ={"GATEWAY_SECRETS__FILE": str(path),
                               "GATEWAY_OPENAI__API_KEY": "sk-env",
                               "ELEVENLABS_API_KEY": "xi-env"})
    assert cfg.openai.api_key == "sk-env" and cfg.elevenlabs.api_key == "xi-env"


def test_a_file_others_can_read_is_refused(tmp_path: Path) -> None:
    path = secrets_file(tmp_path, "OPENAI_API_KEY=sk-open-to-all\n", mode=0o644)
    with pytest.raises(ConfigError, match="readable by other users") as info:
        load_config(environ={"GATEWAY_SECRETS__FILE": str(path)})
    assert "sk-open-to-all" not in str(info.value)


@pytest.mark.parametrize(("text", "message"), [
    ("GATEWAY_SERVER__PORT=9000\n", "not a secret setting"),
    ("just-a-key-without-a-name\n", "line 1 is not NAME=VALUE"),
])
def test_the_file_holds_secrets_only(tmp_path: Path, text: str, message: str) -> None:
    path = secrets_file(tmp_path, text)
    with pytest.raises(ConfigError, match=message) as info:
        load_config(environ={"GATEWAY_SECRETS__FILE": str(path)})
    assert "just-a-key" not in str(info.value)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read secrets file"):
        load_config(environ={"GATEWAY_SECRETS__FILE": str(tmp_path / "nope")})


def test_credentials_are_refused_in_the_config_file(tmp_path: Path) -> None:
    config = tmp_path / "gateway.toml"
    config.write_text('[elevenlabs]\napi_key = "xi-in-plain-config"\n')
    with pytest.raises(ConfigError, match=r"elevenlabs\.api_key is a credential") as info:
        load_config(config, environ={})
    assert "xi-in-plain-config" not in str(info.value)


def test_no_secret_in_repr() -> None:
    cfg = Config().replace(openai={"api_key": "sk-r1-secret"},
                           elevenlabs={"api_key": "xi-r2-secret"},
                           hybrid={"api_key": "hyb-r3-secret", "headers": ["X-K: hdr-r4-secret"]})
    for text in (repr(cfg), str(cfg), repr(cfg.hybrid), str(cfg.openai)):
        assert "-secret" not in text


def test_secret_values_cover_every_secret() -> None:
    cfg = Config().replace(openai={"api_key": "sk-abcdef"}, hybrid={
        "headers": ["Authorization: Bearer tok-123456"]},
        database={"url": "postgresql+asyncpg://app:pw-987654@db/app"})
    values = secret_values(cfg)
    for needed in ("sk-abcdef", "tok-123456", "pw-987654"):
        assert needed in values
    assert "memory://" not in values  # a default is no secret


def test_redactor_masks_nested_values() -> None:
    redactor = Redactor(["sk-abcdef", "sk-abcdef-longer"])
    assert redactor.scrub("key sk-abcdef-longer and sk-abcdef") == "key *** and ***"
    event = redactor.structlog_processor(None, "warning", {
        "error": "401 for sk-abcdef", "detail": {"keys": ["sk-abcdef"]}, "n": 3})
    assert event == {"error": "401 for ***", "detail": {"keys": ["***"]}, "n": 3}


def test_log_lines_never_carry_a_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    secret = "sk-logged-by-mistake-0123456789"
    cfg = Config().replace(openai={"api_key": secret},
                           server={"log_format": "json", "log_level": "debug"})
    err = io.StringIO()
    monkeypatch.setattr(sys, "stderr", err)  # where both loggers write
    root = logging.getLogger()
    saved = list(root.handlers)
    root.handlers = []
    try:
        configure_logging(cfg)
        log = structlog.get_logger("test")
        log.warning("upstream_said", error=f"bad key {secret}", data={"k": secret})
        try:
            raise RuntimeError(f"boom {secret}")
        except RuntimeError:
            log.error("crashed", exc_info=True)
            logging.getLogger("httpx").warning("request with %s failed", secret,
                                               exc_info=True)
    finally:
        root.handlers = saved
        structlog.reset_defaults()
    text = err.getvalue()
    assert "upstream_said" in text and "boom ***" in text and "request with *** failed" in text
    assert secret not in text
    first = json.loads(text.splitlines()[0])
    assert first["error"] == "bad key ***" and first["data"] == {"k": "***"}


def test_library_log_lines_are_json_lines_too(monkeypatch: pytest.MonkeyPatch) -> None:
    """uvicorn and other libraries log through the standard library: their lines, and
    a traceback they carry, stay one JSON object per line (issue 9: a plain-text
    traceback inside the JSON stream)."""
    cfg = Config().replace(server={"log_format": "json", "log_level": "info"})
    err = io.StringIO()
    monkeypatch.setattr(sys, "stderr", err)
    root = logging.getLogger()
    saved = list(root.handlers)
    root.handlers = []
    try:
        configure_logging(cfg)
        configure_logging(cfg)  # again (tests do): still one handler
        try:
            raise ValueError("bad")
        except ValueError:
            # (asyncio's logger: the suite's local uvicorn servers give "uvicorn" its
            # own handler and stop propagation, as uvicorn's default log config does)
            logging.getLogger("asyncio").exception("Task exception was never retrieved")
        logging.getLogger("asyncio").info("below the library threshold")
    finally:
        root.handlers = saved
        structlog.reset_defaults()
    [line] = err.getvalue().splitlines()
    record = json.loads(line)
    assert record["event"] == "Task exception was never retrieved"
    assert record["level"] == "error" and record["logger"] == "asyncio"
    assert "ValueError: bad" in record["exception"]
