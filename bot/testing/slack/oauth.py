"""Installing the app in more workspaces: Slack's authorize page, `oauth.v2.access` (codes
and rotating tokens) and the tokens each workspace's calls are made with.

The stand-in's own workspace (`team_id`, `bot_token`) is installed from the start, as before.
`install(team_id)` and the authorize page install others; each gets its own bot token, and
every Web API call is counted against the workspace whose token it carries (`ApiCall.team_id`).
With `rotating=True` (Slack's token rotation) a token expires after `token_seconds` and
`oauth.v2.access` with `grant_type=refresh_token` swaps a refresh token, once, for a new pair.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import time
from urllib.parse import urlencode

from aiohttp import web

from bot.testing.slack.records import JSONDict, SlackApiFailure, Workspace
from bot.testing.slack.state import SlackState


class OAuthMixin(SlackState):
    """The OAuth side of the stand-in (see the module's doc)."""

    # ----- tests drive these ----------------------------------------------------------------

    def add_workspace(
        self,
        team_id: str,
        name: str | None = None,
        *,
        enterprise_id: str | None = None,
        org_wide: bool = False,
    ) -> Workspace:
        """A workspace people can install the app in (not installed yet)."""
        workspace = Workspace(
            team_id, name or team_id, enterprise_id, org_wide=org_wide, installed=False
        )
        self.workspaces[team_id] = workspace
        return workspace

    def uninstall(self, team_id: str) -> None:
        """Revoke every token of the workspace, as Slack does before `app_uninstalled`."""
        workspace = self.workspaces[team_id]
        workspace.installed = False
        workspace.revoked.update(workspace.tokens)
        workspace.tokens.clear()
        workspace.refresh_tokens.clear()

    def expire_tokens(self, team_id: str) -> None:
        """Every current token of the workspace expires now (a refresh is due)."""
        workspace = self.workspaces[team_id]
        for token in workspace.tokens:
            workspace.tokens[token] = time.time() - 1

    def team_of_token(self, token: str) -> str | None:
        """The workspace a valid token belongs to; raises Slack's error for a dead one."""
        for workspace in self.workspaces.values():
            if token in workspace.tokens:
                expires = workspace.tokens[token]
                if expires is not None and expires < time.time():
                    raise SlackApiFailure("token_expired", "the token has expired")
                return workspace.team_id
        return None

    # ----- Slack's authorize page -----------------------------------------------------------

    async def _handle_authorize(self, request: web.Request) -> web.StreamResponse:
        """The installer approves at once, for the workspace named by `team` (a test's
        choice; Slack shows a picker): back to the app's redirect URL with a code."""
        query = request.query
        if query.get("client_id") != self.client_id:
            return web.Response(status=400, text="invalid_client_id")
        team_id = query.get("team") or next(
            (w.team_id for w in self.workspaces.values() if not w.installed), self.team_id
        )
        if team_id not in self.workspaces:
            return web.Response(status=400, text="unknown team")
        redirect = query.get("redirect_uri") or self.redirect_url
        if not redirect:
            return web.Response(status=400, text="bad_redirect_uri")
        if query.get("deny"):
            raise web.HTTPFound(f"{redirect}?{urlencode({'error': 'access_denied'})}")
        code = f"code-{next(self._token_serial)}"
        self._codes[code] = team_id
        state = query.get("state", "")
        raise web.HTTPFound(f"{redirect}?{urlencode({'code': code, 'state': state})}")

    # ----- oauth.v2.access -------------------------------------------------------------------

    def _check_client(self, request: web.Request, params: JSONDict) -> None:
        client_id, client_secret = params.get("client_id"), params.get("client_secret")
        scheme, _, encoded = request.headers.get("Authorization", "").partition(" ")
        if scheme.lower() == "basic":
            try:
                client_id, _, client_secret = base64.b64decode(encoded).decode().partition(":")
            except (binascii.Error, UnicodeDecodeError):
                raise SlackApiFailure("invalid_client_id", "unreadable Basic auth") from None
        if client_id != self.client_id:
            raise SlackApiFailure("invalid_client_id", "unknown client_id")
        if not hmac.compare_digest(str(client_secret or ""), self.client_secret):
            raise SlackApiFailure("bad_client_secret", "client_secret does not match")

    def _oauth_v2_access(self, request: web.Request, params: JSONDict) -> JSONDict:
        self._check_client(request, params)
        if params.get("grant_type") == "refresh_token":
            return self._refresh(str(params.get("refresh_token") or ""))
        team_id = self._codes.pop(str(params.get("code") or ""), None)
        if team_id is None:
            raise SlackApiFailure("invalid_code", "unknown or used code")
        workspace = self.workspaces[team_id]
        workspace.installed = True
        answer = self._new_tokens(workspace)
        enterprise = (
            {"id": workspace.enterprise_id, "name": f"Org {workspace.enterprise_id}"}
            if workspace.enterprise_id
            else None
        )
        return {
            **answer,
            "scope": "commands,chat:write,channels:join,users:read,files:write",
            "bot_user_id": f"B_{team_id}",
            "app_id": self.app_id,
            "team": None if workspace.org_wide else {"id": team_id, "name": workspace.name},
            "enterprise": enterprise,
            "is_enterprise_install": workspace.org_wide,
            "authed_user": {"id": self.next_installer},
        }

    def _refresh(self, refresh_token: str) -> JSONDict:
        for workspace in self.workspaces.values():
            if refresh_token in workspace.refresh_tokens:
                workspace.refresh_tokens.discard(refresh_token)  # single-use
                workspace.refreshes += 1
                return self._new_tokens(workspace)
        raise SlackApiFailure("invalid_refresh_token", "unknown or used refresh token")

    def _new_tokens(self, workspace: Workspace) -> JSONDict:
        serial = next(self._token_serial)
        token = f"xoxb-{workspace.team_id}-{serial}"
        answer: JSONDict = {"access_token": token, "token_type": "bot"}
        if self.rotating:
            workspace.tokens[token] = time.time() + self.token_seconds
            refresh = f"xoxe-{workspace.team_id}-{serial}"
            workspace.refresh_tokens.add(refresh)
            answer.update(refresh_token=refresh, expires_in=int(self.token_seconds))
        else:
            workspace.tokens[token] = None
        return answer
