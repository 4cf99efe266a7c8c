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

from . import interruptions
from .interruptions import InterruptionSettings
from .turns import TurnSettings

SECTIONS = ("interruptions", "end_of_turn")
_EOT_INTS = {"pause_ms": (50, 5000), "recheck_ms": (50, 5000), "max_wait_ms": (100, 10000)}


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


def _end_of_turn(cfg: Config, raw: Mapping[str, Any]) -> TurnSettings:
    t = cfg.turn
    base = TurnSettings(detector=t.detector, pause_ms=t.pause_ms, recheck_ms=t.recheck_ms,
                        max_wait_ms=t.max_wait_ms, threshold=t.threshold)
    known = {f.name for f in fields(TurnSettings)}
    unknown = sorted(set(raw) - known)
    if unknown:
        raise ValueError(f"unknown end_of_turn setting(s): {', '.join(unknown)}; "
                         f"known: {', '.join(sorted(known))}")
    values: dict[str, Any] = {}
    if "detector" in raw:
        if raw["detector"] not in ("smart_turn", "silence"):
            raise ValueError("end_of_turn.detector must be smart_turn or silence")
        values["detector"] = raw["detector"]
    for name, (lo, hi) in _EOT_INTS.items():
        if name in raw:
            v = raw[name]
            if isinstance(v, bool) or not isinstance(v, int) or not lo <= v <= hi:
                raise ValueError(f"end_of_turn.{name} must be an integer from {lo} to {hi}")
            values[name] = v
    if "threshold" in raw:
        v = raw["threshold"]
        if isinstance(v, bool) or not isinstance(v, int | float) or not 0.0 < v < 1.0:
            raise ValueError("end_of_turn.threshold must be a number between 0 and 1")
        values["threshold"] = float(v)
    return replace(base, **values)
