"""Checking a settings override (an assistant's ``turn_taking`` JSON, a config section)
key by key: one set of rules and one wording of errors for every section. Pure.

The caller names the section, its known keys and the bounds of each simple value; what
is not simple (a list of phrases) it checks itself from the raw mapping.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True, slots=True)
class Rules:
    section: str  # prefixes every message: "interruptions.min_words must be ..."
    known: frozenset[str]
    ints: Mapping[str, tuple[int, int]] = field(default_factory=dict)  # inclusive
    numbers: Mapping[str, tuple[float, float]] = field(default_factory=dict)  # inclusive
    choices: Mapping[str, tuple[str, ...]] = field(default_factory=dict)


def rules(section: str, known: Iterable[str], **kinds: Any) -> Rules:
    return Rules(section, frozenset(known), **kinds)


def parse(raw: Mapping[str, Any], r: Rules) -> dict[str, Any]:
    """The simple values of ``raw``, checked. Raises ValueError with a message fit for a
    client: an unknown key (listing the known ones) or a value out of bounds."""
    unknown = sorted(set(raw) - r.known)
    if unknown:
        raise ValueError(f"unknown {r.section} setting(s): {', '.join(unknown)}; "
                         f"known: {', '.join(sorted(r.known))}")
    out: dict[str, Any] = {}
    for name, options in r.choices.items():
        if name in raw:
            if raw[name] not in options:
                raise ValueError(f"{r.section}.{name} must be {' or '.join(options)}")
            out[name] = raw[name]
    for name, (lo, hi) in r.ints.items():
        if name in raw:
            v = raw[name]
            if isinstance(v, bool) or not isinstance(v, int) or not lo <= v <= hi:
                raise ValueError(f"{r.section}.{name} must be an integer from {lo} to {hi}")
            out[name] = v
    for name, (flo, fhi) in r.numbers.items():
        if name in raw:
            v = raw[name]
            if isinstance(v, bool) or not isinstance(v, int | float) or not flo <= v <= fhi:
                raise ValueError(f"{r.section}.{name} must be a number from {flo:g} to {fhi:g}")
            out[name] = float(v)
    return out
