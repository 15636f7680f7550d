"""`Refusal`: why a person may not do something here, and whom to ask, as data.

The policy that decides (`bot.runs.refusals`, the schedules' owner rule) returns one; each
surface renders it its own way: `blocks.refused` as a Slack message that mentions the admins,
`modal.refusal_error` as the plain text of a form's inline error, where mentions cannot render.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Refusal:
    """A refusal in words: `reason` is plain text (escaped when rendered)."""

    reason: str
    admins: frozenset[str] = frozenset()  # Slack user ids of ADMIN_USER_IDS, to be asked
    owner: str | None = None  # who created the thing refused (a schedule), if it matters
