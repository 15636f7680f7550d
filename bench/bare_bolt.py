"""The floor of the ack benchmark: a bare Bolt app on the bot's server stack that only acks.

    python -m bench.bare_bolt --port 0 --signing-secret secret --slack-api-url URL

The same stack as `retell-bot serve` (bot/web.py): an aiohttp web server (`AppRunner`, no access
log), slack_bolt's `AsyncApp` with the signing secret (so every request is verified the same
way) and a bot token whose `auth.test` goes to `--slack-api-url`, and the aiohttp adapter's
`to_bolt_request`/`to_aiohttp_response`. Its one listener acks `/retell-test` with a short text
and does nothing else: no parsing, no database, no Retell. Prints `READY <url>` once listening
and runs until SIGTERM/SIGINT. `bench/ack.py` starts it as its own process.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal

from aiohttp import web
from slack_bolt.adapter.aiohttp import to_aiohttp_response, to_bolt_request
from slack_bolt.async_app import AsyncAck, AsyncApp
from slack_sdk.web.async_client import AsyncWebClient

COMMAND = "/retell-test"


def bare_app(*, signing_secret: str, bot_token: str, slack_api_url: str) -> web.Application:
    bolt = AsyncApp(
        client=AsyncWebClient(token=bot_token, base_url=slack_api_url, timeout=15),
        signing_secret=signing_secret,
        logger=logging.getLogger("bare.bolt"),
    )

    @bolt.command(COMMAND)
    async def on_command(ack: AsyncAck) -> None:
        await ack(text="Starting the batch…")

    async def slack_events(request: web.Request) -> web.Response:
        bolt_response = await bolt.async_dispatch(await to_bolt_request(request))
        return await to_aiohttp_response(bolt_response)

    async def healthz(_request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    app = web.Application(client_max_size=1024 * 1024)
    app.router.add_post("/slack/events", slack_events)
    app.router.add_get("/healthz", healthz)
    return app


async def serve(args: argparse.Namespace) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    app = bare_app(
        signing_secret=args.signing_secret,
        bot_token=args.bot_token,
        slack_api_url=args.slack_api_url,
    )
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=5)
    await runner.setup()
    site = web.TCPSite(runner, args.host, args.port)
    await site.start()
    port = next(int(a[1]) for a in runner.addresses if isinstance(a, tuple))
    print(f"READY http://{args.host}:{port}", flush=True)
    try:
        await stop.wait()
    finally:
        await runner.cleanup()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.bare_bolt", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    parser.add_argument("--signing-secret", default="secret")
    parser.add_argument("--bot-token", default="xoxb-test")
    parser.add_argument("--slack-api-url", default="https://slack.com/api/")
    logging.basicConfig(level=logging.WARNING)
    asyncio.run(serve(parser.parse_args(argv)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
