"""The stand-in as its own process: `python -m bot.testing.retell --port 0 --api-key KEY`.

Kept out of the package's `__init__` so that running it imports it only once, as `__main__`.
"""

from __future__ import annotations

import argparse
import asyncio
import signal

from bot.testing.retell.server import FakeRetell


async def _serve(args: argparse.Namespace) -> None:
    fake = FakeRetell(
        api_key=args.api_key,
        batch_seconds=args.batch_seconds,
        time_scale=args.time_scale,
        shortest_batch_seconds=args.shortest_batch_seconds,
        seed=args.seed,
    )
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stopping.set)
    url = await fake.start(args.host, args.port)
    print(f"READY {url}", flush=True)
    try:
        await stopping.wait()
    finally:
        await fake.stop()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m bot.testing.retell",
        description="Serve a local stand-in of Retell's batch-test API.",
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    parser.add_argument("--api-key", default="key_test")
    parser.add_argument("--batch-seconds", type=float, default=1.0)
    parser.add_argument("--time-scale", type=float, default=1.0)
    parser.add_argument(
        "--shortest-batch-seconds",
        type=float,
        default=None,
        help="spread batch durations uniformly between this and --batch-seconds",
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the duration spread")
    asyncio.run(_serve(parser.parse_args(argv)))


if __name__ == "__main__":
    main()
