"""The extractive responder: reads back the best passage, deterministically."""

from __future__ import annotations

import pytest

from gateway.config import Config
from gateway.providers.base import BlockingLLM, ChatRequest, Message, Passage
from gateway.providers.extractive_llm import FALLBACK, ExtractiveLLM
from gateway.store.assistants import DEFAULT_ASSISTANT, ensure_default_assistant
from gateway.store.db import Database
from gateway.store.knowledge import SAMPLE_KNOWLEDGE
from gateway.store.retriever import Retriever


def request(*passages: Passage, question: str = "Tell me about barge-in") -> ChatRequest:
    return ChatRequest(
        [Message("system", "You are helpful."), Message("user", question)], passages=passages
    )


def passage(text: str, title: str = "T", score: float = 1.0) -> Passage:
    return Passage(title=title, text=text, source="s.md", score=score)


def test_protocol_and_from_config() -> None:
    llm = ExtractiveLLM.from_config(Config())
    assert isinstance(llm, ExtractiveLLM) and isinstance(llm, BlockingLLM)
    assert llm.name == "extractive"
    assert llm.max_sentences == 2


def test_no_passages_gives_the_fallback() -> None:
    llm = ExtractiveLLM()
    assert llm.answer(request()) == FALLBACK
    assert "".join(llm.generate(request())) == FALLBACK


def test_first_two_sentences_of_the_first_passage() -> None:
    llm = ExtractiveLLM()
    best = passage("One is first.  Two is second!\nThree is third? Four.")
    other = passage("Other passage.", score=99.0)  # the runtime's order wins, not the score
    assert llm.answer(request(best, other)) == "One is first. Two is second!"


@pytest.mark.parametrize(
    ("n", "expected"),
    [(1, "One."), (2, "One. Two."), (3, "One. Two. Three."), (10, "One. Two. Three.")],
)
def test_max_sentences(n: int, expected: str) -> None:
    assert ExtractiveLLM(max_sentences=n).answer(request(passage("One. Two. Three."))) == expected


def test_passage_without_sentence_end_is_read_whole() -> None:
    text = "a list of words with no full stop"
    assert ExtractiveLLM().answer(request(passage(f"  {text}  "))) == text


def test_decimal_numbers_do_not_split() -> None:
    assert ExtractiveLLM(max_sentences=1).answer(request(passage("It is 3.5 km. Next."))) == (
        "It is 3.5 km."
    )


def test_generate_streams_words_that_join_to_the_answer() -> None:
    llm = ExtractiveLLM()
    req = request(passage("Speak for longer than a quarter of a second. Then it stops. More."))
    tokens = list(llm.generate(req))
    assert "".join(tokens) == llm.answer(req)
    assert len(tokens) == len(llm.answer(req).split(" "))
    assert not tokens[0].startswith(" ")
    assert all(t.startswith(" ") for t in tokens[1:])


def test_deterministic() -> None:
    llm = ExtractiveLLM()
    req = request(passage("Same. Every. Time."))
    assert list(llm.generate(req)) == list(llm.generate(req))


async def test_with_the_sample_knowledge_base(database_url: str) -> None:
    db = Database(database_url)
    try:
        await db.migrate()
        await ensure_default_assistant(
            db, Config().replace(knowledge={"path": str(SAMPLE_KNOWLEDGE)}))
        question = "Tell me about barge-in"
        passages = await Retriever(db).search(DEFAULT_ASSISTANT, question, 3)
    finally:
        await db.close()
    answer = ExtractiveLLM().answer(request(*passages, question=question))
    assert answer == (
        "You can interrupt the assistant at any time. When you speak for longer than a "
        "quarter of a second while it is answering, the gateway stops the answer at once, "
        "tells the client to drop queued audio, and remembers only the part of the answer "
        "you actually heard."
    )
