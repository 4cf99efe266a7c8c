"""An assistant's own turn taking (its ``turn_taking`` JSON): how speech over a reply is
treated (``interruptions``, see gateway.pipeline.interruptions) and how a turn ends
(``end_of_turn``, see gateway.pipeline.turns.TurnSettings). Pure.

Missing keys keep the config's values ([interruptions], [turn]). Checked when the API
writes it, read again per session (a stored value the gateway no longer accepts is
logged by the caller and ignored, never a failed session).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields, replace
from typing import Any

from gateway.config import Config

from . import interruptions, overrides
from .interruptions import InterruptionSettings
from .turns import DETECTORS, TurnSettings

SECTIONS = ("interruptions", "end_of_turn")


@dataclass(frozen=True, slots=True)
class TurnTaking:
    interruptions: InterruptionSettings | None = None  # None: the config's
    end_of_turn: TurnSettings | None = None  # None: the config's


def resolve(raw: Mapping[str, Any] | None, cfg: Config) -> TurnTaking:
    """The settings ``raw`` asks for, over the config's. Raises ValueError (a message fit
    for a client) for anything it cannot use."""
    if not raw:
        return TurnTaking()
    unknown = sorted(set(raw) - set(SECTIONS))
    if unknown:
        raise ValueError(f"turn_taking: unknown section(s) {', '.join(unknown)}; "
                         f"known: {', '.join(SECTIONS)}")
    out = TurnTaking()
    if raw.get("interruptions") is not None:
        section = _section(raw, "interruptions")
        base = interruptions.from_config(cfg.interruptions)
        out = replace(out, interruptions=interruptions.parse_settings(base, section))
    if raw.get("end_of_turn") is not None:
        out = replace(out, end_of_turn=_end_of_turn(cfg, _section(raw, "end_of_turn")))
    return out


def _section(raw: Mapping[str, Any], name: str) -> Mapping[str, Any]:
    value = raw[name]
    if not isinstance(value, Mapping):
        raise ValueError(f"turn_taking.{name} must be an object")
    return value


_EOT_RULES = overrides.rules(
    "end_of_turn", (f.name for f in fields(TurnSettings)),
    choices={"detector": DETECTORS},
    ints={"pause_ms": (50, 5000), "recheck_ms": (50, 5000), "max_wait_ms": (100, 10000),
          "hold_ms": (0, 10000)},
    numbers={"threshold": (0.01, 0.99), "words_hold": (0.0, 1.0), "words_end": (0.0, 1.0),
             "words_sure": (0.0, 1.0),
             "last_word_min": (0.0, 1.0)})


def _end_of_turn(cfg: Config, raw: Mapping[str, Any]) -> TurnSettings:
    return replace(TurnSettings.from_config(cfg.turn), **overrides.parse(raw, _EOT_RULES))
