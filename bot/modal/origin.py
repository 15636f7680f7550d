"""Where the modal was opened, carried through Slack in the view's `private_metadata`."""

from __future__ import annotations

import json
from dataclasses import dataclass

from bot.modal.ids import ENGINE_ID_PATTERN, MAX_METADATA


@dataclass(frozen=True, slots=True)
class Origin:
    """What the modal carries in `private_metadata`: where it was opened, and the engine picked.

    `channel_id` and `response_url` come from the slash command (a shortcut has neither), so a
    run from the modal answers privately exactly like the command would. `engine_id` is the
    engine last picked, kept for menus when a payload lacks the view's state.
    """

    channel_id: str | None = None
    response_url: str | None = None
    engine_id: str | None = None

    def encode(self) -> str:
        """JSON within Slack's 3000 characters; the response_url is dropped first if need be."""
        fields = {"c": self.channel_id, "r": self.response_url, "e": self.engine_id}
        text = json.dumps({k: v for k, v in fields.items() if v}, separators=(",", ":"))
        if len(text) > MAX_METADATA:
            return Origin(self.channel_id, None, self.engine_id).encode()
        return text

    @classmethod
    def decode(cls, text: object) -> Origin:
        """Tolerant: anything unreadable is an Origin without a channel or engine."""
        try:
            data = json.loads(text) if isinstance(text, str) and text else {}
        except ValueError:
            data = {}
        if not isinstance(data, dict):
            data = {}

        def field(key: str) -> str | None:
            value = data.get(key)
            return value if isinstance(value, str) and value else None

        engine_id = field("e")
        return cls(
            channel_id=field("c"),
            response_url=field("r"),
            engine_id=engine_id if engine_id and ENGINE_ID_PATTERN.fullmatch(engine_id) else None,
        )
