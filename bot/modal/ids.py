"""The Run modal's ids, limits and the id shapes it accepts.

Listeners, the view and the submission reader all need the same ids; one module keeps them
in step (Slack matches block and action ids exactly).
"""

from __future__ import annotations

import re
from typing import TypeGuard

from bot.suite import ENGINE_KINDS

SHORTCUT_ID = "run_retell_tests"
CALLBACK_ID = "run_retell_tests_modal"

ENGINE_BLOCK = "run_engine"
ENGINE_ACTION = "run_engine"
VERSION_BLOCK = "run_version"
VERSION_ACTION = "run_version"
CASES_BLOCK = "run_cases"  # the block id gets a suffix per engine: see `cases_block_id`
CASES_ACTION = "run_cases"
CHANNEL_BLOCK = "run_channel"
CHANNEL_ACTION = "run_channel"
REPEAT_BLOCK = "run_repeat"
REPEAT_ACTION = "run_repeat"
COMPARE_BLOCK = "run_compare"
COMPARE_ACTION = "run_compare"
MIN_PASS_BLOCK = "run_min_pass"
MIN_PASS_ACTION = "run_min_pass"

# Option values no engine or test case id can take (ids never start with `*` or `!`).
ALL_CASES = "*all*"  # "All test cases"; `*all*:<count>` carries the count seen when listed
HINT = "!"  # a message shown as an option ("Retell did not answer…"); never run

MAX_OPTIONS = 100
MAX_OPTION_TEXT = 75
MAX_OPTION_VALUE = 150
MAX_METADATA = 3000
MAX_ERROR_TEXT = 300
MAX_VERSION_DIGITS = 9

ENGINE_LABELS = {kind: words[:1].upper() + words[1:] for kind, words in ENGINE_KINDS.items()}

ENGINE_ID_PATTERN = re.compile(r"(?:llm|conversation_flow)_[A-Za-z0-9_\-]{1,128}")
CASE_ID_PATTERN = re.compile(r"[A-Za-z0-9_.\-]{1,128}")
VERSION_PATTERN = re.compile(rf"[vV]?([0-9]{{1,{MAX_VERSION_DIGITS}}})")  # "3" or "v3"
LATEST = "latest"  # "Compare with version": the engine's latest, resolved when the runs start
# "Minimum pass rate (%)": loose on purpose (a sign, many digits, a `%`), so that what is off
# can be said precisely; the reader then holds it to 0-100 with at most two decimals.
PERCENT_PATTERN = re.compile(r"(-?[0-9]{1,12}(?:\.([0-9]{1,12}))?)\s*%?")


def is_engine_id(value: object) -> TypeGuard[str]:
    """Whether a value is a Retell LLM or conversation flow id a batch can run against."""
    return isinstance(value, str) and ENGINE_ID_PATTERN.fullmatch(value) is not None
