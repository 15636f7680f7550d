"""Entry points that face Slack: the HTTP server (aiohttp) and Socket Mode.

HTTP mode serves `POST /slack/events` (Bolt verifies every request's signature and timestamp
before any listener runs), `GET /healthz` and `GET /metrics` (Prometheus). Socket Mode keeps
the same server for health checks and metrics, and takes Slack's envelopes over the
authenticated socket.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import signal
from collections.abc import Mapping
from typing import Literal
from urllib.parse import parse_qs

from aiohttp import web
from slack_bolt.adapter.aiohttp import to_aiohttp_response
from slack_bolt.adapter.socket_mode.async_handler import AsyncSocketModeHandler
from slack_bolt.request.async_request import AsyncBoltRequest
from slack_sdk.signature import SignatureVerifier

from bot.application import Application

log = logging.getLogger(__name__)

SHUTDOWN_GRACE_SECONDS = 20.0


Rejection = Literal["signature", "malformed"]
REFUSALS: dict[Rejection, tuple[int, str]] = {
    "signature": (401, "invalid signature"),
    "malformed": (400, "malformed request"),
}


def screen(
    body: bytes, query: str, headers: Mapping[str, str], verifier: SignatureVerifier
) -> AsyncBoltRequest | Rejection:
    """The request Bolt may dispatch, or why it must not see it.

    The signature is checked on the raw bytes before anything parses them, so an unsigned
    request costs one HMAC and never a JSON parse; a signed one that Bolt still cannot read
    (a `payload` that is no JSON object, JSON nested 5,000 deep) is refused as malformed
    instead of failing inside Bolt with a 500 and a traceback.
    """
    # Bytes that are not UTF-8 survive as surrogates, which the verifier cannot encode: such a
    # body can never carry a valid signature, so it is refused like any unsigned one.
    text = body.decode("utf-8", "surrogateescape")
    try:
        signed = verifier.is_valid_request(text, headers)
    except (ValueError, TypeError, OverflowError):  # a timestamp `abc`, a non-ASCII signature
        signed = False
    if not signed and not _is_ssl_check(text):
        return "signature"
    try:
        request = AsyncBoltRequest(body=text, query=query, headers=dict(headers))
    except (ValueError, RecursionError, TypeError, AttributeError, KeyError):
        return "malformed"
    return request if isinstance(request.body, dict) else "malformed"


def _is_ssl_check(text: str) -> bool:
    """Slack's unsigned certificate probe, which Bolt answers with an empty 200."""
    return "payload" not in text and parse_qs(text).get("ssl_check") == ["1"]


def http_app(bot: Application) -> web.Application:
    secret = bot.settings.slack_signing_secret
    verifier = SignatureVerifier(secret.get_secret_value()) if secret else None
    token = bot.settings.metrics_token
    metrics_token = token.get_secret_value().encode() if token else None

    async def slack_events(request: web.Request) -> web.Response:
        with bot.metrics.ack_latency.time():
            assert verifier is not None  # HTTP mode always has a signing secret
            screened = screen(await request.read(), request.query_string, request.headers, verifier)
            if isinstance(screened, str):
                bot.metrics.rejected_requests.labels(screened).inc()
                log.debug("request to /slack/events refused: %s", screened)
                status, reason = REFUSALS[screened]
                return web.Response(status=status, text=reason)
            return await to_aiohttp_response(await bot.bolt.async_dispatch(screened))

    async def metrics(request: web.Request) -> web.Response:
        if metrics_token is not None:
            given = request.headers.get("Authorization", "").removeprefix("Bearer ").strip()
            if not hmac.compare_digest(given.encode(), metrics_token):
                challenge = {"WWW-Authenticate": 'Bearer realm="metrics"'}
                return web.Response(status=401, text="bearer token needed", headers=challenge)
        body, content_type = bot.metrics.exposition()
        return web.Response(body=body, headers={"Content-Type": content_type})

    async def healthz(_request: web.Request) -> web.Response:
        problems = await bot.healthy()
        body = {"status": "ok"} if not problems else {"status": "unhealthy", **problems}
        return web.json_response(body, status=503 if problems else 200)

    app = web.Application(client_max_size=1024 * 1024)
    if not bot.settings.socket_mode:
        # In Socket Mode, Slack's envelopes arrive over the authenticated socket only, and
        # signature checks are off: an HTTP endpoint would let anyone post unsigned events.
        app.router.add_post("/slack/events", slack_events)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/metrics", metrics)
    return app


async def start_http(bot: Application, host: str, port: int) -> tuple[web.AppRunner, int]:
    """Start the HTTP server; returns the runner and the port actually bound (port 0 = any)."""
    runner = web.AppRunner(http_app(bot), access_log=None, shutdown_timeout=5)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    await site.start()
    bound = port
    for address in runner.addresses:
        if isinstance(address, tuple):
            bound = int(address[1])
    return runner, bound


def socket_mode_handler(bot: Application) -> AsyncSocketModeHandler:
    token = bot.settings.slack_app_token
    assert token is not None
    return AsyncSocketModeHandler(bot.bolt, token.get_secret_value(), web_client=bot.slack.client)


async def serve(bot: Application, *, host: str = "0.0.0.0", port: int | None = None) -> None:
    """Run until SIGTERM or SIGINT, then stop taking work and shut down in order."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    async with bot.running():
        runner, bound = await start_http(bot, host, bot.settings.port if port is None else port)
        socket = socket_mode_handler(bot) if bot.settings.socket_mode else None
        if socket is not None:
            await socket.connect_async()  # type: ignore[no-untyped-call]
            log.info("connected to Slack over Socket Mode")
        log.info("listening on http://%s:%d", host, bound)
        await stop.wait()
        log.info("shutting down")
        if socket is not None:
            await socket.close_async()  # type: ignore[no-untyped-call]
        await asyncio.wait_for(runner.cleanup(), SHUTDOWN_GRACE_SECONDS)
