"""response_url endpoints: five posts each, replacing, deleting or adding to the original."""

from __future__ import annotations

import json
import time
import uuid

from aiohttp import web

from bot.testing.slack.faults import FaultsMixin
from bot.testing.slack.params import param_bool, param_str
from bot.testing.slack.records import (
    MAX_RESPONSE_URL_USES,
    ApiCall,
    JSONDict,
    ResponseUrlTarget,
    SlackApiFailure,
)


class ResponseUrlsMixin(FaultsMixin):
    """Mints response_urls and applies what is posted to them as Slack shows it."""

    def new_response_url(self, *, channel: str | None = None, message_ts: str | None = None) -> str:
        """Mint a response_url; with `message_ts`, replace_original/delete_original act on it."""
        token = uuid.uuid4().hex
        self._response_urls[token] = ResponseUrlTarget(channel=channel, message_ts=message_ts)
        self.responses[token] = []
        return f"{self.base_url}/response/{token}"

    async def _handle_response_url(self, request: web.Request) -> web.StreamResponse:
        token = request.match_info["token"]
        try:
            body = await request.json()
        except json.JSONDecodeError:
            body = None
        params: JSONDict = body if isinstance(body, dict) else {}
        fault = self._take_fault("response_url")
        if fault is not None:
            return self._apply_fault(request, "response_url", params, fault)
        target = self._response_urls.setdefault(token, ResponseUrlTarget(None, None))
        try:
            if not isinstance(body, dict):
                raise SlackApiFailure("invalid_payload", "body must be a JSON object", 400)
            self._spend_rate_slot("response_url", self.team_id, token)
            if target.uses >= MAX_RESPONSE_URL_USES:
                raise SlackApiFailure("used_url", "a response_url takes five posts", 404)
            self._apply_response(target, body)
        except SlackApiFailure as failure:
            if failure.status == 200:  # response_url errors are HTTP errors, unlike the Web API
                failure.status = 400
            return self._refuse("response_url", params, failure)
        target.uses += 1
        self.responses.setdefault(token, []).append(body)
        self.calls.append(ApiCall("response_url", params, True, time.time()))
        return web.json_response({"ok": True})

    def _apply_response(self, target: ResponseUrlTarget, body: JSONDict) -> None:
        """Make a respond() body visible the way Slack would (replace, delete, in_channel)."""
        if param_bool(body, "delete_original"):
            if target.channel and target.message_ts:
                self._find_message(target.channel, target.message_ts).deleted = True
            return
        text, blocks = self._message_content(body)
        if param_bool(body, "replace_original") and target.channel and target.message_ts:
            self._edit(self._find_message(target.channel, target.message_ts), text, blocks)
        elif body.get("response_type") == "in_channel" and target.channel:
            self._post(self._channel(target.channel), text, blocks, param_str(body, "thread_ts"))
