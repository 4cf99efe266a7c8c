"""Scenario sets for ``gateway eval``: parsed from TOML into frozen dataclasses (pure).

A set names its knowledge base (a folder of Markdown documents, imported into a fresh
assistant) and lists scenarios by kind; docs/evaluation.md describes the format.
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from gateway.errors import ConfigError

# pause_apart: a pause scenario whose halves are synthesised apart (harder: each half
# ends like a sentence), reported on its own.
KINDS = ("question", "pause", "pause_apart", "backchannel", "barge_in", "false_interruption")
PAUSE_KINDS = ("pause", "pause_apart")
ENGINES = ("piper", "espeak")
NOISES = ("cough", "burst")
DEFAULT_VOICE = "piper:joe"
DEFAULT_PAUSE_MS = 600
DEFAULT_AT_MS = 1000
PAUSE_MARK = "|"


class ScenarioError(ConfigError):
    """A scenario file that cannot be used; the message names the file and the entry."""


@dataclass(frozen=True, slots=True)
class Voice:
    engine: str  # piper | espeak
    name: str  # piper: joe; espeak: en-us, en-gb-scotland+f3, ...

    @classmethod
    def parse(cls, spec: str) -> Voice:
        engine, sep, name = spec.partition(":")
        if not sep or engine not in ENGINES or not name:
            raise ScenarioError(f"voice {spec!r}: expected ENGINE:NAME with ENGINE one of "
                                f"{', '.join(ENGINES)} (e.g. piper:joe, espeak:en-gb+f3)")
        return cls(engine, name)

    def __str__(self) -> str:
        return f"{self.engine}:{self.name}"


@dataclass(frozen=True, slots=True)
class Utterance:
    """What a caller says: text spoken by a voice, a WAV file, or a synthetic noise."""

    text: str | None = None
    wav: Path | None = None
    noise: str | None = None
    voice: Voice = field(default_factory=lambda: Voice.parse(DEFAULT_VOICE))
    speed: float = 1.0
    pause_ms: int = 0  # silence at each PAUSE_MARK in the text
    apart: bool = False  # the parts around a pause synthesised apart, not as one sentence

    @property
    def label(self) -> str:
        if self.text is not None:
            return self.text
        if self.wav is not None:
            return self.wav.name
        return f"<{self.noise}>"

    @property
    def clean_text(self) -> str:
        """The text without pause marks (what the caller says)."""
        return " ".join((self.text or "").replace(PAUSE_MARK, " ").split())


# A fact is satisfied when any of its alternatives is in the answer.
Fact = tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Scenario:
    id: str
    kind: str
    caller: Utterance
    facts: tuple[Fact, ...] = ()
    forbid: tuple[Fact, ...] = ()
    unanswerable: bool = False
    overlay: Utterance | None = None  # backchannel, barge-in or noise during the reply
    at_ms: int = DEFAULT_AT_MS  # overlay start after the reply's first audio byte
    overlay_facts: tuple[Fact, ...] = ()  # barge-in: facts the second answer must hold

    @property
    def judged(self) -> bool:
        """Whether the answer is checked for correctness."""
        return self.unanswerable or bool(self.facts) or bool(self.forbid)


@dataclass(frozen=True, slots=True)
class Document:
    title: str
    content: str


@dataclass(frozen=True, slots=True)
class ScenarioSet:
    name: str
    path: Path
    documents: tuple[Document, ...]
    scenarios: tuple[Scenario, ...]
    assistant: dict[str, Any] = field(default_factory=dict)

    def by_kind(self, kind: str) -> list[Scenario]:
        return [s for s in self.scenarios if s.kind == kind]


def load(path: str | Path) -> ScenarioSet:
    """Read a scenario set and its knowledge base from disk."""
    p = Path(path)
    try:
        data = tomllib.loads(p.read_text("utf-8"))
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ScenarioError(f"{p}: {exc}") from exc
    knowledge = data.get("knowledge")
    documents = load_documents(p.parent / knowledge) if isinstance(knowledge, str) else ()
    return parse(data, p, documents)


def load_documents(folder: Path) -> tuple[Document, ...]:
    """Each ``*.md`` file is one document; its first ``# `` line is the title."""
    files = sorted(folder.glob("*.md"))
    if not files:
        raise ScenarioError(f"knowledge folder {folder} has no .md documents")
    docs = []
    for f in files:
        lines = f.read_text("utf-8").strip().splitlines()
        if lines and lines[0].startswith("# "):
            title, body = lines[0][2:].strip(), "\n".join(lines[1:]).strip()
        else:
            title, body = f.stem.replace("_", " "), "\n".join(lines)
        docs.append(Document(title, body))
    return tuple(docs)


def parse(data: dict[str, Any], path: Path, documents: tuple[Document, ...]) -> ScenarioSet:
    default_voice = Voice.parse(_str(data, "voice", DEFAULT_VOICE, "set"))
    scenarios: list[Scenario] = []
    seen: set[str] = set()
    for kind in KINDS:
        entries = data.get(kind, [])
        if not isinstance(entries, list):
            raise ScenarioError(f"{path}: [[{kind}]] must be an array of tables")
        for i, entry in enumerate(entries):
            where = f"{path}: [[{kind}]] #{i + 1}"
            try:
                s = _scenario(kind, entry, i, default_voice, path.parent)
            except ScenarioError as exc:
                raise ScenarioError(f"{where}: {exc}") from None
            if s.id in seen:
                raise ScenarioError(f"{where}: duplicate id {s.id!r}")
            seen.add(s.id)
            scenarios.append(s)
    unknown = set(data) - {*KINDS, "name", "voice", "knowledge", "assistant"}
    if unknown:
        raise ScenarioError(f"{path}: unknown keys {sorted(unknown)}")
    if not scenarios:
        raise ScenarioError(f"{path}: no scenarios")
    assistant = data.get("assistant", {})
    if not isinstance(assistant, dict):
        raise ScenarioError(f"{path}: [assistant] must be a table")
    name = _str(data, "name", path.stem, "set")
    return ScenarioSet(name, path, documents, tuple(scenarios), dict(assistant))


_COMMON = {"id", "say", "wav", "voice", "speed", "facts", "forbid", "unanswerable"}
_EXTRA = {
    "question": set(),
    "pause": {"pause_ms"},
    "pause_apart": {"pause_ms"},
    "backchannel": {"backchannel", "backchannel_voice", "at_ms"},
    "barge_in": {"barge", "barge_voice", "barge_facts", "at_ms"},
    "false_interruption": {"noise", "at_ms"},
}


def _scenario(kind: str, e: Any, index: int, voice: Voice, base: Path) -> Scenario:
    if not isinstance(e, dict):
        raise ScenarioError("must be a table")
    unknown = set(e) - _COMMON - _EXTRA[kind]
    if unknown:
        raise ScenarioError(f"unknown keys {sorted(unknown)}")
    sid = _str(e, "id", f"{kind}-{index + 1}", "id")
    pause_ms = int(e.get("pause_ms", DEFAULT_PAUSE_MS)) if kind in PAUSE_KINDS else 0
    caller = _utterance(e, "say", "voice", voice, base, pause_ms)
    if kind == "pause_apart":
        caller = replace(caller, apart=True)
    if kind in PAUSE_KINDS and PAUSE_MARK not in (caller.text or ""):
        raise ScenarioError(f"a pause scenario marks its pause with {PAUSE_MARK!r} in 'say'")
    if not 0 <= pause_ms <= 5000:
        raise ScenarioError("pause_ms must be within 0..5000")
    facts, forbid = _facts(e.get("facts", [])), _facts(e.get("forbid", []))
    unanswerable = e.get("unanswerable", False)
    if not isinstance(unanswerable, bool):
        raise ScenarioError("unanswerable must be true or false")
    if unanswerable and facts:
        raise ScenarioError("an unanswerable question has no facts to check")
    overlay, overlay_facts = _overlay(kind, e, voice, base)
    at_ms = int(e.get("at_ms", DEFAULT_AT_MS))
    if not 0 <= at_ms <= 30000:
        raise ScenarioError("at_ms must be within 0..30000")
    return Scenario(sid, kind, caller, facts, forbid, unanswerable, overlay, at_ms,
                    overlay_facts)


def _overlay(kind: str, e: dict[str, Any], voice: Voice,
             base: Path) -> tuple[Utterance | None, tuple[Fact, ...]]:
    if kind == "backchannel":
        return _utterance(e, "backchannel", "backchannel_voice", voice, base, 0,
                          required=True), ()
    if kind == "barge_in":
        return (_utterance(e, "barge", "barge_voice", voice, base, 0, required=True),
                _facts(e.get("barge_facts", [])))
    if kind == "false_interruption":
        noise = e.get("noise", "cough")
        if not isinstance(noise, str):
            raise ScenarioError("noise must be a string")
        if noise in NOISES:
            return Utterance(noise=noise), ()
        wav = base / noise
        if not wav.is_file():
            raise ScenarioError(f"noise {noise!r}: one of {', '.join(NOISES)} or a WAV file")
        return Utterance(wav=wav), ()
    return None, ()


def _utterance(e: dict[str, Any], text_key: str, voice_key: str, default: Voice,
               base: Path, pause_ms: int, required: bool = True) -> Utterance:
    text, wav = e.get(text_key), e.get("wav") if text_key == "say" else None
    if wav is not None:
        if not isinstance(wav, str) or not (base / wav).is_file():
            raise ScenarioError(f"wav {wav!r} is not a file (paths are relative to the set)")
        return Utterance(wav=base / wav)
    if not isinstance(text, str) or not text.strip():
        if required:
            raise ScenarioError(f"{text_key!r} (the words the caller says) is required")
        return Utterance()
    voice = Voice.parse(e[voice_key]) if isinstance(e.get(voice_key), str) else default
    speed = float(e.get("speed", 1.0)) if text_key == "say" else 1.0
    if not 0.5 <= speed <= 2.0:
        raise ScenarioError("speed must be within 0.5..2.0")
    return Utterance(text=text.strip(), voice=voice, speed=speed, pause_ms=pause_ms)


def _facts(raw: Any) -> tuple[Fact, ...]:
    """``["9", ["6:30", "half past six"], "re:\\bfree\\b"]``: each item one fact."""
    if not isinstance(raw, list):
        raise ScenarioError("facts must be a list")
    out: list[Fact] = []
    for item in raw:
        alts = item if isinstance(item, list) else [item]
        if not alts or not all(isinstance(a, str) and a.strip() for a in alts):
            raise ScenarioError(f"fact {item!r}: a non-empty string or list of strings")
        for a in alts:
            if a.strip().startswith("re:"):
                try:
                    re.compile(a.strip()[3:])
                except re.error as exc:
                    raise ScenarioError(f"fact {a!r}: bad regular expression: {exc}") from None
        out.append(tuple(a.strip() for a in alts))
    return tuple(out)


def _str(data: dict[str, Any], key: str, default: str, what: str) -> str:
    value = data.get(key, default)
    if not isinstance(value, str) or not value.strip():
        raise ScenarioError(f"{what}: {key!r} must be a non-empty string")
    return value.strip()
