"""Text from outside (Retell's names and errors, Slack payloads) made safe to show or log.

One room for every rule about text, so that the parser, Block Kit, the modal and the CLI agree:
- Slack's three HTML entities are escaped and unescaped in one pass (`escape`, `unescape`);
- Slack measures its limits in UTF-16 code units, so an emoji can count twice: `utf16_length`,
  and `clip`, which cuts to a limit without splitting a character or an emoji sequence;
- names are compared the way people type them (`search_key`);
- a *name* is one line: whitespace runs collapse to one space, and bidi and zero-width
  controls (which can make `Cancel` read as `lecnaC` or hide text) are dropped;
- a *log line* shows control and invisible characters as escapes (`\\n`, `\\x1b`,
  `\\u202e`), so outside text can neither forge a log line, colour a terminal, nor reorder
  what a reader sees.
"""

from __future__ import annotations

import re
import unicodedata

# Bidi embeddings, overrides, isolates and marks, and zero-width characters.
_INVISIBLE = "\u061c\u180e\u200b-\u200f\u202a-\u202e\u2060-\u2069\ufeff"
# C0 and C1 controls, DEL, and the line and paragraph separators.
_CONTROL = "\x00-\x1f\x7f-\x9f\u2028\u2029"

_INVISIBLE_CHARS = re.compile(f"[{_INVISIBLE}]")
_CONTROL_CHARS = re.compile(f"[{_CONTROL}]")
_UNPRINTABLE_CHARS = re.compile(f"[{_CONTROL}{_INVISIBLE}]")
_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}

ELLIPSIS = "…"

_ENTITY = re.compile(r"&(amp|lt|gt);")
_ENTITIES = {"amp": "&", "lt": "<", "gt": ">"}
_ZWJ = "\u200d"
_JOINERS = frozenset({_ZWJ, "\ufe0e", "\ufe0f"})  # joiner and variation selectors
_QUOTE_FOLD = str.maketrans(
    {"\u2018": "'", "\u2019": "'", "\u201c": '"', "\u201d": '"', "\u201e": '"'}
)


def escape(text: str) -> str:
    """Escape mrkdwn's control characters so outside text never becomes a mention or link."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def unescape(text: str) -> str:
    """Undo Slack's three entities in one pass, so `&amp;lt;` stays the text `&lt;`."""
    return _ENTITY.sub(lambda m: _ENTITIES[m.group(1)], text)


def utf16_length(text: str) -> int:
    """Length as Slack counts it for its limits: UTF-16 code units (an emoji can be two)."""
    return len(text.encode("utf-16-le", "surrogatepass")) // 2


def fitting(text: str, units: int) -> int:
    """How many characters of `text` fit in `units` UTF-16 units, ending between clusters.

    A cut never separates a letter from its accents, nor an emoji sequence joined by ZWJ or
    made emoji by a variation selector, so the part that fits is still readable text.
    """
    end = used = 0
    for char in text:
        used += 2 if ord(char) > 0xFFFF else 1
        if used > units:
            break
        end += 1
    while 0 < end < len(text) and (
        unicodedata.combining(text[end]) or text[end] in _JOINERS or text[end - 1] == _ZWJ
    ):
        end -= 1
    return end


def clip(text: str, limit: int) -> str:
    """`text` in at most `limit` UTF-16 units, ending in "…" when cut."""
    if utf16_length(text) <= limit:
        return text
    return text[: fitting(text, limit - len(ELLIPSIS))].rstrip() + ELLIPSIS


def search_key(text: str) -> str:
    """How names and queries are compared: NFKC, curly quotes folded, spaces collapsed, casefold.

    Slack clients turn a typed apostrophe into a curly one, and full-width or accented input
    must still match.
    """
    folded = unicodedata.normalize("NFKC", text).translate(_QUOTE_FOLD)
    return " ".join(folded.split()).casefold()


def one_line(text: str) -> str:
    """A name as one plain line: no line breaks, no invisible or direction-changing marks."""
    visible = _INVISIBLE_CHARS.sub("", text)
    return " ".join(_CONTROL_CHARS.sub(" ", visible).split())


def printable(text: str) -> str:
    """`text` for a text log: every control and invisible character written as an escape."""
    return _UNPRINTABLE_CHARS.sub(_escape, text)


def _escape(match: re.Match[str]) -> str:
    char = match.group()
    if char in _NAMED:
        return _NAMED[char]
    code = ord(char)
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"
