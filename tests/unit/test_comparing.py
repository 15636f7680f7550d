"""`bot.comparing`: how two engine versions' verdicts pair up case by case, and gates."""

from __future__ import annotations

from collections.abc import Sequence

import pytest

from bot.comparing import Gate, VersionComparison, compare_versions
from bot.repeats import summarize
from bot.retell import TestRun, TestRunStatus


def batch(*cases: tuple[str, TestRunStatus]) -> list[TestRun]:
    return [
        TestRun(
            "", case_id, f"Case {case_id}", status, f"why {case_id}" if status != "pass" else None
        )
        for case_id, status in cases
    ]


def compare(a: Sequence[list[TestRun]], b: Sequence[list[TestRun]]) -> VersionComparison:
    return compare_versions(summarize(a), summarize(b))


def test_each_case_is_named_by_what_changed_regressions_first() -> None:
    a = [batch(("tc_1", "pass"), ("tc_2", "fail"), ("tc_3", "fail"), ("tc_4", "pass"))]
    b = [batch(("tc_1", "fail"), ("tc_2", "pass"), ("tc_3", "error"), ("tc_4", "pass"))]
    result = compare(a, b)
    assert [(c.case_id, c.change) for c in result.cases] == [
        ("tc_1", "regressed"),
        ("tc_2", "fixed"),
        ("tc_3", "still_failing"),
        ("tc_4", "unchanged"),
    ]
    assert result.regressions == 1 and result.count("fixed") == 1
    assert result.of("regressed")[0].explanation == "why tc_1"  # B's reason
    assert (result.a_rate, result.b_rate) == (50.0, 50.0)


def test_an_error_on_the_candidate_is_a_regression() -> None:
    result = compare([batch(("tc_1", "pass"))], [batch(("tc_1", "error"))])
    assert result.cases[0].change == "regressed"


def test_with_repeats_a_case_that_both_passes_and_fails_is_flaky() -> None:
    a = [batch(("tc_1", "pass"), ("tc_2", "pass"))] * 3
    b = [
        batch(("tc_1", "pass"), ("tc_2", "fail")),
        batch(("tc_1", "fail"), ("tc_2", "fail")),
        batch(("tc_1", "pass"), ("tc_2", "fail")),
    ]
    result = compare(a, b)
    assert {c.case_id: c.change for c in result.cases} == {"tc_1": "flaky", "tc_2": "regressed"}
    assert (result.a_passed, result.a_total, result.b_passed, result.b_total) == (6, 6, 2, 6)


def test_a_case_missing_or_unfinished_on_one_side_is_not_judged() -> None:
    a = [batch(("tc_1", "pass"), ("tc_2", "pass"))]
    b = [batch(("tc_1", "in_progress"))]
    changes = {c.case_id: c.change for c in compare(a, b).cases}
    assert changes == {"tc_1": "unfinished", "tc_2": "unfinished"}


@pytest.mark.parametrize(
    ("min_pass", "rate", "held"),
    [
        (95.0, 97.2, True),
        (95.0, 95.0, True),
        (95.0, 94.99, False),
        (0.0, 0.0, True),
        (50.0, None, False),
    ],
)
def test_a_gate_holds_at_or_above_its_rate(min_pass: float, rate: float | None, held: bool) -> None:
    assert Gate(min_pass).held(rate) is held


def test_gate_labels_read_as_typed() -> None:
    assert (Gate(95.0).label, Gate(97.5).label) == ("95%", "97.5%")


def test_green_means_no_regression_and_the_gate_held() -> None:
    a = [batch(("tc_1", "pass"), ("tc_2", "fail"), ("tc_3", "pass"))]
    steady = compare(a, [batch(("tc_1", "pass"), ("tc_2", "fail"), ("tc_3", "pass"))])
    assert steady.green(None)
    assert steady.green(Gate(60.0)) and not steady.green(Gate(70.0))
    worse = compare(a, [batch(("tc_1", "fail"), ("tc_2", "pass"), ("tc_3", "pass"))])
    assert not worse.green(None) and not worse.green(Gate(0.0))
