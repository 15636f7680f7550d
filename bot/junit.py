"""JUnit XML for CI: per-case summaries in, an `ElementTree` out (pure; `write` does the I/O).

CI systems (GitHub Actions reporters, GitLab, Jenkins) all read JUnit XML, so a Retell batch
shows up in a pipeline like any other test run: one `<testcase>` per Retell test case, the
engine as the class name, Retell's `result_explanation` as the failure or error message.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from collections.abc import Mapping, Sequence
from datetime import datetime
from pathlib import Path

from bot.comparing import CaseChange, VersionComparison
from bot.repeats import CaseSummary, totals
from bot.text import one_line

# XML 1.0 cannot carry most control characters, even escaped: drop them from outside text.
_NOT_XML = re.compile("[^\t\n\r\u0020-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")
NO_EXPLANATION = "Retell gave no explanation."
UNFINISHED_MESSAGE = "Did not finish before the batch stopped being followed (timed out)."


def xml_text(text: str) -> str:
    """Outside text made safe for XML 1.0 (ElementTree escapes markup but not control chars)."""
    return _NOT_XML.sub("", text)


def junit_tree(
    summaries: Sequence[CaseSummary],
    *,
    suite_name: str,
    classname: str,
    seconds: float,
    timestamp: datetime | None = None,
    properties: Mapping[str, str] | None = None,
) -> ET.ElementTree:
    """A `<testsuites>` document with one `<testsuite>` and one `<testcase>` per case.

    A case that failed in any run gets `<failure>`, else one that errored gets `<error>`, else
    one that never finished gets `<skipped>`; the `message` is Retell's explanation. With
    several runs (`--repeat`) the element's text says how many runs failed and flags FLAKY.
    """
    counted = totals(summaries)
    failures = counted.failed + counted.flaky
    errors = counted.errored
    skipped = sum(1 for s in summaries if s.verdict == "unfinished")
    shown_time = f"{max(seconds, 0.0):.3f}"
    counts = {
        "tests": str(counted.cases),
        "failures": str(failures),
        "errors": str(errors),
        "skipped": str(skipped),
        "time": shown_time,
    }
    root, suite = _document(suite_name, counts, timestamp, properties)
    for summary in summaries:
        suite.append(_testcase(summary, classname))
    return ET.ElementTree(root)


def _document(
    suite_name: str,
    counts: Mapping[str, str],
    timestamp: datetime | None,
    properties: Mapping[str, str] | None,
) -> tuple[ET.Element, ET.Element]:
    """`<testsuites>` holding the one `<testsuite>`, with its counts, time and properties."""
    root = ET.Element("testsuites", {"name": xml_text(suite_name), **counts})
    suite = ET.SubElement(root, "testsuite", {"name": xml_text(suite_name), **counts})
    if timestamp is not None:
        suite.set("timestamp", timestamp.replace(microsecond=0).isoformat())
    if properties:
        listed = ET.SubElement(suite, "properties")
        for name, value in properties.items():
            ET.SubElement(listed, "property", {"name": xml_text(name), "value": xml_text(value)})
    return root, suite


def _testcase(summary: CaseSummary, classname: str) -> ET.Element:
    case = ET.Element(
        "testcase", {"classname": xml_text(classname), "name": xml_text(one_line(summary.name))}
    )
    listed = ET.SubElement(case, "properties")
    details = {
        "test_case_definition_id": summary.case_id,
        "runs": str(summary.runs),
        "passes": str(summary.passes),
        "fails": str(summary.fails),
        "errors": str(summary.errors),
    }
    if summary.flaky:
        details["flaky"] = "true"
    for name, value in details.items():
        ET.SubElement(listed, "property", {"name": name, "value": xml_text(value)})
    verdict = summary.verdict
    if verdict in ("fail", "flaky", "error"):
        tag = "error" if verdict == "error" else "failure"
        message = summary.explanation or NO_EXPLANATION
        element = ET.SubElement(case, tag, {"message": xml_text(message), "type": tag})
        element.text = xml_text(_detail(summary))
    elif verdict == "unfinished":
        ET.SubElement(case, "skipped", {"message": UNFINISHED_MESSAGE})
    return case


def _detail(summary: CaseSummary) -> str:
    """The element's text: how the runs went, the case id, and every explanation Retell gave."""
    lines: list[str] = []
    if summary.runs > 1:
        head = (
            f"Failed {summary.fails} of {summary.runs} runs, errored {summary.errors}, "
            f"passed {summary.passes}."
        )
        lines.append(f"FLAKY: {head}" if summary.flaky else head)
    lines.append(f"Test case definition: {summary.case_id}")
    lines.extend(summary.explanations or (NO_EXPLANATION,))
    return "\n".join(lines)


def comparison_tree(
    comparison: VersionComparison,
    *,
    suite_name: str,
    classname: str,
    seconds: float,
    timestamp: datetime | None = None,
    properties: Mapping[str, str] | None = None,
) -> ET.ElementTree:
    """`compare` as JUnit: one `<testcase>` per case, judged on version B against A.

    A case that regressed or still fails on B gets `<failure>` with B's explanation; one that
    never finished `<skipped>`. A flaky case passes with a `<system-out>` note saying how often
    it passed on each version: the comparison does not fail on it (nor does the exit code).
    """
    failed = comparison.count("regressed") + comparison.count("still_failing")
    counts = {
        "tests": str(len(comparison.cases)),
        "failures": str(failed),
        "errors": "0",
        "skipped": str(comparison.count("unfinished")),
        "time": f"{max(seconds, 0.0):.3f}",
    }
    root, suite = _document(suite_name, counts, timestamp, properties)
    for case in comparison.cases:
        suite.append(_changed_case(case, classname))
    return ET.ElementTree(root)


def _changed_case(case: CaseChange, classname: str) -> ET.Element:
    element = ET.Element(
        "testcase", {"classname": xml_text(classname), "name": xml_text(one_line(case.name))}
    )
    listed = ET.SubElement(element, "properties")
    details = {"test_case_definition_id": case.case_id, "change": case.change}
    for side, summary in (("a", case.a), ("b", case.b)):
        if summary is not None:
            details[f"{side}_passes"] = f"{summary.passes}/{summary.runs}"
    for name, value in details.items():
        ET.SubElement(listed, "property", {"name": name, "value": xml_text(value)})
    if case.change in ("regressed", "still_failing"):
        why = (case.b.explanation if case.b is not None else None) or NO_EXPLANATION
        failure = ET.SubElement(element, "failure", {"message": xml_text(why), "type": "failure"})
        head = (
            "Regressed: passed on A, not on B."
            if case.change == "regressed"
            else ("Still failing: passed on neither version.")
        )
        failure.text = xml_text(
            "\n".join(
                [
                    head,
                    f"Test case definition: {case.case_id}",
                    *(case.b.explanations if case.b else ()),
                ]
            )
        )
    elif case.change == "unfinished":
        ET.SubElement(element, "skipped", {"message": UNFINISHED_MESSAGE})
    elif case.change == "flaky":
        note = ", ".join(
            f"{side} passed {s.passes} of {s.runs} runs"
            for side, s in (("A", case.a), ("B", case.b))
            if s is not None
        )
        ET.SubElement(element, "system-out").text = xml_text(f"FLAKY: {note}.")
    return element


def write(tree: ET.ElementTree, path: Path) -> None:
    """Write the document as indented UTF-8 with an XML declaration."""
    ET.indent(tree)
    path.parent.mkdir(parents=True, exist_ok=True)
    tree.write(path, encoding="utf-8", xml_declaration=True)
