"""Entry points that face Slack: the HTTP server (aiohttp) and Socket Mode.

HTTP mode serves `POST /slack/events` (Bolt verifies every request's signature and timestamp
before any listener runs), `GET /healthz`, `GET /livez` and `GET /metrics` (Prometheus). Socket
Mode keeps the same server for health checks and metrics, and takes Slack's envelopes over the
authenticated socket.

Start-up (issue 17): `serve` binds the port first, with only what the HTTP surface needs
imported (aiohttp, Bolt's request and adapter, the settings). Then, in a thread, it imports
`bot.early` (the store, the parser, the blocks: no retell-sdk), connects and migrates the
database, and imports and builds the application (retell-sdk's models alone take over a
second), and starts the scheduler. Until the application is ready (`Front`): `/livez` answers
200 `{"status": "starting"}`, `/healthz` 503 `{"status": "starting"}` (it says 200 only once
the database and the scheduler are up, as before), `/metrics` 503. A signed request to
`/slack/events` waits (at most `HOLD_SECONDS`) for the early stage or the application,
whichever is first. The early stage acks `run` and `compare` as usual, kept in
`acked_commands` to be started once the application is ready (`bot.early.EarlyCommands`), and
answers `help` and commands with mistakes; anything else waits on for the application, then is
dispatched as any other. One that nothing was ready for in time is answered honestly: a slash
command with an ephemeral "still starting, nothing was started" ack, anything else with 503
(Slack retries events; the user sees the failure). This module therefore imports
`bot.application` and `bot.early` only for type checking.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import hmac
import importlib
import logging
import signal
from collections.abc import Awaitable, Callable, Mapping
from typing import TYPE_CHECKING, Literal
from urllib.parse import parse_qs

from aiohttp import web
from slack_bolt.adapter.aiohttp import to_aiohttp_response
from slack_bolt.request.async_request import AsyncBoltRequest
from slack_bolt.response import BoltResponse
from slack_sdk.signature import SignatureVerifier

from bot.settings import Settings

if TYPE_CHECKING:
    from slack_bolt.adapter.socket_mode.async_handler import AsyncSocketModeHandler

    from bot.application import Application
    from bot.early import EarlyCommands

log = logging.getLogger(__name__)

SHUTDOWN_GRACE_SECONDS = 20.0
# Distribution mode's pages (`bot.workspaces.oauth`, which is not imported before start-up).
INSTALL_PATH = "/slack/install"
REDIRECT_PATH = "/slack/oauth_redirect"
# At shutdown, how long the start of commands acked during start-up may still take.
HAND_OVER_GRACE_SECONDS = 3.0
# How long a request that arrives during start-up waits for the application: Slack wants the
# ack within 3 s of sending, and the dispatch after the wait needs a little of that too.
HOLD_SECONDS = 2.0
# What the early stage may spend on a command, from its arrival, before it acks it anyway.
ACK_SECONDS = 2.5
STARTING_TEXT = (
    "⏳ The bot is still starting up, so nothing was started. Please send the command again in "
    "a few seconds."
)


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


class Front:
    """What the HTTP server serves: the application once it is ready, the early stage or a
    holding answer before.

    `opened` brings in the early stage, `ready` and `failed` settle it; requests that arrived
    meanwhile are waiting in `application` or `early_or_ready` and go on at once.
    """

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.app: Application | None = None
        self.early: EarlyCommands | None = None
        self.failure: str | None = None
        self._settled = asyncio.Event()
        self._opened = asyncio.Event()
        self._early_acks: list[float] = []  # before the application (and its metrics) exist

    def opened(self, early: EarlyCommands) -> None:
        """The early stage is up: commands can be kept before the application is ready."""
        self.early = early
        self._opened.set()

    @classmethod
    def of(cls, app: Application) -> Front:
        """A front for an application that is ready already (tests, the demo)."""
        front = cls(app.settings)
        front.ready(app)
        return front

    def ready(self, app: Application) -> None:
        self.app = app
        for seconds in self._early_acks:  # the metrics exist from now on: count them there
            app.metrics.ack_latency.observe(seconds)
        self._early_acks.clear()
        self._settled.set()
        self._opened.set()

    def acked(self, seconds: float) -> None:
        """An ack the early stage sent, `seconds` after the request arrived."""
        if self.app is not None:
            self.app.metrics.ack_latency.observe(seconds)
        else:
            self._early_acks.append(seconds)

    def failed(self, why: str) -> None:
        """Start-up failed (the process is about to exit): waiting requests stop waiting."""
        self.failure = why
        self._settled.set()
        self._opened.set()

    async def application(self, timeout: float) -> Application | None:
        """The application, waiting for it up to `timeout` seconds; None if it is not ready."""
        if self.app is None and self.failure is None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._settled.wait(), timeout)
        return self.app

    async def early_or_ready(self, timeout: float) -> None:
        """Wait up to `timeout` seconds for the early stage, the application or a failure."""
        if not self._opened.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._opened.wait(), timeout)


def http_app(bot: Application | Front) -> web.Application:
    front = bot if isinstance(bot, Front) else Front.of(bot)
    settings = front.settings
    secret = settings.slack_signing_secret
    verifier = SignatureVerifier(secret.get_secret_value()) if secret else None
    token = settings.metrics_token
    metrics_token = token.get_secret_value().encode() if token else None
    loop_time = asyncio.get_running_loop().time

    async def slack_events(request: web.Request) -> web.Response:
        received = loop_time()
        assert verifier is not None  # HTTP mode always has a signing secret
        screened = screen(await request.read(), request.query_string, request.headers, verifier)
        if isinstance(screened, str):
            if front.app is not None:
                front.app.metrics.rejected_requests.labels(screened).inc()
            log.debug("request to /slack/events refused: %s", screened)
            status, reason = REFUSALS[screened]
            return web.Response(status=status, text=reason)
        app = front.app
        if app is None:
            await front.early_or_ready(HOLD_SECONDS - (loop_time() - received))
            if front.app is None and front.early is not None and front.failure is None:
                patience = ACK_SECONDS - (loop_time() - received)
                answered = await front.early.answer(screened.body, patience=max(patience, 0.1))
                if answered is not None:
                    response = await to_aiohttp_response(BoltResponse(status=200, body=answered))
                    front.acked(loop_time() - received)
                    return response
            app = front.app or await front.application(HOLD_SECONDS - (loop_time() - received))
        if app is None:
            return _not_started(screened)
        response = await to_aiohttp_response(await app.bolt.async_dispatch(screened))
        app.metrics.ack_latency.observe(loop_time() - received)
        return response

    async def metrics(request: web.Request) -> web.Response:
        if metrics_token is not None:
            given = request.headers.get("Authorization", "").removeprefix("Bearer ").strip()
            if not hmac.compare_digest(given.encode(), metrics_token):
                challenge = {"WWW-Authenticate": 'Bearer realm="metrics"'}
                return web.Response(status=401, text="bearer token needed", headers=challenge)
        if front.app is None:
            return web.Response(status=503, text="starting")
        body, content_type = front.app.metrics.exposition()
        return web.Response(body=body, headers={"Content-Type": content_type})

    async def healthz(_request: web.Request) -> web.Response:
        if front.app is None:
            return web.json_response({"status": front.failure or "starting"}, status=503)
        problems = await front.app.healthy()
        body = {"status": "ok"} if not problems else {"status": "unhealthy", **problems}
        return web.json_response(body, status=503 if problems else 200)

    async def livez(_request: web.Request) -> web.Response:
        """The process is up and serving (for a liveness probe): 200 from the first moment."""
        return web.json_response({"status": "ok" if front.app is not None else "starting"})

    async def oauth(request: web.Request) -> web.Response:
        """The install link and the redirect back from Slack (distribution mode)."""
        app = front.app or await front.application(HOLD_SECONDS)
        flow = app.bolt.oauth_flow if app is not None else None
        if flow is None:
            return web.Response(status=503, text="starting; try again in a few seconds")
        bolt_request = AsyncBoltRequest(
            body="", query=request.query_string, headers=dict(request.headers)
        )
        if request.path == flow.install_path:
            return await to_aiohttp_response(await flow.handle_installation(bolt_request))
        return await to_aiohttp_response(await flow.handle_callback(bolt_request))

    app = web.Application(client_max_size=1024 * 1024)
    if settings.distribution:
        app.router.add_get(INSTALL_PATH, oauth)
        app.router.add_get(REDIRECT_PATH, oauth)
    if not settings.socket_mode:
        # In Socket Mode, Slack's envelopes arrive over the authenticated socket only, and
        # signature checks are off: an HTTP endpoint would let anyone post unsigned events.
        app.router.add_post("/slack/events", slack_events)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/livez", livez)
    app.router.add_get("/metrics", metrics)
    return app


def _not_started(request: AsyncBoltRequest) -> web.Response:
    """The answer to a request that came before the application was ready and stayed so."""
    body = request.body if isinstance(request.body, dict) else {}
    if body.get("command"):
        log.warning("command %s answered before start-up finished: not started", body["command"])
        return web.json_response({"response_type": "ephemeral", "text": STARTING_TEXT})
    log.warning("request to /slack/events answered 503: start-up has not finished")
    return web.Response(status=503, text="starting")


async def start_http(bot: Application | Front, host: str, port: int) -> tuple[web.AppRunner, int]:
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
    from slack_bolt.adapter.socket_mode.async_handler import AsyncSocketModeHandler

    token = bot.settings.slack_app_token
    assert token is not None
    return AsyncSocketModeHandler(bot.bolt, token.get_secret_value(), web_client=bot.slack.client)


async def load_application(settings: Settings, front: Front) -> Application:
    """Open the early stage on `front` (the store, migrated), then import the application and
    build it on the same store. Imports run in a thread (the event loop keeps serving), one
    after the other: the migrations (many round trips to the database's thread on SQLite)
    would crawl while another thread imports the SDK, and the early stage matters first."""
    early_stage = await asyncio.to_thread(importlib.import_module, "bot.early")
    early: EarlyCommands = await early_stage.EarlyCommands.open(settings)
    front.opened(early)  # `serve` closes its store if the application never takes it
    log.info("database ready; run commands are kept until the application is")
    # The import makes ~400,000 objects that live as long as the process (retell-sdk's models
    # alone are 200,000), and every collection the allocations trigger walks them all again:
    # with the collector off, the import takes 1.0 s instead of 1.7 s. They are then frozen
    # out of it (what `Application.running` otherwise does with a full collection first,
    # 0.26 s, for the ~3,500 objects of garbage the import leaves, kept instead).
    gc.disable()
    try:
        module = await asyncio.to_thread(importlib.import_module, "bot.application")
        application: Application = module.Application.build(settings, store=early.store)
        gc.freeze()
    finally:
        gc.enable()
    return application


async def serve(
    settings: Settings,
    *,
    host: str = "0.0.0.0",
    port: int | None = None,
    load: Callable[[Settings, Front], Awaitable[Application]] = load_application,
) -> None:
    """Listen at once, start the application behind it, run until SIGTERM or SIGINT, then stop
    taking work and shut down in order."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    front = Front(settings)
    runner, bound = await start_http(front, host, settings.port if port is None else port)
    log.info("listening on http://%s:%d; starting", host, bound)
    closed = False

    async def close_http() -> None:
        nonlocal closed
        if not closed:
            closed = True
            await asyncio.wait_for(runner.cleanup(), SHUTDOWN_GRACE_SECONDS)

    try:
        bot = await _until_loaded(load(settings, front), stop)
    except BaseException as exc:
        front.failed("failed")
        if not isinstance(exc, asyncio.CancelledError | KeyboardInterrupt):
            log.error("start-up failed: %s", type(exc).__name__)
        await close_http()
        await _close_early(front)
        raise
    if bot is None:
        log.info("stopped before start-up finished")
        front.failed("stopping")  # commands waiting for it are told nothing was started
        await close_http()
        await _close_early(front)  # what it acked is kept: the next process starts it
        return
    try:
        async with bot.running():
            front.ready(bot)
            # Beside the wait for a signal, not before it: claiming what was acked early needs
            # the database, which may be locked or down now, and SIGTERM must still stop us.
            handing = (
                asyncio.create_task(_hand_over(front.early, bot))
                if front.early is not None
                else None
            )
            socket = socket_mode_handler(bot) if bot.settings.socket_mode else None
            if socket is not None:
                await socket.connect_async()  # type: ignore[no-untyped-call]
                log.info("connected to Slack over Socket Mode")
            log.info("ready")
            await stop.wait()
            log.info("shutting down")
            if socket is not None:
                await socket.close_async()  # type: ignore[no-untyped-call]
            await close_http()
            if handing is not None:
                await _settle(handing)
            if front.early is not None:
                await front.early.close()
    except BaseException:
        front.failed("failed")  # migrations or the scheduler's start (database down at start)
        raise
    finally:
        await close_http()


async def _hand_over(early: EarlyCommands, bot: Application) -> None:
    from bot.store import DATABASE_FAILURES  # loaded by now (the early stage's store)

    try:
        await early.hand_over(bot.workflow)
    except DATABASE_FAILURES as exc:  # what was kept there, the next sweep starts
        log.warning("commands acked during start-up wait for the database: %s", type(exc).__name__)
    except Exception:
        log.exception("starting the commands acked during start-up failed")


async def _settle(handing: asyncio.Task[None]) -> None:
    """Give the hand-over a moment at shutdown, then drop it: what it had not claimed yet
    stays kept in the database for the next process."""
    with contextlib.suppress(asyncio.CancelledError, TimeoutError):
        await asyncio.wait_for(handing, HAND_OVER_GRACE_SECONDS)


async def _close_early(front: Front) -> None:
    """Close the early stage's store, which no application took over."""
    if front.early is not None:
        await front.early.close()
        await front.early.store.close()


async def _until_loaded(loading: Awaitable[Application], stop: asyncio.Event) -> Application | None:
    """The loaded application, or None when asked to stop first."""
    load = asyncio.ensure_future(loading)
    stopping = asyncio.ensure_future(stop.wait())
    try:
        await asyncio.wait({load, stopping}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        stopping.cancel()
    if not load.done():
        load.cancel()
        return None
    return load.result()
