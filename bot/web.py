"""Entry points that face Slack: the HTTP server (aiohttp) and Socket Mode.

HTTP mode serves `POST /slack/events` (Bolt verifies every request's signature and timestamp
before any listener runs), `GET /healthz` and `GET /metrics` (Prometheus). Socket Mode keeps
the same server for health checks and metrics, and takes Slack's envelopes over the
authenticated socket.
"""

from __future__ import annotations

import asyncio
import logging
import signal

from aiohttp import web
from slack_bolt.adapter.aiohttp import to_aiohttp_response, to_bolt_request
from slack_bolt.adapter.socket_mode.async_handler import AsyncSocketModeHandler

from bot.application import Application

log = logging.getLogger(__name__)

SHUTDOWN_GRACE_SECONDS = 20.0


def http_app(bot: Application) -> web.Application:
    async def slack_events(request: web.Request) -> web.Response:
        with bot.metrics.ack_latency.time():
            bolt_response = await bot.bolt.async_dispatch(await to_bolt_request(request))
            return await to_aiohttp_response(bolt_response)

    async def metrics(_request: web.Request) -> web.Response:
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
