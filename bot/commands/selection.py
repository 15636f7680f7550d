"""Resolving a test selection against the engine's definitions: names to ids, `all`, the limit on
cases, and which typed ids or names Retell does not know (with close matches).
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

from bot.commands.model import _TESTS_FORMS, MAX_CASES, MAX_NAMES_SHOWN, CommandError, TestSelection
from bot.commands.scanner import _join_or, _show, _show_name
from bot.text import escape, search_key

if TYPE_CHECKING:  # only a type here: the parser stays free of the Retell SDK's import cost
    from bot.retell import CaseDefinition


def needs_definitions(selection: TestSelection) -> bool:
    """Whether resolving needs the engine's definitions from Retell (names or `all`).

    Explicit ids are passed to Retell as given, so a run of ids alone costs no listing call;
    `resolve_tests` is still called (with no definitions) for the count limit.
    """
    return selection.everything or bool(selection.names)


def resolve_tests(
    selection: TestSelection,
    definitions: Sequence[CaseDefinition],
    *,
    max_cases: int = MAX_CASES,
) -> tuple[str, ...] | CommandError:
    """The definition ids to run: explicit ids first, then `all` or the names' matches.

    Names match case-insensitively; a name matching several definitions runs them all. Unknown
    names are reported together with close matches, and the count limit is checked here, so
    nothing is created in Retell for a selection that cannot run.
    """
    chosen: list[str] = list(selection.ids)
    if selection.everything:
        if not definitions:
            return CommandError(
                "This engine has no test case definitions in Retell, so `all` has nothing to "
                "run. Create test cases for it in Retell first.",
                "run",
            )
        chosen.extend(d.case_id for d in definitions)
    if selection.names:
        by_key: dict[str, list[str]] = {}
        shown_name: dict[str, str] = {}
        for definition in definitions:
            key = search_key(definition.name)
            by_key.setdefault(key, []).append(definition.case_id)
            shown_name.setdefault(key, definition.name)
        missing: list[str] = []
        for name in selection.names:
            ids = by_key.get(search_key(name))
            if ids is None:
                missing.append(name)
            else:
                chosen.extend(ids)
        if missing:
            return _names_not_found(missing, shown_name)
    result = tuple(dict.fromkeys(chosen))
    if not result:
        return CommandError(f"Name at least one test case: {_TESTS_FORMS}.", "run")
    if len(result) > max_cases:
        return CommandError(
            f"That comes to {len(result):,} test cases; a run can have at most {max_cases:,}. "
            "Split them into several runs.",
            "run",
        )
    return result


def ids_not_found(
    case_ids: Sequence[str], definitions: Sequence[CaseDefinition]
) -> CommandError | None:
    """The ids among `case_ids` that are not definitions of the engine, each with close ids,
    or None when all of them are (then Retell refused for another reason).

    Ids are passed to Retell unchecked (no listing call per run); this is read only after
    Retell refused a batch, to say which ids it did not know.
    """
    known = {d.case_id: d.name for d in definitions}
    missing = [case_id for case_id in case_ids if case_id not in known]
    if not missing:
        return None
    if not known:
        return CommandError(
            "This engine has no test case definitions in Retell, so none of the ids can run.",
            "run",
        )

    def hint(case_id: str) -> str:
        close = difflib.get_close_matches(case_id, list(known), n=3)
        if not close:
            return "no close match"
        named = [f"`{escape(c)}` ({_show_name(known[c], 40)})" for c in close]
        return "did you mean " + _join_or(named) + "?"

    lines = [f"• {_show(case_id)}: {hint(case_id)}" for case_id in missing[:MAX_NAMES_SHOWN]]
    if len(missing) > MAX_NAMES_SHOWN:
        lines.append(f"…and {len(missing) - MAX_NAMES_SHOWN} more.")
    header = (
        f"{len(missing)} of the test case ids are not definitions of this engine, so Retell "
        "created nothing:"
    )
    return CommandError("\n".join([header, *lines]), "run")


def _names_not_found(missing: Sequence[str], shown_name: Mapping[str, str]) -> CommandError:
    """One line per unknown name, each with up to three close matches among the engine's names."""
    if not shown_name:
        listed = ", ".join(_show_name(name) for name in missing[:MAX_NAMES_SHOWN])
        more = len(missing) - MAX_NAMES_SHOWN
        tail = f" and {more} more" if more > 0 else ""
        return CommandError(
            f"No test case named {listed}{tail}: this engine has no test case definitions "
            "in Retell.",
            "run",
        )
    keys = list(shown_name)

    def hint(name: str) -> str:
        close = difflib.get_close_matches(search_key(name), keys, n=3)
        if not close:
            return "no close match"
        return "did you mean " + _join_or([_show_name(shown_name[k], 60) for k in close]) + "?"

    if len(missing) == 1:
        return CommandError(
            f"No test case named {_show_name(missing[0])} for this engine; {hint(missing[0])}",
            "run",
        )
    lines = [f"• {_show_name(name)}: {hint(name)}" for name in missing[:MAX_NAMES_SHOWN]]
    if len(missing) > MAX_NAMES_SHOWN:
        lines.append(f"…and {len(missing) - MAX_NAMES_SHOWN} more.")
    header = f"{len(missing)} test case names were not found for this engine:"
    return CommandError("\n".join([header, *lines]), "run")
