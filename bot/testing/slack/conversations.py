"""The conversations.* and users.* methods: membership, history, threads and members' time zones."""

from __future__ import annotations

from bot.testing.slack.params import param_bool, param_str
from bot.testing.slack.records import (
    JSONDict,
    Message,
    SlackApiFailure,
    message_json,
)
from bot.testing.slack.state import SlackState


class ConversationsMixin(SlackState):
    """conversations.join, info, open, history and replies, and users.info."""

    def _users_info(self, params: JSONDict) -> JSONDict:
        user_id = param_str(params, "user")
        if not user_id:
            raise SlackApiFailure("user_not_found", "no user given")
        return {"user": self._user(user_id).to_json(self.team_id)}

    def _conversations_join(self, params: JSONDict) -> JSONDict:
        channel = self._channel(param_str(params, "channel"))
        if channel.private or channel.is_im:
            raise SlackApiFailure(
                "method_not_supported_for_channel_type", f"{channel.id} is not public"
            )
        if channel.archived:
            raise SlackApiFailure("is_archived", f"{channel.id} is archived")
        channel.member = True
        return {"channel": channel.to_json()}

    def _conversations_info(self, params: JSONDict) -> JSONDict:
        channel = self._channel(param_str(params, "channel"))
        if channel.private and not channel.member:
            raise SlackApiFailure("channel_not_found", f"{channel.id} is private, bot not in it")
        return {"channel": channel.to_json()}

    def _conversations_open(self, params: JSONDict) -> JSONDict:
        users = (param_str(params, "users") or "").split(",")
        if len(users) != 1 or not users[0]:
            raise SlackApiFailure("users_list_not_supplied", "give exactly one user")
        self._user(users[0])
        return {"channel": self._channel(users[0]).to_json()}

    def _conversations_history(self, params: JSONDict) -> JSONDict:
        """A channel's top-level messages, newest first, from `oldest` on (one page).

        Thread replies are left out, as Slack does; message metadata is shown only with
        `include_all_metadata`. The bot must be a member of a private channel.
        """
        channel = self._channel(param_str(params, "channel"))
        if channel.private and not channel.member:
            raise SlackApiFailure("channel_not_found", f"{channel.id} is private, bot not in it")
        oldest = float(param_str(params, "oldest") or 0)
        limit = min(max(int(param_str(params, "limit") or 100), 1), 999)
        with_metadata = param_bool(params, "include_all_metadata")
        found = [
            message
            for message in reversed(self.messages)
            if message.channel == channel.id
            and not message.deleted
            and not message.is_reply
            and float(message.ts) >= oldest
        ]
        cursor = param_str(params, "cursor") or ""
        return _page_of_messages(found, limit=limit, with_metadata=with_metadata, cursor=cursor)

    def _conversations_replies(self, params: JSONDict) -> JSONDict:
        """A thread: its parent message first, then the replies, oldest first (one page).

        As Slack: `ts` must be a message of the channel (`thread_not_found` otherwise), and
        message metadata is shown only with `include_all_metadata`.
        """
        channel = self._channel(param_str(params, "channel"))
        if channel.private and not channel.member:
            raise SlackApiFailure("channel_not_found", f"{channel.id} is private, bot not in it")
        ts = param_str(params, "ts")
        limit = min(max(int(param_str(params, "limit") or 100), 1), 1000)
        with_metadata = param_bool(params, "include_all_metadata")
        thread = [
            message
            for message in self.messages
            if message.channel == channel.id
            and not message.deleted
            and (message.ts == ts or message.thread_ts == ts)
        ]
        if not any(message.ts == ts for message in thread):
            raise SlackApiFailure("thread_not_found", f"no message {ts} in {channel.id}")
        thread.sort(key=lambda message: (message.ts != ts, float(message.ts)))
        cursor = param_str(params, "cursor") or ""
        return _page_of_messages(thread, limit=limit, with_metadata=with_metadata, cursor=cursor)


def _page_of_messages(
    messages: list[Message], *, limit: int, with_metadata: bool, cursor: str = ""
) -> JSONDict:
    """One page of a conversations.* listing, as Slack answers it (metadata only if asked).

    The cursor is opaque to callers, as Slack's is; here it is the offset of the next page.
    """
    start = int(cursor) if cursor.isdigit() else 0
    shown = []
    for message in messages[start : start + limit]:
        body = message_json(message)
        if not with_metadata:
            body.pop("metadata", None)
        shown.append(body)
    more = len(messages) > start + limit
    return {
        "messages": shown,
        "has_more": more,
        "response_metadata": {"next_cursor": str(start + limit) if more else ""},
    }
