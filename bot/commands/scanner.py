"""Reading what Slack sends: whitespace, entities, smart quotes and Slack markup normalised, then
split into tokens (hand-written: `shlex` knows neither curly quotes nor `<@U1|bob smith>`).
"""

from __future__ import annotations

import bisect
import re
from collections.abc import Sequence
from dataclasses import dataclass

from bot.commands.model import SHOWN_CHARS, CommandError
from bot.text import clip, escape, unescape

_SPACE_RE = re.compile(r"[\s\x00-\x1f\x7f-\x9f\u200b\u2060\ufeff]+")


_SURROGATE_RE = re.compile(r"[\ud800-\udfff]")


_TEST_ID_RE = re.compile(r"[A-Za-z0-9_.\-]{1,128}")


_BATCH_ID_RE = re.compile(r"[A-Za-z0-9_\-]{1,128}")


_ENGINE_RE = re.compile(r"(?P<id>(?:llm|conversation_flow)_[A-Za-z0-9_\-]{1,128})(?:@(?P<v>.*))?")


_VERSION_RE = re.compile(r"[0-9]{1,9}")


_PERCENT_RE = re.compile(r"(?P<n>[0-9]{1,3}(\.[0-9]{1,2})?)%?")  # `min_pass=`: 95, 97.5, 90%


_NUMBER_RE = re.compile(r"(?P<n>[0-9]{1,12}(\.[0-9]{1,12})?)%?")  # looser, to say what is off


_OPTION_RE = re.compile(r"[A-Za-z][A-Za-z_\-]*=")


_MENTION_RES = (
    re.compile(r"<@(?P<id>[UW][A-Z0-9]+)(?:\|[^>]*)?>"),
    re.compile(r"<!subteam\^(?P<id>[A-Z0-9]+)(?:\|[^>]*)?>"),
)


def _normalise(text: str) -> str:
    """Collapse every kind of whitespace (NBSP, newlines, zero-width, control chars) to one space.

    Lone surrogates (from broken JSON) become U+FFFD so the reply can always be encoded.
    """
    return _SPACE_RE.sub(" ", _SURROGATE_RE.sub("\ufffd", text)).strip()


def _show(text: str) -> str:
    """An offending token as inline code: clipped, escaped, backticks defused."""
    return "`" + escape(clip(text, SHOWN_CHARS).replace("`", "'")) + "`"


def _show_name(name: str, limit: int = SHOWN_CHARS) -> str:
    """A test case name in curly quotes, clipped and escaped."""
    return "“" + escape(clip(name, limit)) + "”"


def _join_or(items: Sequence[str]) -> str:
    if len(items) <= 1:
        return "".join(items)
    return ", ".join(items[:-1]) + " or " + items[-1]


# Opening quote -> the characters that may close it. Slack clients insert curly quotes, and
# some keyboards produce “…“ or „…“, so closers are forgiving.
_QUOTE_PAIRS = {
    '"': '"',
    "'": "'",
    "“": "”“",
    "”": "”",
    "\u2018": "\u2019\u2018",  # single curly quotes
    "\u2019": "\u2019",
    "„": "“”",
    "«": "»",
}


_SEPARATORS = " ,"


@dataclass(frozen=True, slots=True)
class _Token:
    text: str  # entity-unescaped
    quoted: bool  # the whole token was in quotes: a test case name or a schedule's `when`
    raw: str  # as Slack sent it: only here does a `<` mean Slack markup

    @property
    def markup(self) -> bool:
        """Whether the token holds Slack markup (a typed `<` arrives as `&lt;`)."""
        return "<" in self.raw


class _Scanner:
    """Finds the next closing character in O(log n), so no input makes the tokenizer quadratic."""

    def __init__(self, text: str) -> None:
        self._text = text
        self._positions: dict[tuple[str, bool], list[int]] = {}

    def next(self, chars: str, start: int, *, at_boundary: bool = False) -> int | None:
        """Index of the first of `chars` at or after `start` (followed by a separator/end)."""
        key = (chars, at_boundary)
        positions = self._positions.get(key)
        if positions is None:
            text, last = self._text, len(self._text) - 1
            positions = [
                i
                for i, ch in enumerate(text)
                if ch in chars and (not at_boundary or i == last or text[i + 1] in _SEPARATORS)
            ]
            self._positions[key] = positions
        index = bisect.bisect_left(positions, start)
        return positions[index] if index < len(positions) else None

    def closing_quote(self, opener: str, start: int) -> int | None:
        """Where the quote opened by `opener` ends.

        A closer counts first where it ends a word (before a separator or the end), so that
        quotes inside a name stay in it: `"Customer's refund"`, and `“Customer says “cancel””`
        as smart punctuation types it. Only when no closer ends a word does the first one win.
        """
        closers = _QUOTE_PAIRS[opener]
        found = self.next(closers, start, at_boundary=True)
        return found if found is not None else self.next(closers, start)


def _tokenize(text: str) -> list[_Token] | CommandError:
    """Split normalised text into words, quoted strings and `key=value` / `key="value"` options.

    Spaces and commas separate words; a quote opens only at the start of a word or right after
    `=`; Slack markup `<…>` is kept whole even when its label contains spaces or commas.
    """
    scanner = _Scanner(text)
    tokens: list[_Token] = []
    pos, end = 0, len(text)
    while pos < end:
        ch = text[pos]
        if ch in _SEPARATORS:
            pos += 1
            continue
        if ch in _QUOTE_PAIRS:
            close = scanner.closing_quote(ch, pos + 1)
            if close is None:
                return _unterminated(text, pos)
            raw = text[pos + 1 : close]
            tokens.append(_Token(unescape(raw).strip(), True, raw))
            pos = close + 1
            continue
        start = pos
        while pos < end and text[pos] not in _SEPARATORS:
            ch = text[pos]
            if ch == "<":
                markup_end = scanner.next(">", pos)
                next_open = scanner.next("<", pos + 1)
                if markup_end is not None and (next_open is None or markup_end < next_open):
                    pos = markup_end + 1
                    continue
            elif ch in _QUOTE_PAIRS and text[pos - 1] == "=":
                close = scanner.closing_quote(ch, pos + 1)
                if close is None:
                    return _unterminated(text, pos)
                raw = text[start:pos] + text[pos + 1 : close]
                tokens.append(_Token(unescape(raw).strip(), False, raw))
                pos = close + 1
                break
            pos += 1
        else:
            raw = text[start:pos]
            tokens.append(_Token(unescape(raw), False, raw))
    return tokens


def _unterminated(text: str, pos: int) -> CommandError:
    return CommandError(
        f"The quote that starts {_show(unescape(text[pos:]))} is never closed. "
        "Close it with a matching quote mark."
    )
