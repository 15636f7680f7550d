"""The `/_control/*` endpoints, for the demo and benchmarks driving a standalone stand-in.

They need no token; they read the recorded state and queue faults and response_urls.
`/_control/workspaces` (installing the app in many workspaces at once, each with its token) is
the OAuth side's, in `bot.testing.slack.oauth`.
"""

from __future__ import annotations

from dataclasses import asdict

from aiohttp import web

from bot.testing.slack.observation import ObservationMixin
from bot.testing.slack.response_urls import ResponseUrlsMixin
from bot.testing.slack.tiers import SlackTiers


class ControlMixin(ObservationMixin, ResponseUrlsMixin):
    """Stats, messages, responses and uploaded files as JSON; new response_urls and faults."""

    async def _control_stats(self, _request: web.Request) -> web.StreamResponse:
        return web.json_response(self.stats())

    async def _control_file(self, request: web.Request) -> web.StreamResponse:
        """The bytes of an uploaded file, as sent by the bot."""
        upload = self.uploads.get(request.match_info["file_id"])
        if upload is None or upload.data is None:
            return web.Response(status=404, text="file_not_found")
        return web.Response(body=upload.data, content_type="application/octet-stream")

    async def _control_calls(self, request: web.Request) -> web.StreamResponse:
        """Every Web API call answered so far (from `?since=N`, an index): its method, channel,
        whether it was ok and the workspace whose token it carried; never the token."""
        since = int(request.query.get("since", "0") or 0)
        return web.json_response(
            {
                "total": len(self.calls),
                "calls": [
                    {
                        "method": call.method,
                        "channel": call.params.get("channel"),
                        "ok": call.ok,
                        "at": call.at,
                        "team_id": call.team_id,
                    }
                    for call in self.calls[since:]
                ],
            }
        )

    async def _control_messages(self, _request: web.Request) -> web.StreamResponse:
        return web.json_response([m.to_json() for m in self.messages])

    async def _control_responses(self, _request: web.Request) -> web.StreamResponse:
        return web.json_response(
            {"responses": self.responses, "ephemerals": [asdict(e) for e in self.ephemerals]}
        )

    async def _control_new_response_url(self, request: web.Request) -> web.StreamResponse:
        body = await request.json() if request.can_read_body else {}
        url = self.new_response_url(channel=body.get("channel"), message_ts=body.get("message_ts"))
        return web.json_response({"url": url})

    async def _control_fail_next(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        if body.get("lose_answer"):
            self.lose_answer_next(body["method"], times=int(body.get("times", 1)))
        elif body.get("drop"):
            self.drop_next(body["method"], times=int(body.get("times", 1)))
        else:
            self.fail_next(
                body["method"],
                error=body.get("error"),
                status=body.get("status"),
                times=int(body.get("times", 1)),
                retry_after=body.get("retry_after"),
            )
        return web.json_response({"ok": True})

    async def _control_get_rate_limits(self, _request: web.Request) -> web.StreamResponse:
        tiers = self.rate_limits
        return web.json_response(
            {
                "rate_limits": None if tiers is None else tiers.to_json(),
                "rate_limited": dict(self._rate_limited),
            }
        )

    async def _control_set_rate_limits(self, request: web.Request) -> web.StreamResponse:
        """``"slack"``, a `SlackTiers.from_json` object, or ``{"off": true}``; buckets refilled."""
        body = await request.json() if request.can_read_body else "slack"
        try:
            if isinstance(body, dict) and body.get("off") is True:
                self.set_rate_limits(None)
            else:
                self.set_rate_limits(SlackTiers.from_json(body))
        except (ValueError, KeyError, TypeError) as problem:
            return web.json_response({"ok": False, "error": str(problem)}, status=400)
        return await self._control_get_rate_limits(request)
