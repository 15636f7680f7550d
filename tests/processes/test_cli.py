"""`retell-bot run` / `watch` for CI: the real CLI process against the Retell and Slack stand-ins.

Every exit code is produced by a child process the way a CI job runs it; the JUnit file is
parsed back, the Slack message read from the stand-in. A few conditions that need the stand-ins
to misbehave mid-run (an outage while polling, a Slack failure) run `bot.ci.execute` in-process.
The pure pieces (JUnit, console text, exit-code decisions, Slack rendering) are tested last.
"""

from __future__ import annotations

import io
import sys
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from bot import ci, console, junit
from bot.ci import ExitCode, Followed, Report, Request
from bot.repeats import CaseSummary, summarize
from bot.retell import BatchJob, TestRun
from bot.settings import CliSettings
from bot.suite import Engine
from bot.testing.retell import FakeRetell
from bot.testing.slack import FakeSlack

from ..bot_processes import run_cli, scrubbed_environment
from ..helpers import CHANNEL, ENGINE, top_level

FAST = ("--poll-seconds", "0.05")
FAIL_WHY = "The agent did not confirm the refund amount before ending the call."
ERROR_WHY = "The simulation could not finish: the engine did not reply within 30 seconds."


@dataclass
class Outcome:
    code: int
    out: str
    err: str


async def cli(
    *args: str,
    retell: FakeRetell | None,
    cwd: Path,
    slack: FakeSlack | None = None,
    env: dict[str, str] | None = None,
) -> Outcome:
    """`python -m bot.cli <args>` with a CI-like environment: only what the CLI needs."""
    values = {"RETELL_API_KEY": "key_test"}
    if retell is not None:
        values["RETELL_BASE_URL"] = retell.base_url
    if slack is not None:
        values |= {"SLACK_BOT_TOKEN": slack.bot_token, "SLACK_API_URL": slack.api_url}
    values |= env or {}
    environment = scrubbed_environment(**{k: v for k, v in values.items() if v})
    code, out, err = await run_cli(
        sys.executable, "-m", "bot.cli", *args, env=environment, cwd=cwd, timeout=30
    )
    return Outcome(code, out, err)


def read_junit(path: Path) -> tuple[ET.Element, dict[str, ET.Element]]:
    """The `<testsuite>` and its test cases by name."""
    root = ET.parse(path).getroot()
    assert root.tag == "testsuites"
    [suite] = root.findall("testsuite")
    return suite, {case.get("name", ""): case for case in suite.findall("testcase")}


def creates(retell: FakeRetell) -> list[Any]:
    return [r.body for r in retell.requests if r.path == "/create-batch-test"]


# -- the CLI as a process ------------------------------------------------------------------------


async def test_run_with_failures_writes_junit_and_posts_the_result(
    retell: FakeRetell, slack: FakeSlack, tmp_path: Path
) -> None:
    retell.set_outcome("tc_fail_1", "fail", FAIL_WHY)
    retell.set_outcome("tc_error_1", "error", ERROR_WHY)
    results = tmp_path / "reports" / "results.xml"

    done = await cli(
        "run", ENGINE, "tc_1", "tc_2", "tc_fail_1", "tc_error_1", *FAST,
        "--junit", str(results), "--post-to", CHANNEL,
        retell=retell, slack=slack, cwd=tmp_path,
    )  # fmt: skip

    assert done.code == ExitCode.FAILED, done.err
    assert creates(retell) == [
        {
            "response_engine": {"type": "retell-llm", "llm_id": ENGINE},
            "test_case_definition_ids": ["tc_1", "tc_2", "tc_fail_1", "tc_error_1"],
        }
    ]
    [batch_id] = retell.batches
    rows = done.out.splitlines()
    assert any(
        r.startswith("FAIL") and "Refund request" in r and "refund amount" in r for r in rows
    )
    assert any(r.startswith("ERROR") and "Angry caller" in r for r in rows)
    assert sum(r.startswith("PASS") for r in rows) == 2
    assert "4 test cases: 2 passed, 1 failed, 1 errored · 50.0% pass rate" in done.out
    assert f"Batch {batch_id} on {ENGINE}: complete" in done.out
    assert "\r" not in done.out, "not a terminal: plain progress lines, no redrawing"
    assert any("/4 · " in r for r in rows), "progress lines show completed/total"

    suite, cases = read_junit(results)
    assert {k: suite.get(k) for k in ("tests", "failures", "errors", "skipped")} == {
        "tests": "4", "failures": "1", "errors": "1", "skipped": "0",
    }  # fmt: skip
    assert float(suite.get("time", "-1")) >= 0
    assert set(cases) == {"Case 1", "Case 2", "Refund request", "Angry caller"}
    assert {case.get("classname") for case in cases.values()} == {ENGINE}
    failure = cases["Refund request"].find("failure")
    assert failure is not None and failure.get("message") == FAIL_WHY
    error = cases["Angry caller"].find("error")
    assert error is not None and error.get("message") == ERROR_WHY
    assert list(cases["Case 1"]) == [cases["Case 1"].find("properties")], "a pass has no verdict"

    [posted] = top_level(slack)
    for phrase in ("2 passed", "1 failed", "1 errored", "4 total", batch_id):
        assert phrase in posted.text
    assert not [b for b in posted.blocks if b["type"] == "actions"], "no buttons to act on"


async def test_all_passed_exits_zero_with_the_slash_command_grammar(
    retell: FakeRetell, tmp_path: Path
) -> None:
    done = await cli(
        "run", f"{ENGINE}@2", "tc_1,tc_2", '"case 3"', "tc_1", *FAST,
        retell=retell, cwd=tmp_path,
    )  # fmt: skip

    assert done.code == ExitCode.PASSED, done.err
    assert creates(retell) == [
        {
            "response_engine": {"type": "retell-llm", "llm_id": ENGINE, "version": 2},
            "test_case_definition_ids": ["tc_1", "tc_2", "tc_3"],
        }
    ]
    assert "3 test cases: 3 passed, 0 failed, 0 errored · 100.0% pass rate" in done.out
    assert done.err == ""


async def test_errors_without_failures_exit_three(retell: FakeRetell, tmp_path: Path) -> None:
    done = await cli("run", ENGINE, "tc_1 tc_error_1", *FAST, retell=retell, cwd=tmp_path)

    assert done.code == ExitCode.ERRORED, done.err
    assert "1 passed, 0 failed, 1 errored" in done.out


async def test_a_batch_that_never_completes_times_out(retell: FakeRetell, tmp_path: Path) -> None:
    retell.complete_never = True
    results = tmp_path / "results.xml"

    # 3 s: room for several polls on a busy machine, where the first alone took over 0.6 s.
    done = await cli(
        "run", ENGINE, "tc_1", "tc_2", "tc_3", *FAST, "--timeout-minutes", "0.05",
        "--junit", str(results), retell=retell, cwd=tmp_path,
    )  # fmt: skip

    assert done.code == ExitCode.TIMED_OUT, done.err
    [batch_id] = retell.batches
    assert retell.progress(batch_id).completed == 2, "it really was still running"
    assert "timed out after" in done.out and "with 2/3 done" in done.out
    suite, cases = read_junit(results)
    assert (suite.get("tests"), suite.get("skipped"), suite.get("failures")) == ("3", "1", "0")
    assert cases["Case 3"].find("skipped") is not None


async def test_retell_refusing_to_create_exits_five(retell: FakeRetell, tmp_path: Path) -> None:
    done = await cli("run", "llm_nope", "tc_1", *FAST, retell=retell, cwd=tmp_path)

    assert done.code == ExitCode.RETELL, done.err
    assert "Retell could not find the engine or one of the test cases (404)" in done.err
    assert "llm_nope not found" in done.err, "Retell's own words are passed on"
    assert retell.count("/create-batch-test") == 1 and not retell.batches


@pytest.mark.parametrize(
    ("args", "env", "said"),
    [
        (("run", "agent_123", "tc_1"), {}, "is an agent id"),
        (("run", ENGINE, "tc_1", "--post-to", CHANNEL), {}, "--post-to needs SLACK_BOT_TOKEN"),
        (("run", ENGINE, "tc_1", "--repeat", "9"), {}, "--repeat takes 1 to 5 runs"),
        (("run", ENGINE, "tc_1"), {"RETELL_API_KEY": ""}, "RETELL_API_KEY is required"),
        (("run", ENGINE), {}, "the following arguments are required: TESTS"),
        (("watch", "<@U123>"), {}, "not a batch id"),
    ],
    ids=["engine", "slack-token", "repeat", "retell-key", "no-tests", "batch-id"],
)
async def test_bad_usage_exits_two_and_creates_nothing(
    retell: FakeRetell, tmp_path: Path, args: tuple[str, ...], env: dict[str, str], said: str
) -> None:
    done = await cli(*args, retell=retell, cwd=tmp_path, env=env)

    assert done.code == ExitCode.USAGE, done.err
    assert said in done.err
    assert not retell.batches
    assert retell.count("/create-batch-test") == 0


async def test_watch_follows_a_batch_created_elsewhere(retell: FakeRetell, tmp_path: Path) -> None:
    engine = {"type": "retell-llm", "llm_id": ENGINE}
    batch_id = retell.create_batch_directly(engine, ["tc_1", "tc_fail_1"], duration=0.3)
    results = tmp_path / "results.xml"

    done = await cli("watch", batch_id, *FAST, "--junit", str(results), retell=retell, cwd=tmp_path)

    assert done.code == ExitCode.FAILED, done.err
    assert retell.count("/create-batch-test") == 0, "watching creates nothing"
    assert f"Watching batch {batch_id} on {ENGINE} (2 test cases)" in done.out
    suite, cases = read_junit(results)
    assert (suite.get("tests"), suite.get("failures")) == ("2", "1")
    assert cases["Refund request"].find("failure") is not None


async def test_repeat_flags_a_flaky_case_and_posts_one_thread(
    retell: FakeRetell, slack: FakeSlack, tmp_path: Path
) -> None:
    retell.script_outcomes("tc_2", [("pass", None), ("fail", "Flaky: hung up"), ("pass", None)])
    results = tmp_path / "results.xml"

    done = await cli(
        "run", ENGINE, "tc_1", "tc_2", "tc_fail_1", "--repeat", "3", *FAST,
        "--junit", str(results), "--post-to", CHANNEL, retell=retell, slack=slack, cwd=tmp_path,
    )  # fmt: skip

    assert done.code == ExitCode.FAILED, done.err
    assert len(creates(retell)) == 3 and len(retell.batches) == 3
    table = [line.split() for line in done.out.splitlines()]
    statuses = [row[:2] for row in table if row and row[0] in ("PASS", "FAIL", "FLAKY")]
    assert statuses == [["FAIL", "0/3"], ["FLAKY", "2/3"], ["PASS", "3/3"]], "failures first"
    assert "3 test cases over 3 runs: 1 passed every run, 1 flaky, 1 failed" in done.out

    suite, cases = read_junit(results)
    assert [c.get("name") for c in suite.findall("testcase")] == [
        "Refund request", "Case 2", "Case 1",
    ]  # fmt: skip
    flaky = cases["Case 2"].find("failure")
    assert flaky is not None and flaky.get("message") == "Flaky: hung up"
    assert (flaky.text or "").startswith("FLAKY: Failed 1 of 3 runs")

    [summary] = top_level(slack)
    for phrase in ("5 passed", "4 failed", "0 errored", "9 total", "1 flaky", *retell.batches):
        assert phrase in summary.text
    replies = slack.thread(CHANNEL, summary.ts)
    assert len(replies) == 3
    assert {batch for batch in retell.batches if any(batch in r.text for r in replies)} == set(
        retell.batches
    ), "each batch's own result is in the thread"


# -- in-process: conditions the stand-ins switch on mid-run --------------------------------------


def terminal() -> console.Terminal:
    return console.Terminal(io.StringIO(), io.StringIO())


def settings_for(retell: FakeRetell, **values: Any) -> CliSettings:
    base: dict[str, Any] = {
        "retell_api_key": "key_test",
        "retell_base_url": retell.base_url,
        "retell_max_retries": 0,
        "poll_initial_seconds": 0.05,
        "_env_file": None,
    }
    return CliSettings(**(base | values))


def text_of(shown: console.Terminal) -> tuple[str, str]:
    assert isinstance(shown.out, io.StringIO) and isinstance(shown.err, io.StringIO)
    return shown.out.getvalue(), shown.err.getvalue()


@pytest.mark.parametrize(
    ("request_", "values", "expected", "said"),
    [
        (
            Request("run", (ENGINE, "tc_1")),
            {"retell_api_key": "key_wrong"},
            ExitCode.RETELL,
            "Retell rejected the API key (401)",
        ),
        (
            Request("run", (ENGINE, '"Refund requets"')),
            {"retell_api_key": "key_wrong"},
            ExitCode.RETELL,
            "Retell rejected the API key (401)",
        ),
        (
            Request("watch", ("test_case_batch_job_nope",)),
            {},
            ExitCode.RETELL,
            "could not find the batch test_case_batch_job_nope",
        ),
        (
            Request("run", (ENGINE, '"Refund requets"', "tc_1")),
            {},
            ExitCode.USAGE,
            "No test case named “Refund requets” for this engine; did you mean “Refund request”?",
        ),
    ],
    ids=["bad-key", "bad-key-listing-names", "unknown-batch", "unknown-name"],
)
async def test_refusals_before_anything_runs(
    retell: FakeRetell, request_: Request, values: dict[str, Any], expected: ExitCode, said: str
) -> None:
    shown = terminal()

    code = await ci.execute(request_, settings=settings_for(retell, **values), terminal=shown)

    out, err = text_of(shown)
    assert code == expected
    assert said in err
    assert not retell.batches
    assert "key_wrong" not in out + err, "secrets never show"


async def test_an_outage_while_following_is_waited_out(retell: FakeRetell) -> None:
    retell.set_batch_duration(0.3)
    retell.fail_next("/get-batch-test", 503, times=3)
    shown = terminal()

    code = await ci.execute(
        Request("run", (ENGINE, "tc_1", "tc_2")), settings=settings_for(retell), terminal=shown
    )

    err = text_of(shown)[1]
    assert code == ExitCode.PASSED, err
    assert err.count("Retell is having trouble (503)") == 1, "one warning, not one per poll"
    assert retell.count("/get-batch-test") > 3, "it kept polling through the outage"


async def test_retell_unreachable_exits_five(retell: FakeRetell) -> None:
    shown = terminal()
    settings = settings_for(retell)
    await retell.stop()

    code = await ci.execute(Request("run", (ENGINE, "tc_1")), settings=settings, terminal=shown)

    assert code == ExitCode.RETELL
    assert "Could not reach Retell" in text_of(shown)[1]


async def test_a_result_slack_refuses_exits_six_when_all_passed(
    retell: FakeRetell, slack: FakeSlack
) -> None:
    slack.fail_next("chat.postMessage", error="channel_not_found")
    shown = terminal()
    settings = settings_for(retell, slack_bot_token=slack.bot_token, slack_api_url=slack.api_url)

    code = await ci.execute(
        Request("run", (ENGINE, "tc_1"), post_to="C0GONE"), settings=settings, terminal=shown
    )

    assert code == ExitCode.REPORT
    assert "could not post the result to Slack C0GONE: channel_not_found" in text_of(shown)[1]


async def test_a_bad_slack_token_is_found_before_any_batch(
    retell: FakeRetell, slack: FakeSlack
) -> None:
    shown = terminal()
    settings = settings_for(retell, slack_bot_token="xoxb-wrong", slack_api_url=slack.api_url)

    code = await ci.execute(
        Request("run", (ENGINE, "tc_1"), post_to=CHANNEL), settings=settings, terminal=shown
    )

    assert code == ExitCode.USAGE
    assert "Slack refused SLACK_BOT_TOKEN (invalid_auth)" in text_of(shown)[1]
    assert not retell.batches


# -- pure pieces ---------------------------------------------------------------------------------

LLM = Engine("retell-llm", "llm_abc", 3)


def batch(
    batch_id: str = "test_case_batch_job_1",
    *,
    passed: int = 0,
    failed: int = 0,
    errored: int = 0,
    total: int = 3,
    complete: bool = True,
) -> BatchJob:
    return BatchJob(
        batch_id, LLM, "complete" if complete else "in_progress",
        passed, failed, errored, total, 1_700_000_000_000, 1_700_000_042_000,
    )  # fmt: skip


def run(case_id: str, status: Any, explanation: str | None = None, name: str = "") -> TestRun:
    return TestRun(f"job_{case_id}", case_id, name or f"Name {case_id}", status, explanation)


def report(*batches: tuple[BatchJob, list[TestRun]], timed_out: bool = False) -> Report:
    followed = tuple(Followed(b, timed_out, 42.0, tuple(runs)) for b, runs in batches)
    return Report("run", LLM, followed, tuple(summarize([f.runs for f in followed])))


@pytest.mark.parametrize(
    ("runs", "timed_out", "delivered", "expected"),
    [
        (["pass", "pass"], False, True, ExitCode.PASSED),
        (["pass", "pass"], False, False, ExitCode.REPORT),
        (["pass", "fail"], False, True, ExitCode.FAILED),
        (["error", "pass"], False, True, ExitCode.ERRORED),
        (["pass", "in_progress"], True, True, ExitCode.TIMED_OUT),
        (["fail", "in_progress"], True, True, ExitCode.FAILED),
        (["error", "in_progress"], True, False, ExitCode.TIMED_OUT),
    ],
)
def test_exit_code_order(
    runs: list[str], timed_out: bool, delivered: bool, expected: ExitCode
) -> None:
    test_runs = [run(f"tc_{i}", status) for i, status in enumerate(runs)]
    counts = {s: runs.count(s) for s in ("pass", "fail", "error")}
    job = batch(passed=counts["pass"], failed=counts["fail"], errored=counts["error"], total=2)
    assert ci.exit_code(report((job, test_runs), timed_out=timed_out), delivered=delivered) == (
        expected
    )


def test_every_exit_code_is_documented_once_in_the_help() -> None:
    assert [int(code) for code in ExitCode] == [0, 1, 2, 3, 4, 5, 6, 130], "CI depends on these"
    assert sorted(code for code, _ in ci.EXIT_CODE_MEANINGS) == sorted(ExitCode)
    from bot.cli import parser

    [run_help] = [
        action.choices["run"].format_help()
        for action in parser()._actions
        if isinstance(action.choices, dict) and "run" in action.choices
    ]
    for code, meaning in ci.EXIT_CODE_MEANINGS:
        assert f"  {int(code):<4} {meaning}" in run_help


def test_junit_tree_counts_messages_and_hostile_text() -> None:
    summaries = summarize(
        [
            [
                run("tc_1", "pass"),
                run("tc_2", "fail", 'Said "<refund>" & hung up\x00\x1b[31m', name="Ref<und>"),
                run("tc_3", "error", None),
                run("tc_4", "pending"),
            ]
        ]
    )
    tree = junit.junit_tree(summaries, suite_name="s", classname="llm_abc@3", seconds=1.5)
    root = tree.getroot()
    assert root is not None
    document = ET.tostring(root, encoding="unicode")
    suite = ET.fromstring(document).find("testsuite")
    assert suite is not None
    assert [suite.get(k) for k in ("tests", "failures", "errors", "skipped", "time")] == [
        "4", "1", "1", "1", "1.500",
    ]  # fmt: skip
    failure = suite.find("testcase[@name='Ref<und>']/failure")
    assert failure is not None
    assert failure.get("message") == 'Said "<refund>" & hung up[31m', "control chars dropped"
    error = suite.find("testcase[@name='Name tc_3']/error")
    assert error is not None and error.get("message") == junit.NO_EXPLANATION


def test_console_table_is_plain_one_line_per_case_and_safe() -> None:
    summaries = summarize(
        [
            [
                run("tc_1", "pass"),
                run("tc_2", "fail", "Line one.\nLine two " + "x" * 400, "\x1b[2JEvil"),
            ]
        ]
    )
    table = console.result_table(summaries, width=100).splitlines()
    assert table[0].split() == ["STATUS", "TEST", "CASE", "WHY"]
    assert table[1].startswith("FAIL") and "[2JEvil" in table[1] and "\x1b" not in table[1]
    assert "Line one. Line two" in table[1] and len(table[1]) <= 100
    assert table[2].split() == ["PASS", "Name", "tc_1"]
    coloured = console.result_table(summaries, colour=True)
    assert "\x1b[31mFAIL" in coloured and "\x1b[32mPASS" in coloured


def test_progress_line_and_printer_modes() -> None:
    jobs = [batch(passed=1, failed=1, complete=False), batch("b2", passed=3, complete=True)]
    line = console.progress_line(jobs, 75, unicode=False, width=12)
    assert line.split(" · ") == [
        "[##########--] 5/6", "4 passed, 1 failed, 0 errored", "1/2 batches complete", "1m 15s",
    ]  # fmt: skip

    live = io.StringIO()
    printer = console.ProgressPrinter(live, live=True)
    printer.update(jobs, 1)
    printer.update(jobs, 2)
    printer.close()
    assert live.getvalue().count("\r") == 2 and live.getvalue().endswith("\n")

    plain = io.StringIO()
    printer = console.ProgressPrinter(plain, live=False, heartbeat=60)
    for second in (1, 2, 3):
        printer.update(jobs, second)  # unchanged counts: printed once
    printer.update(jobs, 61)  # the heartbeat
    printer.update([batch(passed=2, failed=1, complete=True), jobs[1]], 62)  # a change
    assert len(plain.getvalue().splitlines()) == 3 and "\r" not in plain.getvalue()


def test_a_warning_clears_the_live_progress_line_first() -> None:
    shown = console.Terminal(io.StringIO(), io.StringIO(), live=True)
    printer = shown.progress()
    printer.update([batch(passed=1, complete=False)], 1)

    shown.warn("Retell is having trouble (503).")

    out, err = text_of(shown)
    assert out.endswith("\r\x1b[K"), "the half-drawn bar is wiped, not left before the warning"
    assert err == "retell-bot: warning: Retell is having trouble (503).\n"
    printer.update([batch(passed=2, complete=False)], 2)
    printer.close()
    assert text_of(shown)[0].endswith("2/3 · 2 passed, 0 failed, 0 errored · 2s\x1b[K\n")


def test_slack_result_is_the_bots_message_without_buttons() -> None:
    followed = Followed(batch(passed=1, failed=1, errored=1), False, 42.0, ())
    run_view = ci.CiRun.of(followed, CHANNEL)
    message = ci.slack_result(run_view, command="run", link="https://github.com/o/r/actions/runs/1")
    for phrase in ("1 passed", "1 failed", "1 errored", "3 total", "test_case_batch_job_1"):
        assert phrase in message.text
    assert "actions" not in [block["type"] for block in message.blocks]
    footer = str(message.blocks[-1])
    assert "retell-bot run" in footer and "|this CI run>" in footer and "Run #0" not in footer
    github = {
        "GITHUB_SERVER_URL": "https://x.test",
        "GITHUB_REPOSITORY": "o/r",
        "GITHUB_RUN_ID": "7",
    }
    assert ci.ci_link(github) == "https://x.test/o/r/actions/runs/7"
    assert ci.ci_link({}) is None


def test_summary_for_junit_and_table_agree_on_unfinished_cases() -> None:
    [summary] = summarize([[run("tc_1", "in_progress")]])
    assert isinstance(summary, CaseSummary) and summary.verdict == "unfinished"
    assert "did not finish" in console.result_table([summary])
