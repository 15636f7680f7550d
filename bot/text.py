"""Text from outside (Retell's names and errors, Slack payloads) made safe to show or log.

Two rules, kept here so every surface applies the same ones:
- a *name* is one line: whitespace runs collapse to one space, and bidi and zero-width
  controls (which can make `Cancel` read as `lecnaC` or hide text) are dropped;
- a *log line* shows control and invisible characters as escapes (`\\n`, `\\x1b`,
  `\\u202e`), so outside text can neither forge a log line, colour a terminal, nor reorder
  what a reader sees.
"""

from __future__ import annotations

import re

# Bidi embeddings, overrides, isolates and marks, and zero-width characters.
_INVISIBLE = "\u061c\u180e\u200b-\u200f\u202a-\u202e\u2060-\u2069\ufeff"
# C0 and C1 controls, DEL, and the line and paragraph separators.
_CONTROL = "\x00-\x1f\x7f-\x9f\u2028\u2029"

_INVISIBLE_CHARS = re.compile(f"[{_INVISIBLE}]")
_CONTROL_CHARS = re.compile(f"[{_CONTROL}]")
_UNPRINTABLE_CHARS = re.compile(f"[{_CONTROL}{_INVISIBLE}]")
_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


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
