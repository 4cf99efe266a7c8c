"""Replays the seed-example fixtures (``tests/data/seeds/*.json``) against a gateway.

``seed``, ``title``, ``example`` (what the seed shows), ``adaptation`` (how the fixture
differs from it, when it cannot work literally) and ``gateway`` (a special gateway it
needs) describe a fixture; the rest is one request (or ``steps``, a list of them, for
a flow such as OAuth):

``method``, ``path``, ``query``, ``headers``; the body as ``body`` (JSON), ``raw_body``
(sent as it is), ``form`` (urlencoded) or ``multipart`` (``{"fields": {...}, "files":
{"audio": "<WAV in tests/data>"}}``); ``repeat`` (send it n times, check the last);
``websocket`` (a URL: connect, check the first message instead of an HTTP answer).
``{name}`` in any string is a variable of the run (keys, ids made by the set-up, values
saved by earlier steps); an unknown name is an error, so a typo cannot pass.

``response``: ``status``; ``content_type`` (prefix); ``fields`` (path -> JSON type, e.g.
``"documents[].relevance": "number"``, ``"url": "string|null"``; every listed path
must exist); ``equals`` (path -> value); ``min_items`` (path -> n); ``headers`` (name ->
exact value); ``header_present``; ``location_starts`` (a redirect's target);
``html_contains``; ``events`` for Server-Sent Events: ``first``, ``last``,
``sequences`` (each a list of event names that must occur in that order) and
``fields`` (event name -> path -> type, checked on every event of that name).

``save`` (in a step): ``{"var": {"json": path} | {"html_input": name} |
{"location_query": name}}`` for the next steps.
"""

from __future__ import annotations

import asyncio
import json
import re
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import websockets
from chat_helpers import parse_sse

DATA = Path(__file__).resolve().parents[1] / "data"
SEEDS = DATA / "seeds"
_VAR = re.compile(r"\{([a-z][a-z0-9_]*)\}")
# Keys of a fixture (or step) that are not part of its request.
_NOT_REQUEST = frozenset({"seed", "title", "example", "adaptation", "gateway", "response",
                          "save"})
_TYPES: dict[str, Any] = {
    "string": lambda v: isinstance(v, str),
    "integer": lambda v: isinstance(v, int) and not isinstance(v, bool),
    "number": lambda v: isinstance(v, int | float) and not isinstance(v, bool),
    "boolean": lambda v: isinstance(v, bool),
    "array": lambda v: isinstance(v, list),
    "object": lambda v: isinstance(v, dict),
    "null": lambda v: v is None,
}


def load(seed: str) -> list[tuple[str, dict[str, Any]]]:
    """The fixtures of one seed document (``000``…``003``), in file-name order."""
    return [(p.name, json.loads(p.read_text())) for p in sorted(SEEDS.glob(f"{seed}_*.json"))]


def fill(value: Any, env: dict[str, Any]) -> Any:
    """``value`` with its ``{name}`` placeholders replaced from ``env``."""
    if isinstance(value, dict):
        return {fill(k, env): fill(v, env) for k, v in value.items()}
    if isinstance(value, list):
        return [fill(v, env) for v in value]
    if not isinstance(value, str):
        return value
    whole = _VAR.fullmatch(value)
    if whole:  # a lone placeholder keeps its value's type (a number, bytes...)
        return env[whole.group(1)]
    return _VAR.sub(lambda m: str(env[m.group(1)]), value)


# --- checking a response -------------------------------------------------------------


def values_at(doc: Any, path: str) -> list[Any] | None:
    """Every value at ``path`` (``a.b``, ``a[].b``, ``[]`` for a top-level array);
    None when a key on the way is missing."""
    found = [doc]
    for part in filter(None, path.split(".")):
        name, each = (part[:-2], True) if part.endswith("[]") else (part, False)
        step: list[Any] = []
        for item in found:
            if name:
                if not isinstance(item, dict) or name not in item:
                    return None
                item = item[name]
            if each:
                if not isinstance(item, list):
                    return None
                step.extend(item)
            else:
                step.append(item)
        found = step
    return found


def check_fields(doc: Any, spec: dict[str, str], where: str) -> list[str]:
    problems = []
    for path, types in spec.items():
        values = values_at(doc, path)
        if values is None:
            problems.append(f"{where}: missing {path}")
            continue
        allowed = types.split("|")
        for v in values:
            if not any(_TYPES[t](v) for t in allowed):
                problems.append(f"{where}: {path} is {json.dumps(v)[:80]}, not {types}")
    return problems


def check_events(events: list[tuple[str, dict[str, Any]]], spec: dict[str, Any]) -> list[str]:
    names = [n for n, _ in events]
    problems = []
    if not names:
        return ["no Server-Sent Events"]
    if "first" in spec and names[0] != spec["first"]:
        problems.append(f"first event is {names[0]}, not {spec['first']}")
    if "last" in spec and names[-1] != spec["last"]:
        problems.append(f"last event is {names[-1]}, not {spec['last']}")
    for sequence in spec.get("sequences", []):
        rest = iter(names)
        if not all(any(n == wanted for n in rest) for wanted in sequence):
            problems.append(f"events {sequence} not in this order in {_squeeze(names)}")
    for name, fields in spec.get("fields", {}).items():
        for data in (d for n, d in events if n == name):
            problems += check_fields(data, fields, f"event {name}")
    return problems


def _squeeze(names: list[str]) -> list[str]:
    """Event names with repeats collapsed (``token`` ×40 is one entry)."""
    return [n for i, n in enumerate(names) if i == 0 or names[i - 1] != n]


@dataclass
class Outcome:
    status: int
    headers: httpx.Headers
    text: str
    json: Any = None
    events: list[tuple[str, dict[str, Any]]] = field(default_factory=list)


def check(outcome: Outcome, spec: dict[str, Any], env: dict[str, Any]) -> list[str]:
    spec = fill(spec, env)
    problems: list[str] = []
    if outcome.status != spec.get("status", 200):
        return [f"status {outcome.status}, not {spec.get('status', 200)}: {outcome.text[:300]}"]
    ctype = outcome.headers.get("content-type", "")
    if "content_type" in spec and not ctype.startswith(spec["content_type"]):
        problems.append(f"content type {ctype!r}, not {spec['content_type']}")
    if "Traceback" in outcome.text:
        problems.append("a stack trace in the response")
    problems += check_fields(outcome.json, spec.get("fields", {}), "body")
    for path, expected in spec.get("equals", {}).items():
        got = values_at(outcome.json, path)
        if got is None or any(v != expected for v in got):
            problems.append(f"body: {path} is {got}, not {expected!r}")
    for path, n in spec.get("min_items", {}).items():
        got = values_at(outcome.json, path)
        if got is None or len(got) != 1 or not isinstance(got[0], list) or len(got[0]) < n:
            problems.append(f"body: {path} should have at least {n} items")
    for name, value in spec.get("headers", {}).items():
        if outcome.headers.get(name) != str(value):
            problems.append(f"header {name} is {outcome.headers.get(name)!r}, not {value!r}")
    problems += [f"no {name} header" for name in spec.get("header_present", [])
                 if name not in outcome.headers]
    location = outcome.headers.get("location", "")
    if "location_starts" in spec and not location.startswith(spec["location_starts"]):
        problems.append(f"redirect to {location!r}, not {spec['location_starts']}…")
    if "html_contains" in spec and spec["html_contains"] not in outcome.text:
        problems.append(f"the page does not show {spec['html_contains']!r}")
    if "events" in spec:
        problems += check_events(outcome.events, spec["events"])
    return problems


# --- sending a request ---------------------------------------------------------------


class _Inputs(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.values: dict[str, str] = {}

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        found = dict(attrs)
        if tag == "input" and found.get("name"):
            self.values[str(found["name"])] = found.get("value") or ""


def saved(outcome: Outcome, spec: dict[str, Any]) -> Any:
    if "json" in spec:
        values = values_at(outcome.json, spec["json"])
        return values[0] if values else None
    if "html_input" in spec:
        page = _Inputs()
        page.feed(outcome.text)
        return page.values.get(spec["html_input"])
    query = parse_qs(urlsplit(outcome.headers.get("location", "")).query)
    return (query.get(spec["location_query"]) or [None])[0]


async def send(http: httpx.AsyncClient, req: dict[str, Any]) -> Outcome:
    kwargs: dict[str, Any] = {"params": req.get("query"), "headers": req.get("headers")}
    if "body" in req:
        kwargs["json"] = req["body"]
    elif "raw_body" in req:
        kwargs["content"] = req["raw_body"].encode()
    elif "form" in req:
        kwargs["data"] = req["form"]
    elif "multipart" in req:
        parts = req["multipart"]
        kwargs["data"] = parts.get("fields", {})
        kwargs["files"] = {name: (file, (DATA / file).read_bytes(), "audio/wav")
                           for name, file in parts.get("files", {}).items()}
    async with http.stream(req["method"], req["path"], **kwargs) as resp:
        text = (await resp.aread()).decode("utf-8", "replace")
    outcome = Outcome(resp.status_code, resp.headers, text)
    ctype = resp.headers.get("content-type", "")
    if ctype.startswith("application/json"):
        outcome.json = json.loads(text)
    elif ctype.startswith("text/event-stream"):
        outcome.events = parse_sse(text)
    return outcome


async def first_message(url: str, headers: dict[str, str] | None) -> Outcome:
    async with websockets.connect(url, additional_headers=headers or {}) as ws:
        message = await asyncio.wait_for(ws.recv(), 10)
    return Outcome(101, httpx.Headers(), str(message), json.loads(message))


async def run_step(http: httpx.AsyncClient, step: dict[str, Any],
                   env: dict[str, Any]) -> list[str]:
    req = fill({k: v for k, v in step.items() if k not in _NOT_REQUEST}, env)
    if "websocket" in req:
        outcome = await first_message(req["websocket"], req.get("headers"))
    else:
        for _ in range(int(req.get("repeat", 1)) - 1):
            earlier = await send(http, req)
            if earlier.status >= 300:
                return [f"repeat: an earlier request got {earlier.status}: {earlier.text}"]
        outcome = await send(http, req)
    problems = check(outcome, step.get("response", {}), env)
    for name, spec in step.get("save", {}).items():
        env[name] = saved(outcome, spec)
        if env[name] is None:
            problems.append(f"nothing to save as {name}")
    return problems


async def run_steps(base: str, fixture: dict[str, Any], env: dict[str, Any]) -> list[str]:
    """Replay a fixture's steps, saving into ``env``; the problems of the first bad step."""
    steps = fixture.get("steps") or [fixture]
    # A browser-like client: cookies kept, redirects shown rather than followed.
    async with httpx.AsyncClient(base_url=base, timeout=120, follow_redirects=False) as http:
        for i, step in enumerate(steps):
            problems = await run_step(http, step, env)
            if problems:
                prefix = f"step {i + 1}: " if len(steps) > 1 else ""
                return [prefix + p for p in problems]
    return []


async def replay(base: str, fixture: dict[str, Any], env: dict[str, Any]) -> list[str]:
    """Every problem found replaying one fixture (empty: it behaves as documented)."""
    return await run_steps(base, fixture, dict(env))  # saved values stay in the fixture
