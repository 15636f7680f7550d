"""`bot.repeats`: per-case verdicts over repeated batches of one suite (pure, no I/O)."""

from __future__ import annotations

from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from bot.repeats import VERDICT_ORDER, CaseSummary, summarize, totals
from bot.retell import TestRun

STATUSES = ("pending", "in_progress", "pass", "fail", "error")


def run(case_id: str, status: Any, explanation: str | None = None, name: str = "") -> TestRun:
    return TestRun(f"job_{case_id}", case_id, name or f"Case {case_id}", status, explanation)


def test_one_batch_gives_one_summary_per_case_failures_first() -> None:
    summaries = summarize(
        [
            [
                run("tc_1", "pass"),
                run("tc_2", "error", "Engine did not reply."),
                run("tc_3", "fail", "Did not confirm the amount."),
                run("tc_4", "in_progress"),
                run("tc_5", "fail", "Hung up."),
            ]
        ]
    )

    assert [(s.case_id, s.verdict) for s in summaries] == [
        ("tc_3", "fail"),
        ("tc_5", "fail"),
        ("tc_2", "error"),
        ("tc_4", "unfinished"),
        ("tc_1", "pass"),
    ]
    assert summaries[0].explanation == "Did not confirm the amount."
    assert (summaries[0].runs, summaries[0].passes, summaries[0].fails) == (1, 0, 1)
    assert not any(s.flaky for s in summaries)


def test_repeats_count_passes_out_of_runs_and_flag_flaky_cases() -> None:
    batches = [
        [run("a", "pass"), run("b", "pass"), run("c", "fail", "Why 1"), run("d", "pass")],
        [run("a", "pass"), run("b", "fail", "Flaky"), run("c", "fail", "Why 2"), run("d", "error")],
        [run("a", "pass"), run("b", "pass"), run("c", "fail", "Why 1"), run("d", "pass")],
    ]

    by_id = {s.case_id: s for s in summarize(batches)}

    assert [s.case_id for s in summarize(batches)] == ["c", "b", "d", "a"]
    flaky = by_id["b"]
    assert (flaky.runs, flaky.passes, flaky.fails, flaky.errors) == (3, 2, 1, 0)
    assert flaky.flaky and flaky.verdict == "flaky"
    assert flaky.outcomes == ("pass", "fail", "pass"), "in batch order"
    assert by_id["c"].explanations == ("Why 1", "Why 2"), "distinct, in batch order"
    assert not by_id["c"].flaky, "failing every run is a failure, not flakiness"
    errored = by_id["d"]
    assert (errored.verdict, errored.flaky) == ("error", False), "an error alone is not flaky"
    assert by_id["a"].verdict == "pass" and by_id["a"].explanation is None

    counted = totals(summarize(batches))
    assert (counted.cases, counted.passed, counted.failed, counted.flaky, counted.errored) == (
        4, 1, 1, 1, 1,
    )  # fmt: skip
    assert not counted.all_passed


def test_failure_explanations_come_before_error_explanations() -> None:
    [summary] = summarize(
        [[run("x", "error", "Infra down")], [run("x", "fail", "Wrong answer")], [run("x", "pass")]]
    )
    assert summary.explanations == ("Wrong answer", "Infra down")
    assert summary.explanation == "Wrong answer"
    assert summary.verdict == "flaky"


def test_latest_name_wins_and_a_case_missing_from_a_batch_counts_fewer_runs() -> None:
    summaries = summarize(
        [[run("x", "pass", name="Old name"), run("y", "pass")], [run("x", "pass", name="New name")]]
    )
    by_id = {s.case_id: s for s in summaries}
    assert by_id["x"].name == "New name" and by_id["x"].runs == 2
    assert by_id["y"].runs == 1
    assert totals(summaries).all_passed


def test_nothing_to_summarise() -> None:
    assert summarize([]) == [] and summarize([[], []]) == []
    assert totals([]).cases == 0


@given(
    st.lists(
        st.lists(
            st.tuples(st.sampled_from(["a", "b", "c", "d"]), st.sampled_from(STATUSES)),
            max_size=6,
        ),
        max_size=5,
    )
)
def test_every_run_is_counted_once_and_order_follows_the_verdict(
    batches: list[list[tuple[str, str]]],
) -> None:
    runs = [[run(case_id, status, "why") for case_id, status in batch] for batch in batches]

    summaries = summarize(runs)

    assert sum(s.runs for s in summaries) == sum(len(b) for b in runs)
    assert len({s.case_id for s in summaries}) == len(summaries)
    for s in summaries:
        assert isinstance(s, CaseSummary)
        assert s.passes + s.fails + s.errors + s.unfinished == s.runs
        assert s.flaky == (s.passes > 0 and s.fails > 0)
    ranks = [VERDICT_ORDER[s.verdict] for s in summaries]
    assert ranks == sorted(ranks)
    counted = totals(summaries)
    assert (
        counted.passed + counted.failed + counted.flaky + counted.errored + counted.unfinished
        == counted.cases
        == len(summaries)
    )
