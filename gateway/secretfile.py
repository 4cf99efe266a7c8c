"""The secrets file named by ``[secrets] file``: parsing and permission checks.

KEY=VALUE lines (``export`` and quotes allowed, ``#`` comments), or TOML when the name
ends in ``.toml`` (top-level ``NAME = "value"`` or ``[section] key = "value"`` tables).
Errors name the file and the line, never a value.
"""

from __future__ import annotations

import os
import stat
import tomllib
from collections.abc import Set
from pathlib import Path
from urllib.parse import urlsplit

from gateway.errors import ConfigError

PREFIX = "GATEWAY_"


class SecretsFileError(ConfigError):
    """The secrets file cannot be used (unreadable, too open, malformed, foreign keys)."""


def read(path: str, allowed: Set[str]) -> dict[str, str]:
    """NAME -> value. Refuses a file readable by group or others, and unknown names."""
    file = Path(path)
    try:
        st = file.stat()
        if not stat.S_ISREG(st.st_mode):
            raise SecretsFileError(f"secrets file {path} is not a regular file")
        if os.name == "posix" and st.st_mode & 0o077:
            raise SecretsFileError(f"secrets file {path} is readable by other users (mode "
                                   f"{stat.S_IMODE(st.st_mode):o}); chmod 600 it")
        text = file.read_text(encoding="utf-8")
    except OSError as exc:
        raise SecretsFileError(f"cannot read secrets file {path}: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise SecretsFileError(f"secrets file {path} is not UTF-8 text") from None
    values = parse_toml(text, path) if file.suffix == ".toml" else parse_lines(text, path)
    for name in values:
        if name not in allowed:
            raise SecretsFileError(f"secrets file {path}: {name} is not a secret setting")
    return values


def parse_lines(text: str, path: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        name, sep, value = line.removeprefix("export ").partition("=")
        if not sep or not name.strip():
            raise SecretsFileError(f"secrets file {path}: line {number} is not NAME=VALUE")
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        out[name.strip().upper()] = value
    return out


def parse_toml(text: str, path: str) -> dict[str, str]:
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError:
        raise SecretsFileError(f"secrets file {path} is not valid TOML") from None
    out: dict[str, str] = {}
    for name, value in data.items():
        items = value.items() if isinstance(value, dict) else [(None, value)]
        for key, item in items:
            full = f"{PREFIX}{name}__{key}".upper() if key else name.upper()
            if isinstance(item, list):  # e.g. hybrid headers
                item = ",".join(str(v) for v in item)
            if not isinstance(item, str):
                raise SecretsFileError(f"secrets file {path}: {full} must be a string")
            out[full] = item
    return out


def secret_parts(value: str) -> list[str]:
    """The value, and the secret inside it: a URL's password, a header's value, a token."""
    parts = [value.strip()]
    if "://" in value:
        parts.append(urlsplit(value).password or "")
    elif ":" in value:  # "Authorization: Bearer abc" -> "Bearer abc" -> "abc"
        parts.append(value.split(":", 1)[1].strip())
    words = parts[-1].split()
    if len(words) == 2 and words[0].lower() in ("bearer", "basic", "token"):
        parts.append(words[1])
    return parts
