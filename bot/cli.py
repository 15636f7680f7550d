"""`retell-bot`: serve the bot, try it locally, run batch tests from CI, or manage its database."""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Sequence
from pathlib import Path

from bot import logs
from bot.settings import DatabaseSettings, KeySettings, Settings, SettingsError, load_settings


def _settings(*, http_mode: bool) -> Settings:
    try:
        return load_settings(http_mode=http_mode)
    except SettingsError as exc:
        for line in exc.lines:
            print(f"retell-bot: {line}", file=sys.stderr)
        raise SystemExit(2) from None


def _secrets(settings: Settings) -> list[str]:
    values = [
        settings.slack_bot_token,
        settings.retell_api_key,
        settings.slack_signing_secret,
        settings.slack_app_token,
        settings.metrics_token,
        settings.slack_client_secret,
        settings.slack_state_secret,
        *settings.encryption_keys,
    ]
    found = [v.get_secret_value() for v in values if v is not None and v.get_secret_value()]
    # Not SQLAlchemy's `make_url`: importing SQLAlchemy here would put it on the path to the
    # first HTTP answer of `serve` (issue 17). Both spellings of the password are redacted.
    from urllib.parse import unquote, urlsplit

    try:
        password = urlsplit(settings.database_url).password
    except ValueError:
        password = None
    return found + ([password, unquote(password)] if password else [])


def _serve(args: argparse.Namespace) -> int:
    # Not `bot.application`: `serve` listens first and imports the application behind it.
    from bot.web import serve

    settings = _settings(http_mode=True)
    logs.configure(settings.log_level, settings.log_format, _secrets(settings))
    asyncio.run(serve(settings, host=args.host, port=args.port))
    return 0


def _config(args: argparse.Namespace) -> int:
    """Print the configuration `serve` would start with: what a deploy can check beforehand."""
    import json

    settings = _settings(http_mode=True)
    shown = {name.upper(): value for name, value in settings.shown().items()}
    if args.json:
        print(json.dumps(shown, indent=2, sort_keys=True))
    else:
        width = max(len(name) for name in shown)
        for name, value in sorted(shown.items()):
            if isinstance(value, list):
                value = ",".join(value) or "(empty)"
            print(f"{name:<{width}}  {'(unset)' if value is None else value}")
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
            await store.close()

    asyncio.run(upgrade())
    print("database is up to date")
    return 0


def _keys_new(_args: argparse.Namespace) -> int:
    """A fresh Fernet key, for ENCRYPTION_KEYS."""
    from cryptography.fernet import Fernet

    print(Fernet.generate_key().decode())
    return 0


def _keys_rotate(_args: argparse.Namespace) -> int:
    """Re-encrypt every stored Retell key with the first of ENCRYPTION_KEYS."""
    from pydantic import ValidationError
    from sqlalchemy.engine import make_url

    from bot.store import Store, create_engine
    from bot.workspaces.keys import RetellKeys

    try:
        settings = KeySettings()
    except ValidationError as exc:
        for error in exc.errors():
            print(f"retell-bot: ENCRYPTION_KEYS: {error['msg']}", file=sys.stderr)
        return 2
    keys = [key.get_secret_value() for key in settings.encryption_keys]
    if not keys:
        print("retell-bot: ENCRYPTION_KEYS is not set: nothing to rotate with", file=sys.stderr)
        return 2
    password = make_url(settings.database_url).password
    logs.configure(
        settings.log_level, settings.log_format, keys + ([str(password)] if password else [])
    )

    async def rotate() -> int:
        store = Store(create_engine(settings.database_url))
        try:
            return await RetellKeys(store.engine, keys).rotate()
        finally:
            await store.close()

    rotated = asyncio.run(rotate())
    print(f"re-encrypted {rotated} Retell key(s) with the first of ENCRYPTION_KEYS")
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


def _ci(args: argparse.Namespace) -> int:
    """`run`, `compare` and `watch`: the orchestration is in `bot.ci`; this hands arguments over."""
    from bot.ci import Request, main

    words: tuple[str, ...]
    if args.command == "run":
        words = (args.engine, *args.tests)
    elif args.command == "compare":
        words = tuple(args.words)
    else:
        words = (args.batch_id,)
    request = Request(
        command=args.command,
        words=words,
        repeat=getattr(args, "repeat", 1),
        poll_seconds=args.poll_seconds,
        timeout_minutes=args.timeout_minutes,
        junit=args.junit,
        post_to=args.post_to,
        min_pass=getattr(args, "min_pass_rate", None),
        publish_on_pass=getattr(args, "publish_on_pass", False),
    )
    return main(request)


_CI_ENVIRONMENT = """\
environment: RETELL_API_KEY (required), RETELL_BASE_URL, POLL_INITIAL_SECONDS,
BATCH_TIMEOUT_MINUTES; for --post-to also SLACK_BOT_TOKEN and SLACK_API_URL."""


def _gate_options(command: argparse.ArgumentParser, *, repeat_help: str) -> None:
    """`--repeat`, `--min-pass-rate` and `--publish-on-pass`: what `run` and `compare` share."""
    command.add_argument("--repeat", type=int, default=1, metavar="N", help=repeat_help)
    command.add_argument(
        "--min-pass-rate",
        type=float,
        metavar="P",
        default=None,
        help="green when at least P%% of the test runs pass (same as min_pass=P); "
        "the exit code follows the gate",
    )
    command.add_argument(
        "--publish-on-pass",
        action="store_true",
        help="when green, publish the agents whose draft answers with exactly the tested "
        "engine version",
    )


def _ci_options(command: argparse.ArgumentParser) -> None:
    command.add_argument(
        "--post-to",
        metavar="CHANNEL",
        help="also post the result to this Slack channel id (needs SLACK_BOT_TOKEN)",
    )
    command.add_argument("--junit", metavar="FILE", type=Path, help="write JUnit XML to FILE")
    command.add_argument(
        "--poll-seconds",
        type=float,
        metavar="SECONDS",
        default=None,
        help="seconds between checks of the batch (default: $POLL_INITIAL_SECONDS or 10)",
    )
    command.add_argument(
        "--timeout-minutes",
        type=float,
        metavar="MINUTES",
        default=None,
        help="stop following after this long (default: $BATCH_TIMEOUT_MINUTES or 180)",
    )
    command.set_defaults(handler=_ci)


CI_COMMANDS = ("run", "compare", "watch")


def parser(*, ci_help: bool = True) -> argparse.ArgumentParser:
    """`ci_help`: the exit code table in the epilog of run/compare/watch, which imports
    `bot.ci` (left out on the way to `serve`, whose first HTTP answer waits for its imports)."""
    if ci_help:
        from bot.ci import exit_codes_help

        ci_epilog = f"{exit_codes_help()}\n\n{_CI_ENVIRONMENT}"
    else:
        ci_epilog = _CI_ENVIRONMENT
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

    run = commands.add_parser(
        "run",
        help="run a batch test from CI: progress, result table, JUnit, exit code",
        description=(
            "Create a Retell batch test and follow it to the end.\n\n"
            "ENGINE and TESTS use the slash command's grammar: ENGINE is llm_<id> or\n"
            "conversation_flow_<id>, optionally @<version>; TESTS are test case ids separated\n"
            "by spaces or commas, `all`, or names in double quotes, which the shell needs\n"
            "quoted again:  retell-bot run llm_abc@3 tc_1,tc_2 '\"Refund request\"'"
        ),
        epilog=ci_epilog,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    run.add_argument("engine", metavar="ENGINE")
    run.add_argument("tests", metavar="TESTS", nargs="+")
    _gate_options(
        run,
        repeat_help="run the suite N times (2-5) and flag cases that both pass and fail as FLAKY",
    )
    _ci_options(run)

    compare = commands.add_parser(
        "compare",
        help="run the same cases on two engine versions and report regressions, case by case",
        description=(
            "Run the same test cases on version A and version B of an engine (B defaults to\n"
            "the engine's latest) and compare them case by case: regressed, fixed, still\n"
            "failing, flaky. Both versions are checked at Retell before anything is created.\n\n"
            "  retell-bot compare llm_abc@3 llm_abc@4 all --min-pass-rate 95\n"
            "  retell-bot compare llm_abc@3 tc_1,tc_2        (3 against the latest)\n\n"
            "Exit 0 only when no case regressed on B (and the gate held, if one is given)."
        ),
        epilog=ci_epilog,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    compare.add_argument(
        "words", metavar="ENGINE@A [ENGINE@B] TESTS", nargs="+", help="versions, then tests"
    )
    _gate_options(
        compare,
        repeat_help="run each version N times (2-5); cases that both pass and fail are FLAKY",
    )
    _ci_options(compare)

    watch = commands.add_parser(
        "watch",
        help="follow an existing batch test to the end, as `run` does",
        description="Follow a batch created elsewhere (the dashboard, another job).",
        epilog=ci_epilog,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    watch.add_argument("batch_id", metavar="BATCH_ID")
    _ci_options(watch)

    config = commands.add_parser(
        "config",
        help="print the configuration `serve` would use (from the environment and .env), "
        "secrets shown only as set",
    )
    config.add_argument("--json", action="store_true", help="one JSON object")
    config.set_defaults(handler=_config)

    db = commands.add_parser("db", help="database maintenance")
    db_commands = db.add_subparsers(dest="db_command", required=True)
    db_commands.add_parser("upgrade", help="apply pending migrations").set_defaults(
        handler=_db_upgrade
    )

    keys = commands.add_parser("keys", help="the encryption keys of stored Retell API keys")
    keys_commands = keys.add_subparsers(dest="keys_command", required=True)
    keys_commands.add_parser(
        "new", help="print a fresh key for ENCRYPTION_KEYS (put it first to rotate)"
    ).set_defaults(handler=_keys_new)
    keys_commands.add_parser(
        "rotate",
        help="re-encrypt every stored Retell key with the first of ENCRYPTION_KEYS "
        "(needs DATABASE_URL and ENCRYPTION_KEYS only)",
    ).set_defaults(handler=_keys_rotate)
    return root


def main(argv: Sequence[str] | None = None) -> int:
    words = sys.argv[1:] if argv is None else list(argv)
    ci_help = not words or words[0] in CI_COMMANDS or words[0].startswith("-")
    args = parser(ci_help=ci_help).parse_args(words)
    return int(args.handler(args))


if __name__ == "__main__":
    raise SystemExit(main())
