"""The system prompt of a reply: one pure builder for every path (voice sessions of
each transport, ``/api/chat``, ``/api/chat/voice``, ``/api/v1/chat/query``).

Precedence: the prompt the request or session names (a client's ``system_prompt``)
> the conversation's template > the assistant's template > the assistant's prompt >
the configured prompt. ``{placeholders}`` are filled from the template's defaults and
the owner's ``template_variables``, plus ``{assistant_name}``; a missing one becomes
empty, and a prompt with literal braces that are not placeholders is used as it is.
"""

from __future__ import annotations

import string
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol


@dataclass(frozen=True, slots=True)
class Template:
    name: str
    display_name: str
    description: str
    system_prompt: str
    variables: tuple[str, ...]
    defaults: Mapping[str, str] = field(default_factory=dict)

    def summary(self, index: int) -> dict[str, Any]:
        return {"id": f"template_{index}", "name": self.name,
                "display_name": self.display_name, "description": self.description}


TEMPLATES: tuple[Template, ...] = (
    Template("standard_assistant", "Standard Assistant", "A general-purpose AI assistant",
             "You are a helpful AI assistant named {assistant_name}. Be concise, accurate, "
             "and helpful in your responses. {additional_instructions}",
             ("additional_instructions",)),
    Template("expert_assistant", "Expert Assistant",
             "An expert-level AI assistant for specialized topics",
             "You are {assistant_name}, an expert in {domain}. Give precise, well-reasoned "
             "answers, state your assumptions, and say so when you are unsure. "
             "{additional_instructions}",
             ("domain", "additional_instructions"), {"domain": "the topic at hand"}),
    Template("customer_support_assistant", "Customer Support",
             "An assistant specialized in customer support interactions",
             "You are {assistant_name}, a friendly customer support agent for "
             "{company_name}. Be patient and polite, answer from the facts you are given, "
             "and offer to escalate when you cannot help. {additional_instructions}",
             ("company_name", "additional_instructions"), {"company_name": "our company"}),
)
TEMPLATE_BY_NAME = {t.name: t for t in TEMPLATES}


class PromptOwner(Protocol):
    """What an assistant or a conversation (the store's rows) says about the prompt."""

    @property
    def template_name(self) -> str | None: ...

    @property
    def template_variables(self) -> Mapping[str, Any] | None: ...


@dataclass(frozen=True, slots=True)
class PromptSource:
    """An assistant's (or a conversation's) prompt settings, detached from the store."""

    name: str | None = None  # None: the configured assistant name (the default assistant)
    system_prompt: str = ""
    template_name: str | None = None
    template_variables: Mapping[str, Any] = field(default_factory=dict)

    @classmethod
    def of(cls, owner: PromptOwner, *, name: str | None = None,
           system_prompt: str = "") -> PromptSource:
        return cls(name, system_prompt, owner.template_name,
                   dict(owner.template_variables or {}))


class _Blank(dict[str, str]):
    def __missing__(self, key: str) -> str:
        return ""


def render(template: str, variables: Mapping[str, Any]) -> str:
    """Fill ``{name}`` placeholders (missing ones become empty). A prompt with literal
    braces that are not placeholders is used as it is."""
    try:
        text = string.Formatter().vformat(template, (), _Blank(
            {k: str(v) for k, v in variables.items()}))
    except (IndexError, ValueError, AttributeError, KeyError):
        return template
    return " ".join(text.split())


def system_prompt(default: str, assistant_name: str, *, requested: str | None = None,
                  assistant: PromptSource | None = None,
                  conversation: PromptOwner | None = None) -> str:
    """The system prompt (see the module's precedence). ``default`` and
    ``assistant_name``: the configured ones."""
    base = {"assistant_name": (assistant.name if assistant else None) or assistant_name}
    if requested and requested.strip():
        return render(requested, base)
    for owner in (conversation, assistant):
        if owner is not None and owner.template_name in TEMPLATE_BY_NAME:
            t = TEMPLATE_BY_NAME[owner.template_name]
            return render(t.system_prompt, {**base, **t.defaults,
                                            **(owner.template_variables or {})})
    if assistant is not None and assistant.system_prompt.strip():
        return render(assistant.system_prompt, {**base, **assistant.template_variables})
    return render(default, base)


class AssistantLike(PromptOwner, Protocol):
    @property
    def id(self) -> str: ...

    @property
    def name(self) -> str: ...

    @property
    def system_prompt(self) -> str: ...


def assistant_source(assistant: AssistantLike | None,
                     default_id: str = "default") -> PromptSource | None:
    """An assistant row's prompt settings (the default assistant goes by the configured
    name)."""
    if assistant is None:
        return None
    name = assistant.name if assistant.id != default_id else None
    return PromptSource.of(assistant, name=name, system_prompt=assistant.system_prompt or "")
