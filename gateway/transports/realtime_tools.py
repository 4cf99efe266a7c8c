"""The client's function tools on ``/v1/realtime``: what a ``session.update`` (or a
``response.create``) declares becomes the reply engine's client tools, and the
``function_call`` / ``function_call_output`` items the client adds become the history's
tool call and tool result messages.

A call of one of these tools ends the reply with a ``function_call`` item (rendered in
``realtime_render``); the client runs it, adds its ``function_call_output`` and asks for
a ``response.create``, which continues the conversation through the same engine. The
assistant's own tools (knowledge base, webhooks) still run inside the gateway.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from gateway.protocol.realtime import Item
from gateway.providers.base import Message, ToolCall, ToolSpec

EMPTY_PARAMETERS: Mapping[str, Any] = {"type": "object", "properties": {}}
NO_TOOL_CALLS = ("this gateway's LLM cannot call functions: the session's tools are kept "
                 "but will never be called. Configure a tool-capable LLM (llm.provider = "
                 '"openai" against OpenAI, vLLM, llama.cpp server or Ollama) to use them.')


def client_tools(tools: Iterable[Any], choice: Any) -> tuple[tuple[ToolSpec, ...], str | None]:
    """The function tools offered to the LLM and the ``ChatRequest.tool_choice``.
    ``tool_choice: "none"`` offers none."""
    if choice == "none":
        return (), None
    specs = tuple(ToolSpec(str(t["name"]), str(t.get("description") or ""),
                           t.get("parameters") or EMPTY_PARAMETERS)
                  for t in tools if isinstance(t, dict) and t.get("type", "function") ==
                  "function" and isinstance(t.get("name"), str) and t["name"])
    if isinstance(choice, dict):  # {"type": "function", "name": "…"} (GA and beta alike)
        name = choice.get("name") or (choice.get("function") or {}).get("name")
        return specs, str(name) if name else None
    return specs, "required" if choice == "required" else None


def history_message(item: Item, items: Iterable[Item]) -> Message | None:
    """A client's ``function_call`` or ``function_call_output`` item as a history message
    (None for other items)."""
    if item.type == "function_call_output":
        name = next((i.name for i in items if i.type == "function_call"
                     and i.call_id == item.call_id), None)
        return Message("tool", item.output or "", tool_call_id=item.call_id, name=name)
    if item.type == "function_call" and item.call_id and item.name:
        raw = item.arguments or ""
        try:
            decoded = json.loads(raw) if raw.strip() else {}
        except ValueError:
            decoded = {}
        arguments = decoded if isinstance(decoded, dict) else {}
        return Message("assistant", "", tool_calls=(ToolCall(item.call_id, item.name,
                                                              arguments, raw),))
    return None


def awaits_results(history: Sequence[Message]) -> bool:
    """The history ends with tool results: a ``response.create`` continues from them."""
    return bool(history) and history[-1].role == "tool"
