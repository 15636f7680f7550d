"""`FakeSlack`: the mixins combined and served by aiohttp, with token checks and recording.

The routes, the Web API dispatch (faults first, then the token, the rate limit and the method),
and the lifecycle (start, stop, `async with`) live here, on top of what the mixins provide.
"""

from __future__ import annotations

import hmac
import time
from collections.abc import Callable
from functools import cached_property
from types import TracebackType
from typing import Self

from aiohttp import web
from aiohttp.typedefs import Handler as RequestHandler

from bot.testing.slack.chat import ChatMixin
from bot.testing.slack.control import ControlMixin
from bot.testing.slack.conversations import ConversationsMixin
from bot.testing.slack.files import FilesMixin
from bot.testing.slack.oauth import OAuthMixin
from bot.testing.slack.params import read_params
from bot.testing.slack.records import ApiCall, JSONDict, SlackApiFailure
from bot.testing.slack.socket_mode import SocketModeMixin
from bot.testing.slack.views import ViewsMixin

Handler = Callable[[JSONDict], JSONDict]


class FakeSlack(
    OAuthMixin,
    ControlMixin,
    SocketModeMixin,
    ChatMixin,
    ConversationsMixin,
    ViewsMixin,
    FilesMixin,
):
    """Slack's Web API, response_url and Socket Mode endpoints on 127.0.0.1, with a memory.

    Unknown ``C…``/``D…`` channels and unknown users are created on first use so tests only
    register what they care about; pass ``strict_channels``/``strict_users`` to get Slack's
    ``channel_not_found``/``user_not_found`` instead.
    """

    # ----- lifecycle -------------------------------------------------------------------------

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> str:
        """Listen on host:port (0 picks a free port) and return the base URL."""
        app = web.Application(middlewares=[self._notify_after_request])
        app.router.add_route("*", "/api/{method}", self._handle_api)
        app.router.add_get("/oauth/v2/authorize", self._handle_authorize)
        app.router.add_post("/response/{token}", self._handle_response_url)
        app.router.add_post("/upload/{file_id}", self._handle_upload)
        app.router.add_get("/socket-mode", self._handle_socket)
        app.router.add_get("/_control/stats", self._control_stats)
        app.router.add_get("/_control/messages", self._control_messages)
        app.router.add_get("/_control/files/{file_id}", self._control_file)
        app.router.add_get("/_control/responses", self._control_responses)
        app.router.add_post("/_control/response-url", self._control_new_response_url)
        app.router.add_post("/_control/fail-next", self._control_fail_next)
        app.router.add_get("/_control/rate_limits", self._control_get_rate_limits)
        app.router.add_post("/_control/rate_limits", self._control_set_rate_limits)
        app.router.add_get("/_control/workspaces", self._control_workspaces)
        app.router.add_post("/_control/workspaces", self._control_install_workspaces)
        app.router.add_get("/_control/calls", self._control_calls)
        app.on_shutdown.append(self._close_sockets)
        runner = web.AppRunner(app, access_log=None, handle_signals=False, shutdown_timeout=1.0)
        await runner.setup()
        site = web.TCPSite(runner, host, port)
        await site.start()
        bound_host, bound_port = runner.addresses[0][:2]
        if ":" in bound_host:  # IPv6 literal
            bound_host = f"[{bound_host}]"
        self._runner = runner
        self._base_url = f"http://{bound_host}:{bound_port}"
        return self._base_url

    async def stop(self) -> None:
        """Close Socket Mode connections and stop listening."""
        self._fail_pending_acks("FakeSlack stopped")
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.stop()

    # ----- the Web API -----------------------------------------------------------------------

    @cached_property
    def _methods(self) -> dict[str, Handler]:
        """The Web API methods served, by name; anything else is ``unknown_method``."""
        return {
            "auth.test": self._auth_test,
            "chat.postMessage": self._chat_post_message,
            "chat.update": self._chat_update,
            "chat.delete": self._chat_delete,
            "chat.postEphemeral": self._chat_post_ephemeral,
            "chat.getPermalink": self._chat_get_permalink,
            "users.info": self._users_info,
            "conversations.join": self._conversations_join,
            "conversations.info": self._conversations_info,
            "conversations.open": self._conversations_open,
            "conversations.history": self._conversations_history,
            "conversations.replies": self._conversations_replies,
            "views.open": self._views_open,
            "views.publish": self._views_publish,
            "views.update": self._views_update,
            "apps.connections.open": self._apps_connections_open,
            "files.getUploadURLExternal": self._files_get_upload_url,
            "files.completeUploadExternal": self._files_complete_upload,
        }

    @web.middleware
    async def _notify_after_request(
        self,
        request: web.Request,
        handler: RequestHandler,
    ) -> web.StreamResponse:
        try:
            return await handler(request)
        finally:
            await self._notify()

    async def _handle_api(self, request: web.Request) -> web.StreamResponse:
        method = request.match_info["method"]
        try:
            params, token = await read_params(request)
        except SlackApiFailure as failure:
            return self._refuse(method, {}, failure)
        fault = self._take_fault(method)
        if fault is not None and not fault.carried_out:
            return self._apply_fault(request, method, params, fault)
        team: str | None = None
        try:
            if method == "oauth.v2.access":  # the app's client id and secret, no token
                answer = self._oauth_v2_access(request, params)
            else:
                handler = self._methods.get(method)
                if handler is None:
                    raise SlackApiFailure("unknown_method", f"{method} is not served by FakeSlack")
                team = self._check_token(method, token)
                # Per workspace, and per channel where the tier says so.
                self._spend_rate_slot(method, team, _conversation(params))
                self._calling_team = team
                try:
                    answer = handler(params)
                finally:
                    self._calling_team = None
        except SlackApiFailure as failure:
            return self._refuse(method, params, failure)
        self.calls.append(ApiCall(method, params, True, time.time(), team))
        if fault is not None:
            return self._lose_answer(request, method)
        return web.json_response({"ok": True, **answer})

    def _check_token(self, method: str, token: str | None) -> str:
        """The workspace the call is made in, by its token; Slack's error for a bad one."""
        wants_app_token = method == "apps.connections.open"
        if not token:
            raise SlackApiFailure("not_authed", "no token in Authorization header or body")
        if wants_app_token:
            if token == self.bot_token:
                raise SlackApiFailure("not_allowed_token_type", f"{method} needs an app token")
            if not hmac.compare_digest(token, self.app_token):
                raise SlackApiFailure("invalid_auth", "token does not match")
            return self.team_id
        if token == self.app_token:
            raise SlackApiFailure("not_allowed_token_type", f"{method} needs another token type")
        team = self.team_of_token(token)
        if team is None:
            revoked = any(token in w.revoked for w in self.workspaces.values())
            raise SlackApiFailure(
                "token_revoked" if revoked else "invalid_auth", "token does not match"
            )
        return team


def _conversation(params: JSONDict) -> str | None:
    """The conversation a call is about, as a per-channel limit counts it (a user: their DM)."""
    channel = params.get("channel")
    if not isinstance(channel, str) or not channel:
        return None
    return "D" + channel[1:] if channel[0] in "UW" else channel
