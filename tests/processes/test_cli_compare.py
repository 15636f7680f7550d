"""`retell-bot compare`, `--min-pass-rate` and `--publish-on-pass`: the real CLI process against
the Retell and Slack stand-ins (SPEC §9), in the style of `test_cli`.

The fixture's engine `llm_abc` is re-seeded with versions 0..4 (4 is the latest); a case is made
to regress on version 4 with `set_outcome(..., version=4)`.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

from bot.ci import ExitCode
from bot.testing.retell import FakeAgentVersion, FakeRetell
from bot.testing.slack import FakeSlack

from ..helpers import CHANNEL, ENGINE, top_level
from .test_cli import FAIL_WHY, FAST, cli, creates, read_junit

REGRESSED_WHY = "Version 4 hung up before confirming the booking."


def five_versions(retell: FakeRetell) -> None:
    retell.add_engine("retell-llm", ENGINE, versions=5)  # 0..4: 4 is the latest


def engines_created(retell: FakeRetell) -> list[int | None]:
    return [body["response_engine"].get("version") for body in creates(retell)]


def props(element: ET.Element) -> dict[str, str]:
    listed = element.find("properties")
    assert listed is not None
    return {p.get("name", ""): p.get("value", "") for p in listed.findall("property")}


# -- compare: exit codes -------------------------------------------------------------------------


async def test_compare_with_a_regression_exits_one_and_lists_it_first(
    retell: FakeRetell, tmp_path: Path
) -> None:
    five_versions(retell)
    retell.set_outcome("tc_2", "fail", REGRESSED_WHY, version=4)
    retell.set_outcome("tc_fail_1", "pass", version=4)

    done = await cli(
        "compare", f"{ENGINE}@3", f"{ENGINE}@4", "tc_1,tc_2,tc_fail_1", *FAST,
        retell=retell, cwd=tmp_path,
    )  # fmt: skip

    assert done.code == ExitCode.FAILED, done.err
    assert sorted(engines_created(retell)) == [3, 4], "one batch per version, same cases"
    assert {tuple(b["test_case_definition_ids"]) for b in creates(retell)} == {
        ("tc_1", "tc_2", "tc_fail_1")
    }
    rows = [r for r in done.out.splitlines() if r.startswith(("REGRESSED", "FIXED"))]
    assert rows[0].startswith("REGRESSED") and "Case 2" in rows[0] and "hung up" in rows[0]
    assert rows[1].startswith("FIXED") and "Refund request" in rows[1]
    assert "1 unchanged" in done.out
    assert "v4: 1 regression, 1 fixed" in done.out
    assert f"{ENGINE}@3: 66.7%" in done.out and f"{ENGINE}@4: 66.7%" in done.out


async def test_compare_without_regressions_exits_zero_even_with_a_case_still_failing(
    retell: FakeRetell, tmp_path: Path
) -> None:
    five_versions(retell)

    done = await cli(
        "compare", f"{ENGINE}@3", "tc_1", "tc_fail_1", *FAST, retell=retell, cwd=tmp_path
    )  # fmt: skip

    assert done.code == ExitCode.PASSED, done.err
    assert sorted(engines_created(retell)) == [3, 4], "B is the engine's latest"
    assert any(r.startswith("STILL FAILING") for r in done.out.splitlines())
    assert "v4: no regressions" in done.out


async def test_compare_whose_gate_fails_exits_one(retell: FakeRetell, tmp_path: Path) -> None:
    five_versions(retell)

    done = await cli(
        "compare", f"{ENGINE}@3", f"{ENGINE}@4", "tc_1", "tc_fail_1", "min_pass=90", *FAST,
        retell=retell, cwd=tmp_path,
    )  # fmt: skip

    assert done.code == ExitCode.FAILED, done.err
    assert "v4: no regressions" in done.out
    assert "gate 90%: failed (50.0%)" in done.out


async def test_compare_a_missing_version_is_retells_404_and_creates_nothing(
    retell: FakeRetell, tmp_path: Path
) -> None:
    five_versions(retell)

    done = await cli(
        "compare", f"{ENGINE}@3", f"{ENGINE}@9", "tc_1", *FAST, retell=retell, cwd=tmp_path
    )  # fmt: skip

    assert done.code == ExitCode.RETELL
    assert f"Retell has no version 9 of {ENGINE} (404)" in done.err
    assert creates(retell) == []


async def test_compare_with_itself_is_a_usage_error_and_creates_nothing(
    retell: FakeRetell, tmp_path: Path
) -> None:
    five_versions(retell)

    latest = await cli("compare", f"{ENGINE}@4", "tc_1", retell=retell, cwd=tmp_path)
    same = await cli("compare", f"{ENGINE}@2", f"{ENGINE}@2", "tc_1", retell=retell, cwd=tmp_path)

    assert latest.code == same.code == ExitCode.USAGE
    assert "already the latest version" in latest.err
    assert "with itself" in same.err
    assert creates(retell) == []


async def test_min_pass_given_twice_differently_is_a_usage_error(
    retell: FakeRetell, tmp_path: Path
) -> None:
    done = await cli(
        "run", ENGINE, "tc_1", "min_pass=90", "--min-pass-rate", "80", retell=retell, cwd=tmp_path
    )

    assert done.code == ExitCode.USAGE
    assert "disagree" in done.err
    assert creates(retell) == []


# -- run with a gate -----------------------------------------------------------------------------


async def test_run_with_a_held_gate_exits_zero_despite_a_failure(
    retell: FakeRetell, tmp_path: Path
) -> None:
    cases = ("tc_1", "tc_2", "tc_3", "tc_fail_1")
    held = await cli(
        "run", ENGINE, *cases, "--min-pass-rate", "75", *FAST, retell=retell, cwd=tmp_path
    )  # fmt: skip
    failed = await cli(
        "run", ENGINE, *cases, "--min-pass-rate", "80", *FAST, retell=retell, cwd=tmp_path
    )  # fmt: skip

    assert held.code == ExitCode.PASSED, held.err
    assert "gate 75%: held (75.0%)" in held.out
    assert failed.code == ExitCode.FAILED, failed.err
    assert "gate 80%: failed (75.0%)" in failed.out


# -- compare: JUnit and Slack --------------------------------------------------------------------


async def test_compare_junit_has_a_testcase_per_case_judged_on_b(
    retell: FakeRetell, tmp_path: Path
) -> None:
    five_versions(retell)
    retell.set_outcome("tc_2", "fail", REGRESSED_WHY, version=4)
    retell.set_outcome("tc_fail_1", "fail", FAIL_WHY)
    results = tmp_path / "compare.xml"

    done = await cli(
        "compare", f"{ENGINE}@3", f"{ENGINE}@4", "tc_1", "tc_2", "tc_fail_1",
        "--min-pass-rate", "50", "--junit", str(results), *FAST, retell=retell, cwd=tmp_path,
    )  # fmt: skip

    assert done.code == ExitCode.FAILED, done.err
    suite, cases = read_junit(results)
    assert {k: suite.get(k) for k in ("tests", "failures", "errors", "skipped")} == {
        "tests": "3", "failures": "2", "errors": "0", "skipped": "0",
    }  # fmt: skip
    assert {case.get("classname") for case in cases.values()} == {ENGINE}
    suite_props = props(suite)
    assert suite_props["version_a"] == f"{ENGINE}@3"
    assert suite_props["version_b"] == f"{ENGINE}@4"
    assert suite_props["pass_rate_a"] == "66.7%" and suite_props["pass_rate_b"] == "33.3%"
    assert suite_props["gate"] == "50%" and suite_props["gate_held"] == "false"
    regressed = cases["Case 2"].find("failure")
    assert regressed is not None and regressed.get("message") == REGRESSED_WHY
    assert props(cases["Case 2"])["change"] == "regressed"
    still = cases["Refund request"].find("failure")
    assert still is not None and still.get("message") == FAIL_WHY
    assert cases["Case 1"].find("failure") is None


async def test_compare_posts_the_comparison_to_slack_without_buttons(
    retell: FakeRetell, slack: FakeSlack, tmp_path: Path
) -> None:
    five_versions(retell)
    retell.set_outcome("tc_2", "fail", REGRESSED_WHY, version=4)

    done = await cli(
        "compare", f"{ENGINE}@3", f"{ENGINE}@4", "tc_1", "tc_2", "--post-to", CHANNEL, *FAST,
        retell=retell, slack=slack, cwd=tmp_path,
    )  # fmt: skip

    assert done.code == ExitCode.FAILED, done.err
    [posted] = top_level(slack)
    for batch_id in retell.batches:
        assert batch_id in posted.text
    shown = str(posted.blocks)
    assert "v4" in shown and "1 regression" in shown and "hung up" in shown
    assert not [b for b in posted.blocks if b["type"] == "actions"], "no buttons to act on"
    assert "retell-bot compare" in shown


async def test_run_posts_its_gate_to_slack(
    retell: FakeRetell, slack: FakeSlack, tmp_path: Path
) -> None:
    done = await cli(
        "run", ENGINE, "tc_1", "tc_fail_1", "--min-pass-rate", "50", "--post-to", CHANNEL,
        *FAST, retell=retell, slack=slack, cwd=tmp_path,
    )  # fmt: skip

    assert done.code == ExitCode.PASSED, done.err
    [posted] = top_level(slack)
    assert "gate 50%: held (50.0%)" in posted.text


# -- publishing ----------------------------------------------------------------------------------


def agents(retell: FakeRetell) -> None:
    """Support answers with v4 in its draft; Sales' draft answers with v3; Old is published."""
    five_versions(retell)
    v = lambda n, published=False: FakeAgentVersion("retell-llm", ENGINE, n, published)  # noqa: E731
    retell.add_agent("agent_support", "Support", [v(3, True), v(4)])
    retell.add_agent("agent_sales", "Sales", [v(3)])
    retell.add_agent("agent_old", "Old", [v(4, True)])


async def test_green_compare_publishes_exactly_the_tested_version(
    retell: FakeRetell, tmp_path: Path
) -> None:
    agents(retell)

    done = await cli(
        "compare", f"{ENGINE}@3", f"{ENGINE}@4", "tc_1", "--publish-on-pass", *FAST,
        retell=retell, cwd=tmp_path,
    )  # fmt: skip

    assert done.code == ExitCode.PASSED, done.err
    assert retell.publishes == [("agent_support", 1)], "the draft answering with v4, only"
    assert "Published Support (agent_support) version 1" in done.out


async def test_red_results_publish_nothing(retell: FakeRetell, tmp_path: Path) -> None:
    agents(retell)
    retell.set_outcome("tc_1", "fail", REGRESSED_WHY, version=4)

    compared = await cli(
        "compare", f"{ENGINE}@3", f"{ENGINE}@4", "tc_1", "--publish-on-pass", *FAST,
        retell=retell, cwd=tmp_path,
    )  # fmt: skip
    ran = await cli(
        "run", f"{ENGINE}@4", "tc_1", "--publish-on-pass", *FAST, retell=retell, cwd=tmp_path
    )  # fmt: skip

    assert compared.code == ran.code == ExitCode.FAILED
    assert retell.publishes == []
    assert "Not publishing" in compared.out and "Not publishing" in ran.out


async def test_green_run_publishes_its_pinned_version_and_says_when_there_is_no_draft(
    retell: FakeRetell, tmp_path: Path
) -> None:
    agents(retell)

    pinned = await cli(
        "run", f"{ENGINE}@3", "tc_1", "--publish-on-pass", *FAST, retell=retell, cwd=tmp_path
    )  # fmt: skip
    none = await cli(
        "run", f"{ENGINE}@2", "tc_1", "--publish-on-pass", *FAST, retell=retell, cwd=tmp_path
    )  # fmt: skip
    latest = await cli(
        "run", ENGINE, "tc_1", "--publish-on-pass", *FAST, retell=retell, cwd=tmp_path
    )  # fmt: skip

    assert pinned.code == none.code == latest.code == ExitCode.PASSED, pinned.err
    assert retell.publishes == [("agent_sales", 0)]
    assert "Nothing to publish" in none.out
    assert "names no version" in latest.out
