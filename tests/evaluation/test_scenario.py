"""Scenario sets: the shipped ones parse and meet the issue's counts; bad files say why."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.evaluation.scenario import ScenarioError, Voice, load, parse

ROOT = Path(__file__).resolve().parents[2]
SETS = ROOT / "eval" / "scenarios"


def test_default_set_has_what_issue_10_asks_for() -> None:
    s = load(SETS / "default.toml")
    questions = s.by_kind("question")
    assert len(questions) >= 20
    assert sum(q.unanswerable for q in questions) >= 3
    assert all(q.facts for q in questions if not q.unanswerable)
    assert len(s.by_kind("pause")) >= 10
    assert all(500 <= p.caller.pause_ms <= 700 for p in s.by_kind("pause"))
    assert not any(p.caller.apart for p in s.by_kind("pause"))
    assert s.by_kind("pause_apart") and all(p.caller.apart for p in s.by_kind("pause_apart"))
    assert len(s.by_kind("backchannel")) >= 5
    assert s.by_kind("barge_in") and s.by_kind("false_interruption")
    voices = {str(sc.caller.voice) for sc in s.scenarios}
    assert "piper:joe" in voices and len({v for v in voices if v.startswith("espeak")}) >= 4
    assert len(s.documents) >= 5 and all(d.content for d in s.documents)


def test_ci_set_has_one_of_each_kind() -> None:
    s = load(SETS / "ci.toml")
    assert {sc.kind for sc in s.scenarios} == {"question", "pause", "backchannel", "barge_in",
                                              "false_interruption"}
    assert any(q.unanswerable for q in s.by_kind("question"))


def test_facts_and_overlays_are_parsed(tmp_path: Path) -> None:
    data = {
        "question": [{"id": "q", "say": "How deep?", "facts": ["3.8", ["a", "re:b+"]],
                      "voice": "espeak:en-gb+f3", "speed": 1.2}],
        "pause": [{"say": "What time | do you open?", "pause_ms": 650}],
        "pause_apart": [{"say": "What time | do you open?"}],
        "barge_in": [{"say": "Prices?", "barge": "Stop, where are you?", "at_ms": 900,
                      "barge_facts": ["mill lane"]}],
        "false_interruption": [{"say": "Rules?", "noise": "burst"}],
    }
    s = parse(data, tmp_path / "x.toml", ())
    q, p, pa, b, f = s.scenarios
    assert q.facts == (("3.8",), ("a", "re:b+")) and q.caller.voice == Voice("espeak",
                                                                             "en-gb+f3")
    assert q.caller.speed == 1.2 and not q.unanswerable
    assert p.id == "pause-1" and p.caller.pause_ms == 650
    assert p.caller.clean_text == "What time do you open?" and not p.caller.apart
    assert pa.kind == "pause_apart" and pa.caller.apart and pa.caller.pause_ms == 600
    assert b.overlay is not None and b.overlay.text == "Stop, where are you?"
    assert b.at_ms == 900 and b.overlay_facts == (("mill lane",),)
    assert f.overlay is not None and f.overlay.noise == "burst"


@pytest.mark.parametrize(("data", "message"), [
    ({"question": [{"say": "Hi", "color": "red"}]}, "unknown keys"),
    ({"pause": [{"say": "no mark here"}]}, "marks its pause"),
    ({"question": [{"say": "Hi", "voice": "festival:kal"}]}, "ENGINE:NAME"),
    ({"question": [{"say": "Hi", "facts": ["re:("]}]}, "bad regular expression"),
    ({"question": [{"id": "a", "say": "Hi"}, {"id": "a", "say": "Ho"}]}, "duplicate id"),
    ({"question": [{"say": "Hi", "unanswerable": True, "facts": ["x"]}]}, "no facts"),
    ({"backchannel": [{"say": "Hi"}]}, "'backchannel'"),
    ({"false_interruption": [{"say": "Hi", "noise": "trumpet"}]}, "noise 'trumpet'"),
    ({"question": [{"say": "Hi", "speed": 5}]}, "speed"),
    ({}, "no scenarios"),
])
def test_bad_sets_name_the_problem(tmp_path: Path, data: dict, message: str) -> None:
    with pytest.raises(ScenarioError, match=message):
        parse(data, tmp_path / "bad.toml", ())


def test_unreadable_file_and_empty_knowledge_folder(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("question = [", "utf-8")
    with pytest.raises(ScenarioError, match=r"bad\.toml"):
        load(bad)
    (tmp_path / "kb").mkdir()
    empty = tmp_path / "empty.toml"
    empty.write_text('knowledge = "kb"\n[[question]]\nsay = "Hi"\n', "utf-8")
    with pytest.raises(ScenarioError, match=r"no \.md documents"):
        load(empty)
