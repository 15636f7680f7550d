"""`retell-bot`: serve the bot, try it locally, or manage its database."""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Sequence

from bot import logs
from bot.settings import DatabaseSettings, Settings, SettingsError, load_settings


def _settings(*, http_mode: bool) -> Settings:
    try:
        return load_settings(http_mode=http_mode)
    except SettingsError as exc:
        for line in exc.lines:
            print(f"retell-bot: {line}", file=sys.stderr)
        raise SystemExit(2) from None


def _secrets(settings: Settings) -> list[str]:
    values = [settings.slack_bot_token, settings.retell_api_key]
    values += [s for s in (settings.slack_signing_secret, settings.slack_app_token) if s]
    found = [v.get_secret_value() for v in values]
    from sqlalchemy.engine import make_url

    try:
        password = make_url(settings.database_url).password
    except Exception:
        password = None
    return found + ([str(password)] if password else [])


def _serve(args: argparse.Namespace) -> int:
    from bot.application import Application
    from bot.web import serve

    settings = _settings(http_mode=True)
    logs.configure(settings.log_level, settings.log_format, _secrets(settings))
    asyncio.run(serve(Application.build(settings), host=args.host, port=args.port))
    return 0


def _db_upgrade(_args: argparse.Namespace) -> int:
    from sqlalchemy.engine import make_url

    from bot.store import Store, create_engine

    settings = DatabaseSettings()
    password = make_url(settings.database_url).password
    logs.configure(settings.log_level, settings.log_format, [str(password)] if password else [])

    async def upgrade() -> None:
        store = Store(create_engine(settings.database_url))
        try:
            await store.upgrade()
        finally:
            await store.engine.dispose()

    asyncio.run(upgrade())
    print("database is up to date")
    return 0


def _start(args: argparse.Namespace) -> int:
    """Serve for real when Slack and Retell credentials are configured, else show the demo."""
    try:
        load_settings(http_mode=True)
    except SettingsError as exc:
        print("retell-bot: no usable Slack/Retell configuration found:", file=sys.stderr)
        for line in exc.lines:
            print(f"  {line}", file=sys.stderr)
        print("retell-bot: running the demo against local stand-ins instead\n", file=sys.stderr)
        return _demo(argparse.Namespace(verbose=False))
    return _serve(args)


def _demo(args: argparse.Namespace) -> int:
    from bot.demo import run_demo

    return int(asyncio.run(run_demo(verbose=args.verbose)))


def parser() -> argparse.ArgumentParser:
    root = argparse.ArgumentParser(prog="retell-bot", description=__doc__)
    commands = root.add_subparsers(dest="command", required=True)

    serve = commands.add_parser(
        "serve", help="run the bot (HTTP mode, or Socket Mode when SLACK_APP_TOKEN is set)"
    )
    serve.add_argument("--host", default="0.0.0.0")
    serve.add_argument("--port", type=int, default=None, help="default: $PORT or 3000")
    serve.set_defaults(handler=_serve)

    start = commands.add_parser(
        "start", help="serve when Slack and Retell are configured, otherwise run the demo"
    )
    start.add_argument("--host", default="0.0.0.0")
    start.add_argument("--port", type=int, default=None, help="default: $PORT or 3000")
    start.set_defaults(handler=_start)

    demo = commands.add_parser(
        "demo", help="run the whole flow against local stand-ins of Slack and Retell"
    )
    demo.add_argument("--verbose", action="store_true", help="show the bot's own log lines too")
    demo.set_defaults(handler=_demo)

    db = commands.add_parser("db", help="database maintenance")
    db_commands = db.add_subparsers(dest="db_command", required=True)
    db_commands.add_parser("upgrade", help="apply pending migrations").set_defaults(
        handler=_db_upgrade
    )
    return root


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    return int(args.handler(args))


if __name__ == "__main__":
    raise SystemExit(main())
