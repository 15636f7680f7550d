"""The one text module: Slack's entities, its UTF-16 limits, and how names are compared."""

from __future__ import annotations

import pytest

from bot.blocks import shorten
from bot.commands import Command, parse, resolve_tests
from bot.modal import case_options
from bot.retell import CaseDefinition
from bot.text import clip, escape, fitting, search_key, unescape, utf16_length


def test_clip_counts_utf16_and_never_breaks_a_character() -> None:
    assert clip("short", 75) == "short"
    assert clip("x" * 75, 75) == "x" * 75
    assert clip("x" * 76, 75) == "x" * 74 + "…"
    emoji = "🎧" * 50  # two UTF-16 units each
    clipped = clip(emoji, 75)
    assert utf16_length(clipped) <= 75 and clipped == "🎧" * 37 + "…"
    accents = "e\u0301" * 60  # e + combining acute: never cut between them
    cut = clip(accents, 75)
    assert utf16_length(cut) <= 75 and cut.endswith("e\u0301…")


@pytest.mark.parametrize("text", ["plain", "<@U1> & <!channel>", "&amp;lt; is an entity", "&&<<>>"])
def test_unescape_undoes_escape_exactly(text: str) -> None:
    assert unescape(escape(text)) == text


def test_unescape_is_one_pass_so_an_escaped_entity_stays_text() -> None:
    assert unescape("&amp;lt;b&amp;gt;") == "&lt;b&gt;"
    assert unescape("&lt;b&gt; &quot;") == "<b> &quot;"  # only Slack's three entities


def test_escaped_text_can_never_open_slack_markup() -> None:
    assert "<" not in escape("<!here> <@U1|bob> <https://x|y>")


def test_fitting_stops_before_a_character_that_does_not_fit() -> None:
    assert fitting("ab🎧c", 3) == 2  # the emoji needs two units, only one is left
    assert fitting("ab🎧c", 4) == 3
    assert fitting("👩\u200d💻 dev", 3) == 0  # a ZWJ sequence is one picture: not cut
    assert fitting("", 5) == 0


def test_block_text_is_shortened_by_slacks_utf16_measure_at_a_word_boundary() -> None:
    text = "🎧 " * 40  # each word is three UTF-16 units: the emoji two, the space one
    short = shorten(text, 31)
    assert utf16_length(short) <= 31 and short.endswith("🎧…")
    assert shorten("fits", 4) == "fits"
    assert utf16_length(shorten("x" * 200 + "&amp;", 203)) <= 203


def test_names_match_as_people_type_them() -> None:
    assert search_key("  Refund\u2019s   REQUEST ") == search_key("refund's request")
    assert search_key("\u201eQuoted\u201d") == search_key('"quoted"')
    assert search_key("\uff26\uff35\uff2c\uff2c width") == "full width"


def test_a_name_typed_with_curly_quotes_finds_the_definition_the_modal_would_show() -> None:
    """The parser's resolution and the modal's search fold names by the same rule."""
    definitions = [CaseDefinition("tc_1", "Refund's request"), CaseDefinition("tc_2", "Other")]
    command = parse("run llm_abc \u201cREFUND\u2019S  request\u201d")
    assert isinstance(command, Command)
    assert resolve_tests(command.tests, definitions) == ("tc_1",)
    [option] = [o for o in case_options(definitions, "refund\u2019s") if o["value"] == "tc_1"]
    assert option["text"]["text"] == "Refund's request"
