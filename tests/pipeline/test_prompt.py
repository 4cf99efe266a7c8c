"""The one system-prompt builder: precedence, templates, variables, odd braces."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from gateway.pipeline.prompt import (
    TEMPLATE_BY_NAME,
    PromptSource,
    assistant_source,
    render,
    system_prompt,
)

DEFAULT = "You are {assistant_name}, a voice assistant."


@dataclass
class Row:  # what the store's Assistant and Conversation rows look like to the builder
    id: str = "a1"
    name: str = "Ada"
    system_prompt: str = ""
    template_name: str | None = None
    template_variables: dict[str, Any] = field(default_factory=dict)


def test_render_fills_blanks_and_keeps_literal_braces() -> None:
    assert render("Hi {name}, {missing}!", {"name": "Bo"}) == "Hi Bo, !"
    assert render("JSON looks like {\"a\": 1}", {}) == "JSON looks like {\"a\": 1}"
    assert render("a {0} b", {}) == "a {0} b"  # positional: not ours, left alone
    assert render("  spread\n over   lines ", {}) == "spread over lines"


def test_the_configured_prompt_with_the_configured_name() -> None:
    assert system_prompt(DEFAULT, "Gate") == "You are Gate, a voice assistant."
    default_row = assistant_source(Row(id="default", name="Default assistant"))
    assert system_prompt(DEFAULT, "Gate", assistant=default_row) == \
        "You are Gate, a voice assistant."


def test_an_assistant_prompt_and_its_variables() -> None:
    a = assistant_source(Row(system_prompt="I am {assistant_name} of {shop}.",
                             template_variables={"shop": "Bo's Bikes"}))
    assert system_prompt(DEFAULT, "Gate", assistant=a) == "I am Ada of Bo's Bikes."


def test_templates_win_over_the_assistant_prompt_and_the_conversation_over_both() -> None:
    a = assistant_source(Row(system_prompt="plain", template_name="customer_support_assistant",
                             template_variables={"company_name": "Acme"}))
    got = system_prompt(DEFAULT, "Gate", assistant=a)
    assert got.startswith("You are Ada, a friendly customer support agent for Acme.")
    conv = Row(template_name="expert_assistant", template_variables={"domain": "tides"})
    got = system_prompt(DEFAULT, "Gate", assistant=a, conversation=conv)
    assert got.startswith("You are Ada, an expert in tides.")
    defaults = system_prompt(DEFAULT, "Gate", conversation=Row(template_name="expert_assistant"))
    assert "an expert in the topic at hand" in defaults
    assert TEMPLATE_BY_NAME["expert_assistant"].defaults["domain"] == "the topic at hand"


def test_a_requested_prompt_wins_and_gets_the_name() -> None:
    a = assistant_source(Row(template_name="expert_assistant"))
    assert system_prompt(DEFAULT, "Gate", requested="Be {assistant_name}.", assistant=a) == \
        "Be Ada."
    assert system_prompt(DEFAULT, "Gate", requested="   ") == "You are Gate, a voice assistant."


def test_an_unknown_template_falls_through() -> None:
    src = PromptSource(name="Cy", system_prompt="Cy here.", template_name="no_such")
    assert system_prompt(DEFAULT, "Gate", assistant=src) == "Cy here."
    assert assistant_source(None) is None
