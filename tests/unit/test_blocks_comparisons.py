"""Block Kit of comparisons and Publish buttons: content, escaping, and Slack's limits with
1,000 cases on each side (SPEC §4, §9)."""

from __future__ import annotations

import json
from dataclasses import dataclass, replace

from bot import blocks
from bot.comparing import compare_versions
from bot.repeats import CaseSummary
from bot.retell import TestRunStatus
from bot.suite import Engine
from bot.testing.slack import block_kit_violation

from ..helpers import FakeRun, done

A = Engine("retell-llm", "llm_abc", 3)
B = Engine("retell-llm", "llm_abc", 4)
EVIL = "<!channel> <@U1> & <https://evil.example|click>"


def side(outcomes: dict[str, TestRunStatus], why: str = "") -> list[CaseSummary]:
    return [
        CaseSummary(
            case_id, f"Case {case_id}", (status,), (why,) if why and status != "pass" else ()
        )
        for case_id, status in outcomes.items()
    ]


def group(
    a: dict[str, TestRunStatus], b: dict[str, TestRunStatus], *, why: str = "", **lead: object
) -> blocks.VersionsGroup:
    a_run = done(engine=A, passed=sum(s == "pass" for s in a.values()), total=len(a), **lead)
    b_run = done(id=8, engine=B, passed=sum(s == "pass" for s in b.values()), total=len(b))
    comparison = compare_versions(side(a), side(b, why))
    return blocks.VersionsGroup([a_run, b_run], B, comparison)


def test_a_thousand_regressions_with_long_reasons_fit_slacks_limits() -> None:
    ids = [f"tc_{n}" for n in range(1000)]
    view = group(dict.fromkeys(ids, "pass"), dict.fromkeys(ids, "fail"), why=EVIL * 40)
    message = blocks.compare_result(view)
    assert block_kit_violation(message.text, message.blocks) is None
    text = json.dumps(message.blocks, ensure_ascii=False)
    assert "<!channel>" not in text and "&lt;!channel&gt;" in text
    assert "1000 regressed, 0 fixed" in message.text
    assert "…and 985 more: *Show failures* lists every one." in text


def test_the_verdict_names_regressions_fixes_and_a_failed_gate() -> None:
    a = {"tc_1": "pass", "tc_2": "fail", "tc_3": "pass"}
    b = {"tc_1": "fail", "tc_2": "pass", "tc_3": "pass"}
    assert blocks.comparisons.verdict(group(a, b)) == "❌ v4: 1 regression, 1 fixed"
    b = {"tc_1": "pass", "tc_2": "pass", "tc_3": "pass"}
    assert blocks.comparisons.verdict(group(a, b)) == "✅ v4: no regressions, 1 fixed"
    b = {"tc_1": "pass", "tc_2": "fail", "tc_3": "pass"}
    gated = group(a, b, min_pass=95.0)
    assert blocks.comparisons.verdict(gated) == "❌ v4: no regressions; gate 95% failed"
    assert not gated.green and group(a, b).green


def test_a_side_whose_batch_could_not_be_created_is_said_not_compared() -> None:
    a_run = done(engine=A)
    b_run = replace(done(id=8, engine=B), state="failed", error="Retell refused (402)")
    view = blocks.VersionsGroup([a_run, b_run], B, None)
    message = blocks.compare_result(view)
    assert "could not be created: Retell refused (402)" in json.dumps(message.blocks)
    assert block_kit_violation(message.text, message.blocks) is None


def test_the_status_shows_a_bar_per_version() -> None:
    a_run = replace(done(engine=A), state="running", passed=10, failed=0, errored=0)
    b_run = replace(done(id=8, engine=B), state="running", passed=2, failed=1, errored=0)
    message = blocks.compare_status(blocks.VersionsGroup([a_run, b_run], B, None))
    text = json.dumps(message.blocks, ensure_ascii=False)
    assert "`llm_abc@3` `▓▓░░░░░░░░` 10/40" in text
    assert "`llm_abc@4` `░░░░░░░░░░` 3/40" in text
    assert block_kit_violation(message.text, message.blocks) is None


@dataclass(frozen=True)
class Draft:
    agent_id: str
    name: str
    version: int


def test_publish_buttons_name_agent_and_version_and_stay_within_limits() -> None:
    drafts = [Draft(f"agent_{n}", f"Agent {n} {EVIL}" * 5, n) for n in range(8)]
    message = blocks.with_publish(
        blocks.result_message(FakeRun(state="complete")), blocks.publish_actions(7, B, drafts)
    )
    assert block_kit_violation(message.text, message.blocks) is None
    actions = [b for b in message.blocks if b["type"] == "actions"][-1]
    assert len(actions["elements"]) == blocks.publishing.PUBLISH_BUTTONS
    first = actions["elements"][0]
    assert first["action_id"] == "publish_agent:0"
    assert blocks.read_press(first["value"]) == blocks.PublishPress(7, "agent_0", 0)
    assert "version 0 (answers with llm_abc@4) of the agent" in first["confirm"]["text"]["text"]
    assert message.blocks[-1]["type"] == "context", "the footer stays last"
    assert "…and 3 more agents" in json.dumps(message.blocks, ensure_ascii=False)


def test_a_forged_publish_value_reads_as_nothing() -> None:
    for value in ("", "7", "{}", '{"run": "x", "agent": "a", "version": 1}', '{"run": 1}', "[1]"):
        assert blocks.read_press(value) is None
    assert blocks.read_press('{"run": 1, "agent": "", "version": 1}') is None
    assert blocks.read_press('{"run": 1, "agent": "a", "version": -1}') is None
