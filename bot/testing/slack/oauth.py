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

    def install_workspace(
        self,
        team_id: str,
        token: str,
        name: str | None = None,
        *,
        enterprise_id: str | None = None,
    ) -> Workspace:
        """A workspace the app is installed in with this (non-rotating) bot token, as if its
        OAuth flow had happened; for benchmarks that preload installations in the bot."""
        workspace = self.workspaces.get(team_id)
        if workspace is None:
            workspace = self.add_workspace(team_id, name, enterprise_id=enterprise_id)
        workspace.installed = True
        workspace.tokens[token] = None
        self._token_teams[token] = team_id
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
        known = self.workspaces.get(self._token_teams.get(token, ""))
        # The index first (a thousand workspaces would make every call a scan), then a scan:
        # tests may put tokens in `Workspace.tokens` themselves.
        for workspace in ([known] if known is not None else []) + list(self.workspaces.values()):
            if token in workspace.tokens:
                expires = workspace.tokens[token]
                if expires is not None and expires < time.time():
                    raise SlackApiFailure("token_expired", "the token has expired")
                self._token_teams[token] = workspace.team_id
                return workspace.team_id
        return None

    # ----- the control endpoint (a standalone stand-in: benchmarks) ------------------------

    async def _control_install_workspaces(self, request: web.Request) -> web.StreamResponse:
        """`POST /_control/workspaces {"workspaces": [{"team_id", "token", "name"?,
        "enterprise_id"?}, ...]}`: install the app in all of them, each with its token."""
        body = await request.json() if request.can_read_body else {}
        entries = body.get("workspaces") if isinstance(body, dict) else None
        if not isinstance(entries, list) or not all(
            isinstance(e, dict) and isinstance(e.get("team_id"), str) and e.get("token")
            for e in entries
        ):
            return web.json_response(
                {"ok": False, "error": 'expected {"workspaces": [{"team_id", "token"}, ...]}'},
                status=400,
            )
        tokens = [str(e["token"]) for e in entries]
        held = {token: w.team_id for w in self.workspaces.values() for token in w.tokens}
        if len(set(tokens)) < len(tokens) or any(
            held.get(str(e["token"]), e["team_id"]) != e["team_id"] for e in entries
        ):
            return web.json_response(
                {"ok": False, "error": "a token belongs to one workspace only"}, status=400
            )
        for entry in entries:
            self.install_workspace(
                entry["team_id"],
                str(entry["token"]),
                entry.get("name"),
                enterprise_id=entry.get("enterprise_id"),
            )
        return await self._control_workspaces(request)

    async def _control_workspaces(self, _request: web.Request) -> web.StreamResponse:
        """`GET /_control/workspaces`: every workspace, installed or not, and the app's client
        id (what the bot's SLACK_CLIENT_ID must be); never a token or the secret."""
        return web.json_response(
            {
                "ok": True,
                "client_id": self.client_id,
                "workspaces": [
                    {
                        "team_id": w.team_id,
                        "name": w.name,
                        "enterprise_id": w.enterprise_id,
                        "installed": w.installed,
                        "tokens": len(w.tokens),
                    }
                    for w in self.workspaces.values()
                ],
            }
        )

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
        self._token_teams[token] = workspace.team_id
        return answer
