"""Block Kit rendering: content, escaping, and Slack's limits on every message with large inputs."""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Iterator
from dataclasses import replace
from datetime import timedelta
from typing import Any

import pytest

from bot import blocks
from bot.blocks import Comparison, Message, RunView
from bot.commands import USAGE, CommandError, parse
from bot.repeats import summarize
from bot.retell import BatchJob, TestRun
from bot.store import Run
from bot.suite import Engine, Suite

from ..helpers import BATCH, PINNED_ENGINE, T0, FakeRun, done

ENGINE = PINNED_ENGINE
EVIL = "<!channel> <@U1> & <https://evil.example|click>"


def _run_fits_view(run: Run) -> RunView:
    """Checked by mypy: the ORM row satisfies the protocol structurally."""
    return run


# -- the limits validator ------------------------------------------------------------------------

ALLOWED_TOKEN = re.compile(r"<@[UW][A-Z0-9]+>|<#[CDG][A-Z0-9]+>|<!date\^\d+\^[^<>|]+\|[^<>]+>")
QUOTE_MARKER = re.compile(r"^>", re.MULTILINE)
BARE_AMPERSAND = re.compile(r"&(?!amp;|lt;|gt;)")


def _texts(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        if isinstance(node.get("text"), str):
            yield node["text"]
        for value in node.values():
            yield from _texts(value)
    elif isinstance(node, list):
        for item in node:
            yield from _texts(item)


def _plain(obj: dict[str, Any], limit: int) -> None:
    assert obj["type"] == "plain_text"
    assert 0 < len(obj["text"]) <= limit, obj


def _check_button(button: dict[str, Any]) -> None:
    assert button["type"] == "button"
    _plain(button["text"], blocks.MAX_BUTTON_TEXT)
    assert 0 < len(button["action_id"]) <= blocks.MAX_ACTION_ID
    assert len(button["value"]) <= blocks.MAX_BUTTON_VALUE
    confirm = button.get("confirm")
    if confirm:
        _plain(confirm["title"], 100)
        _plain(confirm["text"], 300)
        _plain(confirm["confirm"], 30)
        _plain(confirm["deny"], 30)


def _check_block(block: dict[str, Any]) -> None:
    kind = block["type"]
    if kind == "section":
        assert "text" in block or "fields" in block
        if "text" in block:
            assert 0 < len(block["text"]["text"]) <= blocks.MAX_SECTION_TEXT
        for item in block.get("fields", []):
            assert 0 < len(item["text"]) <= blocks.MAX_FIELD_TEXT
        assert len(block.get("fields", [])) <= blocks.MAX_FIELDS
    elif kind == "context":
        assert 0 < len(block["elements"]) <= blocks.MAX_CONTEXT_ELEMENTS
        for element in block["elements"]:
            assert 0 < len(element["text"]) <= blocks.MAX_SECTION_TEXT
    elif kind == "header":
        _plain(block["text"], blocks.MAX_HEADER_TEXT)
    elif kind == "actions":
        assert 0 < len(block["elements"]) <= 25
        for button in block["elements"]:
            _check_button(button)
    else:
        raise AssertionError(f"unexpected block type {kind}")


def _check_markup(text: str) -> None:
    """Only the bot's own mentions and dates may be Slack markup; `&` is always an entity."""
    rest = QUOTE_MARKER.sub("", ALLOWED_TOKEN.sub("", text))
    assert "<" not in rest and ">" not in rest, text
    assert not BARE_AMPERSAND.search(text), text


def check_limits(message: Message) -> Message:
    assert isinstance(message, Message)
    assert 0 < len(message.text) <= 3000
    assert 0 < len(message.blocks) <= blocks.MAX_BLOCKS
    for block in message.blocks:
        _check_block(block)
    texts = [message.text, *_texts(message.blocks)]
    for text in texts:
        _check_markup(text)
    assert sum(len(t) for t in _texts(message.blocks)) <= blocks.MESSAGE_TEXT_BUDGET
    action_ids = [b["action_id"] for b in _buttons(message)]
    assert len(action_ids) == len(set(action_ids))
    return message


def _buttons(message: Message) -> list[dict[str, Any]]:
    return [e for b in message.blocks if b["type"] == "actions" for e in b["elements"]]


def _all_text(message: Message) -> str:
    return "\n".join([message.text, *_texts(message.blocks)])


# -- text helpers --------------------------------------------------------------------------------


def test_escape_neutralises_mentions_and_entities() -> None:
    assert blocks.escape("<!channel> & <@U1>") == "&lt;!channel&gt; &amp; &lt;@U1&gt;"


def test_shorten_cuts_at_a_word_boundary() -> None:
    text = "alpha beta gamma delta"
    assert blocks.shorten(text, 100) == text
    assert blocks.shorten(text, 13) == "alpha beta…"
    assert blocks.shorten("x" * 50, 10) == "x" * 9 + "…"


def test_shorten_never_splits_an_entity() -> None:
    assert blocks.shorten("a" * 7 + "&amp;" + "b" * 20, 11) == "a" * 7 + "…"


def test_explanation_is_cut_at_a_sentence_boundary() -> None:
    sentence = "The agent confirmed the refund amount correctly. "
    text = sentence * 10
    trimmed = blocks.trim_explanation(text)
    assert len(trimmed) <= 300
    assert trimmed.endswith(". …")
    assert trimmed.removesuffix(" …").endswith("correctly.")


def test_explanation_without_sentences_is_cut_at_a_word() -> None:
    words = " ".join(["refund"] * 100)
    trimmed = blocks.trim_explanation(words)
    assert len(trimmed) <= 300
    assert trimmed.endswith("refund…")


def test_short_explanation_is_kept_on_one_line() -> None:
    assert blocks.trim_explanation("Failed.\n\n  Agent hung up.") == "Failed. Agent hung up."


@pytest.mark.parametrize(
    ("passed", "total", "shown"),
    [
        (38, 40, "95.0%"),
        (0, 0, "n/a"),
        (40, 40, "100.0%"),
        (1999, 2000, "99.9%"),
        (1, 3000, "0.1%"),
        (2, 3, "66.7%"),
        (0, 5, "0.0%"),
    ],
)
def test_pass_rate_has_one_decimal(passed: int, total: int, shown: str) -> None:
    assert blocks.format_pass_rate(passed, total) == shown


@pytest.mark.parametrize(
    ("delta", "shown"),
    [
        (timedelta(seconds=42), "42s"),
        (timedelta(minutes=4, seconds=12), "4m 12s"),
        (timedelta(hours=1, minutes=3, seconds=59), "1h 03m"),
        (timedelta(days=2, hours=5), "2d 05h"),
        (timedelta(seconds=-3), "0s"),
        (None, "—"),
    ],
)
def test_duration_is_humanised(delta: timedelta | None, shown: str) -> None:
    assert blocks.format_duration(delta) == shown


def test_progress_bar() -> None:
    assert blocks.progress_bar(12, 40) == "`▓▓▓░░░░░░░` 12/40"
    assert blocks.progress_bar(40, 40) == "`▓▓▓▓▓▓▓▓▓▓` 40/40"
    assert blocks.progress_bar(39, 40).count("▓") == 9
    assert blocks.progress_bar(0, 0) == "`░░░░░░░░░░` 0/0"
    assert blocks.progress_bar(50, 40).count("▓") == 10


# -- status --------------------------------------------------------------------------------------


def test_status_while_running() -> None:
    message = check_limits(blocks.status_message(FakeRun()))
    text = _all_text(message)
    assert "`llm_abc@3`" in text
    assert "<@U123>" in text
    assert f"`{BATCH}`" in text
    assert "`▓▓▓░░░░░░░` 12/40" in text
    assert "✅ 10 passed · ❌ 1 failed · ⚠️ 1 errored" in text
    assert message.text == f"Retell batch test on llm_abc@3: 12/40 done (batch {BATCH})"
    assert not _buttons(message)


def test_status_while_the_batch_is_being_created() -> None:
    run = FakeRun(state="starting", batch_id=None, passed=0, failed=0, errored=0, total=0)
    message = check_limits(blocks.status_message(run))
    assert "creating…" in _all_text(message)
    assert "0/40" in _all_text(message)
    assert message.text.endswith("(creating the batch)")


def test_status_of_a_finished_run_is_its_result() -> None:
    assert blocks.status_message(done()) == blocks.result_message(done())


def test_status_names_where_the_run_came_from() -> None:
    assert "Rerun of run #3" in _all_text(
        blocks.status_message(FakeRun(source="rerun", rerun_of=3))
    )
    assert "Scheduled by" in _all_text(blocks.status_message(FakeRun(source="schedule")))


# -- result --------------------------------------------------------------------------------------


def test_result_fallback_has_the_four_phrases_and_the_batch() -> None:
    message = check_limits(blocks.result_message(done()))
    assert message.text == (
        f"Retell batch {BATCH} on llm_abc@3: 38 passed, 1 failed, 1 errored, 40 total (95.0%)"
    )
    text = _all_text(message)
    assert "❌ 1 failed, 1 errored of 40" in text
    assert "*95.0%* pass rate" in text
    assert "4m 12s" in text


def test_result_with_failures_offers_all_three_buttons() -> None:
    message = check_limits(blocks.result_message(done()))
    buttons = {b["action_id"]: b for b in _buttons(message)}
    assert list(buttons) == ["rerun", "rerun_failed", "show_failures"]
    assert all(b["value"] == "7" for b in buttons.values())


def test_all_passed_offers_only_rerun() -> None:
    message = check_limits(blocks.result_message(done(passed=40, failed=0, errored=0)))
    assert [b["action_id"] for b in _buttons(message)] == ["rerun"]
    assert "✅ All 40 passed" in _all_text(message)
    assert "40 passed, 0 failed, 0 errored, 40 total (100.0%)" in message.text


def test_errors_alone_count_as_failures() -> None:
    message = blocks.result_message(done(passed=39, failed=0, errored=1))
    assert [b["action_id"] for b in _buttons(message)] == ["rerun", "rerun_failed", "show_failures"]
    assert "⚠️ 1 errored of 40" in _all_text(message)


def test_show_failures_is_hidden_without_detail() -> None:
    message = blocks.result_message(done(), has_failures_detail=False)
    assert [b["action_id"] for b in _buttons(message)] == ["rerun", "rerun_failed"]


def test_result_with_no_cases_does_not_divide_by_zero() -> None:
    message = check_limits(blocks.result_message(done(passed=0, failed=0, errored=0, total=0)))
    assert "0 passed, 0 failed, 0 errored, 0 total (n/a)" in message.text
    assert "No test cases ran" in _all_text(message)


def test_timed_out_result_keeps_last_counts_and_rerun() -> None:
    run = done(state="timed_out", passed=10, duration=timedelta(hours=3))
    message = check_limits(blocks.result_message(run))
    text = _all_text(message)
    assert "⏱️ Timed out with 12/40 done" in text
    assert "Stopped following this batch after 3h 00m" in text
    assert f"/retell-test status {BATCH}" in text
    assert "timed out" in message.text
    assert "10 passed, 1 failed, 1 errored, 40 total" in message.text
    assert BATCH in message.text
    assert _buttons(message)[0]["action_id"] == "rerun"


def test_a_run_that_never_started_says_why_in_place() -> None:
    run = FakeRun(state="failed", batch_id=None, error=f"Retell said {EVIL}", total=0, passed=0)
    message = check_limits(blocks.result_message(run))
    assert "could not be created" in _all_text(message)
    assert "&lt;!channel&gt;" in _all_text(message)
    assert [b["action_id"] for b in _buttons(message)] == ["rerun"]


def test_comparison_with_the_previous_run() -> None:
    comparison = Comparison(90.0, newly_failing=("Refund", "Cancel"), fixed=("Greeting",))
    message = check_limits(blocks.result_message(done(), comparison=comparison))
    text = _all_text(message)
    assert "Pass rate 90.0% → 95.0% (+5.0 pts)" in text
    assert "Newly failing (2): Refund, Cancel" in text
    assert "Fixed (1): Greeting" in text
    assert "2 newly failing" in message.text


def test_long_comparisons_are_summarised_and_escaped() -> None:
    names = tuple(f"case {i} {EVIL}" for i in range(950))
    message = check_limits(blocks.result_message(done(), comparison=Comparison(None, names, names)))
    text = _all_text(message)
    assert "…and 940 more" in text
    assert "No previous run" in text


def test_a_first_run_only_says_there_is_nothing_to_compare_with() -> None:
    text = blocks.comparison_text(done(), Comparison(None))
    assert text == "No previous run of this suite in this channel to compare with."


def test_comparison_without_changes() -> None:
    text = blocks.comparison_text(done(), Comparison(97.5))
    assert "📉 Pass rate 97.5% → 95.0% (-2.5 pts)" in text
    assert "Same cases failing" in text


# -- the other messages --------------------------------------------------------------------------


def test_ack_text() -> None:
    assert (
        blocks.ack_text(ENGINE, 3)
        == "Starting a Retell batch test on `llm_abc@3` with 3 test cases…"
    )
    assert blocks.ack_text(Engine("retell-llm", "llm_abc"), 1).endswith("with 1 test case…")
    assert "resolving test cases…" in blocks.ack_text(ENGINE, None)
    assert "&lt;!channel&gt;" in blocks.ack_text(Engine("retell-llm", "<!channel>"), None)


def test_start_failed_says_why_and_that_nothing_was_created() -> None:
    suite = Suite(ENGINE, ("a", "b", "c"))
    message = check_limits(blocks.start_failed(suite, f"Retell could not find it. {EVIL}"))
    text = _all_text(message)
    assert "Nothing was created" in text
    assert "`llm_abc@3`" in text and "3 test cases" in text
    assert "&lt;!channel&gt; &lt;@U1&gt; &amp;" in text
    assert "Retell could not find it." in message.text


def test_start_failed_with_a_huge_reason() -> None:
    check_limits(blocks.start_failed(Suite(ENGINE, ("a",)), "word " * 5000))


def test_requester_mention() -> None:
    message = check_limits(blocks.requester_mention(done()))
    assert message.text.startswith("<@U123> ")
    assert "❌ 1 failed, 1 errored of 40" in message.text
    assert "(95.0% passed)" in message.text
    timed_out = blocks.requester_mention(done(state="timed_out"))
    assert "after the timeout" in timed_out.text


def test_a_user_id_that_is_not_one_is_not_a_mention() -> None:
    message = check_limits(blocks.requester_mention(done(user_id="<!channel>")))
    assert "&lt;!channel&gt;" in message.text


def test_help_message_shows_the_usage_as_written() -> None:
    message = check_limits(blocks.help_message(USAGE))
    text = _all_text(message)
    assert "/retell-test [run] &lt;engine&gt; &lt;tests&gt;" in text, "escaped once, by the parser"
    assert "&amp;lt;" not in text
    assert "Retell" in message.text


def test_command_error_shows_the_parser_message_then_the_usage() -> None:
    error = parse("run agent_1 tc_1")
    assert isinstance(error, CommandError)
    message = check_limits(blocks.command_error(error))
    assert message.text.startswith("⚠️ ")
    assert "agent_1" in message.text
    assert "&amp;lt;" not in _all_text(message), "never escaped twice"
    assert len(message.blocks) >= 2


def test_problem_escapes_what_it_quotes() -> None:
    message = check_limits(blocks.problem(f"Retell said: {EVIL}"))
    assert message.text.startswith("⚠️ Retell said: &lt;!channel&gt;")
    assert len(message.blocks) == 1


def test_long_usage_is_split_into_sections() -> None:
    usage = "\n".join(f"/retell-test line {i} &lt;engine&gt;" for i in range(400))
    check_limits(blocks.help_message(usage))


def test_no_runs_in_flight() -> None:
    message = check_limits(blocks.in_flight_list([]))
    assert message.text == "No Retell batch tests are running in this channel."


def test_runs_in_flight_are_listed_then_summarised() -> None:
    runs = [FakeRun(id=i, batch_id=f"test_case_batch_job_{i}") for i in range(100)]
    message = check_limits(blocks.in_flight_list(runs))
    text = _all_text(message)
    assert "100 Retell batch tests in flight" in message.text
    shown = text.count("test_case_batch_job_")
    assert 0 < shown <= 45
    assert f"…and {100 - shown} more" in text
    assert "started {ago}" in text


def test_one_run_in_flight() -> None:
    message = check_limits(blocks.in_flight_list([FakeRun(batch_id=None)]))
    assert "1 Retell batch test in flight" in message.text
    assert "…and" not in _all_text(message)


def _batch(**changes: Any) -> BatchJob:
    base = BatchJob(BATCH, ENGINE, "in_progress", 10, 1, 1, 40, 0, 0)
    return replace(base, **changes)


def test_batch_status_of_a_followed_batch() -> None:
    message = check_limits(blocks.batch_status(_batch(), FakeRun()))
    text = _all_text(message)
    assert "🔄 In progress" in text and "12/40" in text
    assert "run #7 in <#C123>" in text
    assert "10 passed, 1 failed, 1 errored, 40 total" in message.text


def test_batch_status_of_a_batch_nobody_follows() -> None:
    message = check_limits(blocks.batch_status(_batch(status="complete"), None))
    assert f"/retell-test watch {BATCH}" in _all_text(message)
    assert "complete" in message.text


# -- failures ------------------------------------------------------------------------------------


def _failure(i: int, status: str = "fail", explanation: str | None = None) -> TestRun:
    return TestRun(f"job_{i}", f"tcd_{i}", f"Case {i}", status, explanation)  # type: ignore[arg-type]


def _replies(run: FakeRun, *batches: list[TestRun]) -> list[blocks.Message]:
    post = blocks.failures_post(run, summarize(batches), batches=len(batches))
    assert post.attachment is None, "short lists are posted as replies only"
    return post.replies


def _entry(test_run: TestRun) -> str:
    (summary,) = summarize([[test_run]])
    return blocks.failure_entry(summary)


def test_failures_are_listed_failed_then_errored() -> None:
    runs = [_failure(1, "error", "Timed out."), _failure(2, "pass"), _failure(3, "fail", "Wrong.")]
    (message,) = _replies(done(), runs)
    check_limits(message)
    text = _all_text(message)
    assert message.blocks[0] == {
        "type": "header",
        "text": {
            "type": "plain_text",
            "text": f"1 failed, 1 errored in batch {BATCH}",
            "emoji": True,
        },
    }
    assert text.index("Case 3") < text.index("Case 1")
    assert "Case 2" not in text
    assert ">Wrong." in text and "`tcd_3`" in text


def test_no_failures_to_show() -> None:
    (message,) = _replies(done(), [_failure(1, "pass")])
    assert "No failed or errored" in check_limits(message).text


def test_failure_without_explanation() -> None:
    assert "no explanation" in _entry(_failure(1))


def test_a_few_pages_of_failures_are_split_over_replies_within_limits() -> None:
    long = "The agent did not confirm the caller's identity before the refund. " * 20
    failures = [_failure(i, "fail" if i % 4 else "error", long) for i in range(40)]
    messages = _replies(done(failed=30, errored=10), failures)
    assert 1 < len(messages) <= blocks.FAILURE_REPLIES_INLINE
    for message in messages:
        check_limits(message)
    joined = "\n".join(_all_text(m) for m in messages)
    assert all(f"*Case {i}*" in joined for i in range(40))
    assert messages[0].blocks[0]["type"] == "header"
    assert "30 failed, 10 errored" in messages[0].text
    assert all(m.blocks[0]["type"] != "header" for m in messages[1:])
    assert f"(part {len(messages)}/{len(messages)})" in messages[-1].text
    for entry in _entry(failures[1]).split("\n")[1:]:
        assert len(entry) <= 301 and entry.endswith(" …")


def test_400_failures_are_one_reply_and_a_csv_of_all_of_them() -> None:
    long = "The agent did not confirm the caller's identity before the refund. " * 20
    failures = [_failure(i, "fail" if i % 4 else "error", f"{i}: {long}") for i in range(400)]
    post = blocks.failures_post(done(failed=300, errored=100), summarize([failures]))
    (reply,) = post.replies
    check_limits(reply)
    assert "300 failed, 100 errored" in reply.text
    assert post.attachment is not None
    assert post.attachment.filename == f"failures-{BATCH}.csv"
    assert "*failures-" in _all_text(reply) and "of 400 are below" in _all_text(reply)
    rows = list(csv.DictReader(io.StringIO(post.attachment.content.decode())))
    assert len(rows) == 400
    verdicts = [row["verdict"] for row in rows]
    assert verdicts == ["fail"] * 300 + ["error"] * 100, "failures before errors"
    assert rows[0]["explanation"] == f"1: {long}", "the file keeps explanations whole"
    shown = [int(n) for n in re.findall(r"\*Case (\d+)\*", _all_text(reply))]
    assert shown == [int(row["name"].split()[1]) for row in rows[: len(shown)]]


def test_csv_cells_cannot_run_as_spreadsheet_formulas() -> None:
    hostile = TestRun("j", "=cmd|' /C calc'!A0", "+SUM(A1)", "fail", "@HYPERLINK(evil)")
    content = blocks.failures_csv(summarize([[hostile]])).decode()
    (row,) = list(csv.DictReader(io.StringIO(content)))
    assert row["case_id"].startswith("'=") and row["name"].startswith("'+")
    assert row["explanation"].startswith("'@")


def test_repeats_list_flaky_cases_with_their_pass_counts() -> None:
    first = [_failure(1, "pass"), _failure(2, "fail", "Hung up."), _failure(3, "fail", "No.")]
    second = [_failure(1, "pass"), _failure(2, "pass"), _failure(3, "fail", "Still no.")]
    third = [_failure(1, "error", "SIP"), _failure(2, "fail", "Hung up."), _failure(3, "fail")]
    (message,) = _replies(done(failed=5, errored=1), first, second, third)
    check_limits(message)
    text = _all_text(message)
    assert "1 failed, 1 flaky, 1 errored over 3 batches" in message.text
    assert text.index("Case 3") < text.index("Case 2") < text.index("Case 1")
    assert "*Case 3* `tcd_3` failed 3 of 3 runs" in text
    assert "*Case 2* `tcd_2` flaky: passed 1 of 3 runs, failed 2" in text
    assert "*Case 1* `tcd_1` errored 1 of 3 runs" in text


def test_failure_names_and_explanations_are_escaped() -> None:
    failures = [TestRun("j", "tcd_1", f"Refund {EVIL}", "fail", f"Said {EVIL}")]
    (message,) = _replies(done(), failures)
    check_limits(message)
    assert "*Refund &lt;!channel&gt; &lt;@U1&gt; &amp;" in _all_text(message)


FAKE_LINE = "Cancel\n✅ All 4 passed · 100.0% pass rate"
INVISIBLE = "\u202e\u2066\u200b\ufeff"


def test_names_are_one_line_without_bidi_or_zero_width_controls() -> None:
    """The probe's case: a name with a newline started a fake result line in the thread."""
    name = f"{FAKE_LINE}{INVISIBLE}\r\n\u2028 tail"
    failures = [TestRun("j", "tcd_1", name, "fail", "Hung up.")]
    (reply,) = _replies(done(), failures)
    shown = _all_text(reply)
    assert "Cancel ✅ All 4 passed · 100.0% pass rate tail" in shown
    assert "\n✅ All 4 passed" not in shown
    assert not any(char in shown for char in INVISIBLE + "\u2028")
    listed = blocks.name_list([name, "Second\ncase"])
    assert listed == "Cancel ✅ All 4 passed · 100.0% pass rate tail, Second case"
    csv_rows = list(csv.reader(io.StringIO(blocks.failures_csv(summarize([failures])).decode())))
    assert csv_rows[1][1] == "Cancel ✅ All 4 passed · 100.0% pass rate tail"


def test_huge_names_and_unbroken_explanations_stay_within_limits() -> None:
    failures = [_failure(i, "fail", "x" * 5000) for i in range(50)]
    failures.append(TestRun("j", "<@U1>" * 100, "&" * 2000, "error", "&" * 2000))
    for message in blocks.failures_post(done(batch_id="b" * 200), summarize([failures])).replies:
        check_limits(message)


# -- scale, injection, the real Run --------------------------------------------------------------


def test_a_1000_case_run_renders_within_limits() -> None:
    ids = [f"tcd_{i:04d}" for i in range(1000)]
    running = FakeRun(case_ids=ids, case_count=1000, total=1000, passed=500, failed=250, errored=10)
    check_limits(blocks.status_message(running))
    finished = done(case_ids=ids, case_count=1000, total=1000, passed=600, failed=300, errored=100)
    check_limits(blocks.result_message(finished))
    check_limits(blocks.requester_mention(finished))


def test_hostile_ids_everywhere_are_escaped() -> None:
    engine = Engine("retell-llm", "llm_" + EVIL * 20, 2)
    run = done(engine=engine, batch_id=EVIL * 30, user_id=EVIL, channel_id=EVIL)
    comparison = Comparison(50.0, (EVIL,) * 30, (EVIL,))
    check_limits(blocks.status_message(replace(run, state="running")))
    check_limits(blocks.result_message(run, comparison=comparison))
    check_limits(blocks.result_message(replace(run, state="timed_out")))
    check_limits(blocks.requester_mention(run))
    check_limits(blocks.in_flight_list([run]))
    check_limits(blocks.batch_status(BatchJob(EVIL, engine, "complete", 1, 1, 1, 3, 0, 0), run))
    for message in _replies(run, [TestRun(EVIL, EVIL, EVIL, "fail", EVIL)]):
        check_limits(message)


def test_a_huge_batch_id_never_pushes_the_counts_out_of_the_fallback() -> None:
    message = check_limits(blocks.result_message(done(batch_id="job " * 2000)))
    assert "38 passed, 1 failed, 1 errored, 40 total" in message.text


def test_a_backtick_cannot_break_out_of_a_code_span() -> None:
    text = blocks.ack_text(Engine("retell-llm", "llm_`*bold*`"), 1)
    assert text.count("`") == 2


def test_the_orm_run_renders() -> None:
    run = Run(
        id=5,
        team_id="T1",
        channel_id="C1",
        user_id="U9",
        source="command",
        rerun_of=None,
        engine_type="conversation-flow",
        engine_id="conversation_flow_x",
        engine_version=None,
        case_ids=["a", "b"],
        case_count=2,
        state="complete",
        batch_id=BATCH,
        error=None,
        passed=2,
        failed=0,
        errored=0,
        total=2,
        created_at=T0,
        started_at=T0,
        finished_at=T0 + timedelta(seconds=90),
    )
    message = check_limits(blocks.result_message(_run_fits_view(run)))
    assert "1m 30s" in _all_text(message)
    assert "2 passed, 0 failed, 0 errored, 2 total (100.0%)" in message.text


def test_message_kwargs() -> None:
    message = blocks.help_message("")
    assert message.as_kwargs() == {"text": message.text, "blocks": message.blocks}


def test_a_repeat_group_of_5_batches_of_1000_cases_renders_within_limits() -> None:
    ids = [f"tcd_{i:04d}" for i in range(1000)]
    runs = [
        done(
            id=i,
            batch_id=f"b_{i}",
            case_ids=ids,
            case_count=1000,
            total=1000,
            passed=900,
            failed=60,
            errored=40,
        )
        for i in range(1, 6)
    ]
    batches = [
        [
            TestRun(f"j{b}{i}", case_id, EVIL * 3, ("pass", "fail", "error")[(i + b) % 3], EVIL)  # type: ignore[arg-type]
            for i, case_id in enumerate(ids)
        ]
        for b in range(5)
    ]
    group = blocks.RepeatGroup(runs, summarize(batches))
    result = check_limits(blocks.repeat_result(group))
    for phrase in ("4500 passed", "300 failed", "200 errored", "5000 total", "b_1", "b_5"):
        assert phrase in result.text
    check_limits(
        blocks.repeat_status(blocks.RepeatGroup([replace(r, state="running") for r in runs]))
    )
    check_limits(blocks.repeat_mention(group))
    post = blocks.failures_post(runs[0], group.summaries, batches=5)
    assert post.attachment is not None and len(post.replies) == 1
    check_limits(post.replies[0])
