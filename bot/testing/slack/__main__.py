"""Run the stand-in Slack on its own: `python -m bot.testing.slack --port 0` prints READY."""

from __future__ import annotations

import argparse
import asyncio
import json
import signal

from bot.testing.slack.server import FakeSlack
from bot.testing.slack.tiers import SlackTiers


async def _serve(args: argparse.Namespace) -> None:
    fake = FakeSlack(
        bot_token=args.bot_token,
        signing_secret=args.signing_secret,
        team_id=args.team_id,
        app_token=args.app_token,
        strict_channels=args.strict_channels,
        rate_limits=_rate_limits(args.rate_limits),
    )
    fake.client_id = args.client_id
    fake.client_secret = args.client_secret
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    url = await fake.start(args.host, args.port)
    print(f"READY {url}", flush=True)
    try:
        await stop.wait()
    finally:
        await fake.stop()


def _rate_limits(option: str | None) -> SlackTiers | None:
    """``--rate-limits slack`` or a JSON object (`SlackTiers.from_json`); None: no limits."""
    if option is None:
        return None
    return SlackTiers.from_json("slack" if option == "slack" else json.loads(option))


def main(argv: list[str] | None = None) -> None:
    """Run the fake on its own, for the demo and benchmarks, until SIGTERM/SIGINT."""
    parser = argparse.ArgumentParser(prog="python -m bot.testing.slack", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    parser.add_argument("--bot-token", default="xoxb-test")
    parser.add_argument("--app-token", default="xapp-test")
    parser.add_argument("--signing-secret", default="secret")
    parser.add_argument("--team-id", default="T0001")
    parser.add_argument("--strict-channels", action="store_true")
    parser.add_argument("--client-id", default="1111.2222", help="the OAuth app's client id")
    parser.add_argument("--client-secret", default="fake-client-secret")
    parser.add_argument(
        "--rate-limits",
        default=None,
        metavar="slack|JSON",
        help='enforce Slack\'s tiers ("slack") or these (\'{"scale": 10}\'); off by default',
    )
    asyncio.run(_serve(parser.parse_args(argv)))


if __name__ == "__main__":
    main()
