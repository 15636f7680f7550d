"""The Run modal: pick an engine, a version, test cases and a channel instead of typing ids;
optionally another version to compare with and a minimum pass rate (SPEC §9).

Pure functions only, like `bot.blocks`: the view, the options of its two menus (loaded from
Retell by the listeners, filtered here), and the reading of a submission into what a slash
command would have asked for, or into the inline errors Slack shows under the fields.

Slack's limits hold by construction: at most 100 options a menu, option text and description
at most 75 characters (counted in UTF-16 units, as Slack's clients do, so that emoji and other
astral characters never push a name over), option values at most 150 characters, and
`private_metadata` at most 3000.

- `ids`: block and action ids, limits, the id shapes accepted;
- `origin`: where the modal was opened (`private_metadata`);
- `view`: the view and the options of its menus;
- `submission`: a submitted view as a `RunChoice` or inline errors.
"""

from bot.cache import TTLCache
from bot.modal.ids import (
    ALL_CASES,
    CALLBACK_ID,
    CASES_ACTION,
    CASES_BLOCK,
    CHANNEL_ACTION,
    CHANNEL_BLOCK,
    COMPARE_ACTION,
    COMPARE_BLOCK,
    ENGINE_ACTION,
    ENGINE_BLOCK,
    ENGINE_LABELS,
    HINT,
    LATEST,
    MAX_ERROR_TEXT,
    MAX_METADATA,
    MAX_OPTION_TEXT,
    MAX_OPTION_VALUE,
    MAX_OPTIONS,
    MAX_VERSION_DIGITS,
    MIN_PASS_ACTION,
    MIN_PASS_BLOCK,
    REPEAT_ACTION,
    REPEAT_BLOCK,
    SHORTCUT_ID,
    VERSION_ACTION,
    VERSION_BLOCK,
    is_engine_id,
)
from bot.modal.origin import Origin
from bot.modal.submission import RunChoice, engine_in_view, read_submission, refusal_error
from bot.modal.view import (
    case_options,
    cases_block_id,
    engine_options,
    hint_options,
    retell_hint,
    run_view,
)

__all__ = [
    "ALL_CASES",
    "CALLBACK_ID",
    "CASES_ACTION",
    "CASES_BLOCK",
    "CHANNEL_ACTION",
    "CHANNEL_BLOCK",
    "COMPARE_ACTION",
    "COMPARE_BLOCK",
    "ENGINE_ACTION",
    "ENGINE_BLOCK",
    "ENGINE_LABELS",
    "HINT",
    "LATEST",
    "MAX_ERROR_TEXT",
    "MAX_METADATA",
    "MAX_OPTIONS",
    "MAX_OPTION_TEXT",
    "MAX_OPTION_VALUE",
    "MAX_VERSION_DIGITS",
    "MIN_PASS_ACTION",
    "MIN_PASS_BLOCK",
    "REPEAT_ACTION",
    "REPEAT_BLOCK",
    "SHORTCUT_ID",
    "VERSION_ACTION",
    "VERSION_BLOCK",
    "Origin",
    "RunChoice",
    "TTLCache",
    "case_options",
    "cases_block_id",
    "engine_in_view",
    "engine_options",
    "hint_options",
    "is_engine_id",
    "read_submission",
    "refusal_error",
    "retell_hint",
    "run_view",
]
