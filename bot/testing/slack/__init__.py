"""A local stand-in for Slack, so the bot can be exercised without a workspace or credentials.

`FakeSlack` serves the Web API methods the bot uses over real HTTP (aiohttp), answers like Slack
does (HTTP 200 with ``{"ok": false, "error": ...}``), enforces the channel rules and Block Kit
limits that make real Slack reject messages, records everything for assertions, injects faults,
enforces Slack's rate-limit tiers when asked (`SlackTiers`), serves ``response_url`` endpoints
and a Socket Mode websocket. `SlackUser` plays the *user's* side: signed slash-command and
button-press requests to the bot.

Point the bot at it with ``AsyncWebClient(token=fake.bot_token, base_url=fake.api_url)``.
Run it on its own with ``python -m bot.testing.slack --port 0`` (prints ``READY <url>``).

The package is split by responsibility: `records` (what it remembers), `blockkit` (Slack's
limits), `params` (reading requests), `tiers` (Slack's rate limits), one mixin per part of
`FakeSlack` on the shared `state` (`faults`, `observation`, `socket_mode`, `chat`,
`conversations`, `views`, `files`, `response_urls`, `control`), combined in `server`;
`requests` and `user` for the user's side, and `__main__` for the standalone process.
"""

from bot.testing.slack.blockkit import (
    MAX_BUTTON_TEXT,
    MAX_BUTTON_VALUE,
    MAX_ID,
    MAX_MESSAGE_BLOCKS,
    MAX_MESSAGE_TEXT,
    MAX_SECTION_TEXT,
    MAX_VIEW_BLOCKS,
    block_kit_violation,
)
from bot.testing.slack.records import (
    BOT_ID,
    BOT_USER_ID,
    MAX_RESPONSE_URL_USES,
    ApiCall,
    Channel,
    Ephemeral,
    JSONDict,
    Message,
    MessageVersion,
    Rejection,
    SlackApiFailure,
    Upload,
    User,
)
from bot.testing.slack.requests import (
    block_action_body,
    block_action_payload,
    new_trigger_id,
    signed_headers,
    slash_command_body,
    slash_command_payload,
)
from bot.testing.slack.server import FakeSlack
from bot.testing.slack.tiers import (
    POST_MESSAGE,
    SLACK_METHOD_TIERS,
    TIER_1,
    TIER_2,
    TIER_3,
    TIER_4,
    Bucket,
    SlackTiers,
)
from bot.testing.slack.user import BotReply, SlackUser

__all__ = [
    "BOT_ID",
    "BOT_USER_ID",
    "MAX_BUTTON_TEXT",
    "MAX_BUTTON_VALUE",
    "MAX_ID",
    "MAX_MESSAGE_BLOCKS",
    "MAX_MESSAGE_TEXT",
    "MAX_RESPONSE_URL_USES",
    "MAX_SECTION_TEXT",
    "MAX_VIEW_BLOCKS",
    "POST_MESSAGE",
    "SLACK_METHOD_TIERS",
    "TIER_1",
    "TIER_2",
    "TIER_3",
    "TIER_4",
    "ApiCall",
    "BotReply",
    "Bucket",
    "Channel",
    "Ephemeral",
    "FakeSlack",
    "JSONDict",
    "Message",
    "MessageVersion",
    "Rejection",
    "SlackApiFailure",
    "SlackTiers",
    "SlackUser",
    "Upload",
    "User",
    "block_action_body",
    "block_action_payload",
    "block_kit_violation",
    "new_trigger_id",
    "signed_headers",
    "slash_command_body",
    "slash_command_payload",
]
