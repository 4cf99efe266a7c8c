"""The kinds of function tool: the built-ins and HTTP webhooks, parsed from an assistant's
declarations. ``gateway.pipeline.tools`` runs them.

Built-ins: ``search_knowledge_base`` (the assistant's documents), ``get_current_datetime``,
and for phone calls ``end_call`` / ``transfer_call``, which also hand the transport a
signal (an ``events.Handoff``, emitted after the reply has been spoken).
A webhook tool POSTs its arguments as JSON to its URL and returns the JSON (or text) it
answers; arguments are checked against its JSON schema first.
"""

from __future__ import annotations

import json
import re
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import httpx
import jsonschema
from jsonschema.exceptions import SchemaError, best_match

from gateway.errors import GatewayError
from gateway.providers.base import Passage, ToolSpec

from .events import END_CALL, TRANSFER, Handoff

if TYPE_CHECKING:  # annotations only: config.py reads BUILTINS to check tools.enabled
    from gateway.config import ToolsConfig

NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")  # what the OpenAI API accepts
MAX_TIMEOUT_S = 60.0
MAX_DESCRIPTION = 1024
ERROR_BODY_CHARS = 200


class ToolFailure(GatewayError):
    """A call that cannot give a result; the model gets ``{"error": message}``."""


@dataclass(frozen=True, slots=True)
class ToolContext:
    """Who is calling: the session a call runs for."""

    assistant_id: str
    session_id: str = ""
    telephony: bool = False  # end_call / transfer_call are offered on phone calls only
    retrieve: Callable[[str, str], Awaitable[Sequence[Passage]]] | None = None


@dataclass(frozen=True, slots=True)
class Output:
    value: Any  # JSON-able, or text
    summary: str | None = None
    signal: Handoff | None = None  # for the transport, after the reply


Handler = Callable[[dict[str, Any], ToolContext], Awaitable[Output]]
HttpClient = Callable[[], Any]  # returns the shared httpx.AsyncClient


@dataclass(frozen=True, slots=True)
class Tool:
    spec: ToolSpec
    handler: Handler
    timeout_s: float
    validator: Any  # a jsonschema validator of the arguments
    telephony_only: bool = False

    def check(self, arguments: dict[str, Any]) -> str | None:
        """Why the arguments do not fit the schema, or None."""
        error = best_match(self.validator.iter_errors(arguments))
        if error is None:
            return None
        where = "/".join(str(p) for p in error.absolute_path)
        return f"{where}: {error.message}" if where else str(error.message)


# --- built-ins -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Builtin:
    description: str
    parameters: dict[str, Any]
    make: Callable[[Mapping[str, Any], ToolsConfig], Handler]
    telephony_only: bool = False


def _params(required: Sequence[str] = (), **props: str) -> dict[str, Any]:
    return {"type": "object", "additionalProperties": False, "required": list(required),
            "properties": {k: {"type": "string", "description": v} for k, v in props.items()}}


async def _search(args: dict[str, Any], ctx: ToolContext) -> Output:
    if ctx.retrieve is None:
        raise ToolFailure("no knowledge base is available")
    passages = await ctx.retrieve(ctx.assistant_id, str(args["query"]))
    found = [{"title": p.title, "text": " ".join(p.text.split())} for p in passages]
    if not found:
        return Output({"passages": [], "note": "nothing found"}, "nothing found")
    titles = "; ".join(p["title"] for p in found if p["title"])
    return Output({"passages": found}, f"{len(found)} passage(s): {titles}".rstrip(": "))


def _make_datetime(_decl: Mapping[str, Any], cfg: ToolsConfig) -> Handler:
    async def run(args: dict[str, Any], ctx: ToolContext) -> Output:
        name = str(args.get("timezone") or cfg.timezone)
        try:
            tz = ZoneInfo(name)
        except (ZoneInfoNotFoundError, ValueError, OSError):
            raise ToolFailure(f"unknown time zone {name!r} (use an IANA name such as "
                              "Europe/Paris)") from None
        now = datetime.now(tz)
        spoken = f"{now:%A} {now.day} {now:%B %Y}, {now:%H:%M}"
        return Output({"datetime": now.isoformat(timespec="seconds"), "timezone": name,
                       "spoken": spoken}, f"{spoken} ({name})")

    return run


def _make_end_call(_decl: Mapping[str, Any], _cfg: ToolsConfig) -> Handler:
    async def run(args: dict[str, Any], ctx: ToolContext) -> Output:
        reason = str(args.get("reason") or "")
        return Output({"ok": True, "action": "end_call",
                       "note": "The call ends after your reply; say a short goodbye."},
                      "the call ends after this reply", Handoff(END_CALL, reason))

    return run


def _make_transfer(decl: Mapping[str, Any], _cfg: ToolsConfig) -> Handler:
    fixed = str(decl.get("destination") or "")  # declared: the model cannot pick another

    async def run(args: dict[str, Any], ctx: ToolContext) -> Output:
        destination = fixed or str(args.get("destination") or "")
        if not destination:
            raise ToolFailure("no destination to transfer the call to")
        reason = str(args.get("reason") or "")
        return Output({"ok": True, "action": "transfer", "destination": destination,
                       "note": "The call is transferred after your reply; tell the caller."},
                      f"transfer to {destination}",
                      Handoff(TRANSFER, reason, destination))

    return run


BUILTINS: dict[str, Builtin] = {
    "search_knowledge_base": Builtin(
        "Search this assistant's knowledge base; returns the passages that match.",
        _params(["query"], query="What to look up, in a few words"),
        lambda _d, _c: _search),
    "get_current_datetime": Builtin(
        "The current date and time.",
        _params(timezone="IANA time zone, e.g. Europe/Paris (default: the server's)"),
        _make_datetime),
    "end_call": Builtin(
        "End the phone call, after your reply, when the caller is done or asks to hang up.",
        _params(reason="Why the call ends"), _make_end_call, telephony_only=True),
    "transfer_call": Builtin(
        "Transfer the phone call to a person, after your reply.",
        _params(destination="Phone number or queue to transfer to",
                reason="Why the call is transferred"), _make_transfer, telephony_only=True),
}


def _builtin(decl: Mapping[str, Any], cfg: ToolsConfig) -> Tool:
    name = str(decl.get("name") or "")
    builtin = BUILTINS.get(name)
    if builtin is None:
        raise ToolFailure(f"unknown built-in tool {name!r} (known: {', '.join(BUILTINS)})")
    params = builtin.parameters
    if name == "transfer_call" and decl.get("destination"):
        params = _params(reason="Why the call is transferred")
    return Tool(ToolSpec(name, builtin.description, params), builtin.make(decl, cfg),
                cfg.timeout_s, jsonschema.Draft202012Validator(params),
                builtin.telephony_only)


# --- webhooks --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Webhook:
    name: str
    url: str
    timeout_s: float
    headers: dict[str, str]
    max_bytes: int

    async def __call__(self, http: Any, args: dict[str, Any], ctx: ToolContext) -> Output:
        headers = {**self.headers, "x-gateway-assistant-id": ctx.assistant_id,
                   "x-gateway-session-id": ctx.session_id}
        try:
            async with http.stream("POST", self.url, json=args, headers=headers,
                                   timeout=self.timeout_s) as resp:
                body = await _read_capped(resp, self.max_bytes)
        except httpx.TimeoutException:
            raise ToolFailure(f"{self.name} timed out after {self.timeout_s:g} s") from None
        except httpx.HTTPError as exc:
            raise ToolFailure(f"{self.name} could not be reached ({type(exc).__name__})") from None
        text = body.decode(resp.charset_encoding or "utf-8", errors="replace")
        if resp.status_code >= 400:
            detail = " ".join(text.split())[:ERROR_BODY_CHARS]
            raise ToolFailure(f"{self.name} returned HTTP {resp.status_code}"
                              + (f": {detail}" if detail else ""))
        if "json" in resp.headers.get("content-type", ""):
            try:
                return Output(json.loads(text))
            except ValueError:
                pass
        return Output(text)


async def _read_capped(resp: httpx.Response, limit: int) -> bytes:
    """At most ``limit`` bytes of the body: a huge answer is cut, not buffered whole."""
    out = bytearray()
    async for piece in resp.aiter_bytes():
        out += piece
        if len(out) >= limit:
            break
    return bytes(out[:limit])


def _webhook(decl: Mapping[str, Any], cfg: ToolsConfig, http: HttpClient) -> Tool:
    name = str(decl.get("name") or "")
    if not NAME.match(name):
        raise ToolFailure(f"webhook name {name!r} must be 1-64 letters, digits, _ or -")
    description = decl.get("description") or ""
    if not isinstance(description, str) or len(description) > MAX_DESCRIPTION:
        raise ToolFailure(f"{name}: description must be text of at most {MAX_DESCRIPTION}")
    params = decl.get("parameters") or {"type": "object", "properties": {}}
    validator = _schema_validator(name, params)
    url = decl.get("url")
    if not isinstance(url, str) or not url.startswith(("http://", "https://")):
        raise ToolFailure(f"{name}: url must be an http(s) URL")
    timeout = decl.get("timeout_s", cfg.timeout_s)
    if isinstance(timeout, bool) or not isinstance(timeout, int | float) \
            or not 0 < timeout <= MAX_TIMEOUT_S:
        raise ToolFailure(f"{name}: timeout_s must be a number in (0, {MAX_TIMEOUT_S:g}]")
    hook = Webhook(name, url, float(timeout), _headers(name, decl.get("headers")),
                   cfg.max_result_chars * 4 + 1024)

    async def run(args: dict[str, Any], ctx: ToolContext) -> Output:
        return await hook(http(), args, ctx)

    return Tool(ToolSpec(name, description, params), run, float(timeout), validator)


def _schema_validator(name: str, params: Any) -> Any:
    if not isinstance(params, dict) or params.get("type") != "object":
        raise ToolFailure(f"{name}: parameters must be a JSON schema of type object")
    try:
        cls = jsonschema.validators.validator_for(params,
                                                  default=jsonschema.Draft202012Validator)
        cls.check_schema(params)
        return cls(params)
    except SchemaError as exc:
        raise ToolFailure(f"{name}: parameters is not a valid JSON schema ({exc.message})"
                          ) from None
    except Exception:  # e.g. a "$schema" that is not a string
        raise ToolFailure(f"{name}: parameters is not a valid JSON schema") from None


def _headers(name: str, headers: Any) -> dict[str, str]:
    if headers is None:
        return {}
    if not isinstance(headers, dict) or not all(
            isinstance(k, str) and isinstance(v, str) and "\n" not in k + v and "\r" not in k + v
            for k, v in headers.items()):
        raise ToolFailure(f"{name}: headers must map names to single-line strings")
    return dict(headers)


# --- declarations ----------------------------------------------------------------------


def parse(items: Sequence[Any], cfg: ToolsConfig,
          http: HttpClient) -> tuple[list[Tool], list[str]]:
    """The usable tools of a declaration list, and what is wrong with the others."""
    tools: list[Tool] = []
    problems: list[str] = []
    for i, item in enumerate(items):
        try:
            tool = _one(item, cfg, http)
        except ToolFailure as exc:
            problems.append(f"tools[{i}]: {exc}")
            continue
        if any(t.spec.name == tool.spec.name for t in tools):
            problems.append(f"tools[{i}]: {tool.spec.name!r} is declared twice")
            continue
        tools.append(tool)
    return tools, problems


def _one(item: Any, cfg: ToolsConfig, http: HttpClient) -> Tool:
    if isinstance(item, str):  # a bare name: a built-in
        item = {"type": "builtin", "name": item}
    if not isinstance(item, dict):
        raise ToolFailure("each tool must be an object")
    kind = item.get("type", "builtin")
    if kind == "builtin":
        return _builtin(item, cfg)
    if kind == "webhook":
        return _webhook(item, cfg, http)
    raise ToolFailure(f"unknown tool type {kind!r} (builtin or webhook)")
