"""The chat.* methods and auth.test: posting, editing and deleting messages in place."""

from __future__ import annotations

import time

from bot.testing.slack.params import param_json, param_str
from bot.testing.slack.records import (
    BOT_ID,
    BOT_USER_ID,
    Ephemeral,
    JSONDict,
    SlackApiFailure,
    message_json,
)
from bot.testing.slack.state import SlackState


class ChatMixin(SlackState):
    """chat.postMessage, update, delete, postEphemeral, getPermalink and auth.test."""

    def _auth_test(self, _params: JSONDict) -> JSONDict:
        team = self._calling_team or self.team_id
        workspace = self.workspaces.get(team)
        org_wide = workspace is not None and workspace.org_wide
        return {
            "url": f"https://{self.team_domain}.slack.com/",
            "team": workspace.name if workspace is not None else "Fake Team",
            "user": "retell-bot",
            "team_id": None if org_wide else team,
            "enterprise_id": workspace.enterprise_id if workspace is not None else None,
            "user_id": BOT_USER_ID if team == self.team_id else f"B_{team}",
            "bot_id": BOT_ID,
            "is_enterprise_install": org_wide,
        }

    def _chat_post_message(self, params: JSONDict) -> JSONDict:
        channel = self._writable_channel(param_str(params, "channel"))
        text, blocks = self._message_content(params)
        metadata = param_json(params, "metadata", None)
        if metadata is not None and not (
            isinstance(metadata, dict)
            and isinstance(metadata.get("event_type"), str)
            and isinstance(metadata.get("event_payload"), dict)
        ):
            raise SlackApiFailure("invalid_metadata_format", "event_type and event_payload")
        message = self._post(channel, text, blocks, param_str(params, "thread_ts"))
        message.metadata = metadata
        return {"channel": channel.id, "ts": message.ts, "message": message_json(message)}

    def _chat_update(self, params: JSONDict) -> JSONDict:
        channel = self._writable_channel(param_str(params, "channel"))
        message = self._find_message(channel.id, param_str(params, "ts"))
        text, blocks = self._message_content(params)
        self._edit(message, text, blocks)
        return {
            "channel": channel.id,
            "ts": message.ts,
            "text": message.text,
            "message": message_json(message),
        }

    def _chat_delete(self, params: JSONDict) -> JSONDict:
        channel = self._writable_channel(param_str(params, "channel"))
        message = self._find_message(channel.id, param_str(params, "ts"))
        message.deleted = True
        return {"channel": channel.id, "ts": message.ts}

    def _chat_post_ephemeral(self, params: JSONDict) -> JSONDict:
        channel = self._writable_channel(param_str(params, "channel"))
        user = param_str(params, "user")
        if not user:
            raise SlackApiFailure("user_not_found", "no user given")
        self._user(user)
        text, blocks = self._message_content(params)
        ts = self._next_ts()
        self.ephemerals.append(
            Ephemeral(
                channel=channel.id,
                user=user,
                text=text,
                blocks=blocks,
                message_ts=ts,
                thread_ts=param_str(params, "thread_ts"),
                at=time.time(),
            )
        )
        return {"message_ts": ts}

    def _chat_get_permalink(self, params: JSONDict) -> JSONDict:
        channel = self._channel(param_str(params, "channel"))
        message = self._find_message(channel.id, param_str(params, "message_ts"))
        compact_ts = message.ts.replace(".", "")
        return {
            "channel": channel.id,
            "permalink": f"https://{self.team_domain}.slack.com/archives/{channel.id}/p{compact_ts}",
        }
