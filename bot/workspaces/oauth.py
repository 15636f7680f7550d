"""The install link and the OAuth redirect (Bolt's OAuth flow), with pages in plain words.

`GET /slack/install` answers with an "Add to Slack" page whose link carries a fresh `state`
(stored single-use, and bound to the browser by a cookie); `GET /slack/oauth_redirect`
checks both, exchanges the code with `oauth.v2.access` through SLACK_API_URL, stores the
installation and says what happened.
"""

from __future__ import annotations

import html
from urllib.parse import urlsplit, urlunsplit

from slack_bolt.oauth.async_callback_options import (
    AsyncCallbackOptions,
    AsyncFailureArgs,
    AsyncSuccessArgs,
)
from slack_bolt.oauth.async_oauth_settings import AsyncOAuthSettings
from slack_bolt.response import BoltResponse

from bot.settings import Settings
from bot.web import INSTALL_PATH, REDIRECT_PATH
from bot.workspaces.installations import SCOPES, STATE_SECONDS, Installations

# What the installer is told when the redirect fails, by Bolt's reason.
FAILURES = {
    "access_denied": "The app was not installed: the installation was cancelled in Slack.",
    "invalid_browser": (
        "This installation was started in another browser, or its link has expired. "
        "Start again from the install link, in this browser."
    ),
    "invalid_state": (
        "This installation link has expired or was used already. Start again from the install link."
    ),
    "missing_code": "Slack sent no installation code. Start again from the install link.",
    "invalid_code": (
        "Slack did not accept the installation code (it may have been used already). Start "
        "again from the install link."
    ),
    "storage_error": (
        "The installation could not be saved. Nothing was installed; please try again in a minute."
    ),
}
OTHER_FAILURE = "The app was not installed ({reason}). Start again from the install link."


def authorization_url(api_url: str) -> str:
    """Slack's authorize page beside its Web API (slack.com, GovSlack, a test stand-in)."""
    parts = urlsplit(api_url)
    path = parts.path.rstrip("/").removesuffix("/api") + "/oauth/v2/authorize"
    return urlunsplit((parts.scheme, parts.netloc, path, "", ""))


def oauth_settings(settings: Settings, installations: Installations) -> AsyncOAuthSettings:
    assert settings.slack_client_id is not None and settings.slack_client_secret is not None

    async def succeeded(args: AsyncSuccessArgs) -> BoltResponse:
        await installations.installed(args.installation)
        return _installed_page(args)

    async def failed(args: AsyncFailureArgs) -> BoltResponse:
        text = FAILURES.get(args.reason, OTHER_FAILURE.format(reason=args.reason))
        return _page(args.suggested_status_code, "Not installed", text)

    return AsyncOAuthSettings(
        client_id=settings.slack_client_id,
        client_secret=settings.slack_client_secret.get_secret_value(),
        scopes=sorted(settings.slack_scopes) or list(SCOPES),
        redirect_uri=settings.slack_redirect_uri,
        install_path=INSTALL_PATH,
        redirect_uri_path=REDIRECT_PATH,
        callback_options=AsyncCallbackOptions(success=succeeded, failure=failed),
        authorization_url=authorization_url(settings.slack_api_url),
        installation_store=installations.bots,
        installation_store_bot_only=True,
        state_store=installations.states,
        state_expiration_seconds=STATE_SECONDS,
    )


def _installed_page(args: AsyncSuccessArgs) -> BoltResponse:
    installation = args.installation
    where = installation.team_name or installation.enterprise_name or "your workspace"
    text = (
        f"Retell Tests is installed in {where}. Type /retell-test help in any channel to "
        "begin. A workspace admin connects your Retell account in the app's Home tab "
        "(Connect Retell)."
    )
    return _page(200, "Installed", text)


def _page(status: int, title: str, text: str) -> BoltResponse:
    body = (
        "<!DOCTYPE html><html lang=en><head><meta charset=utf-8>"
        f"<title>Retell Tests: {html.escape(title)}</title></head>"
        f"<body><h1>{html.escape(title)}</h1><p>{html.escape(text)}</p></body></html>"
    )
    return BoltResponse(
        status=status, body=body, headers={"Content-Type": "text/html; charset=utf-8"}
    )
