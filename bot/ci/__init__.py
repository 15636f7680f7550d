"""`retell-bot run`, `compare` and `watch`: the bot's batch-test engine, outside Slack, for CI.

A CI job runs a suite (or follows a batch created elsewhere), sees progress in its log, gets a
result table, a JUnit file its CI system understands, optionally the same result message the
channel would get, and an exit code that fails the job unless every case passed. The command
grammar is the slash command's (`bot.commands`), every Retell call goes through the gateway, and
the Slack message is `bot.blocks`' rendering: nothing here is a second implementation.

Exit codes (`ExitCode`): 2 and 5 end the command before there is any result. Otherwise the
first that applies wins: 1 some case failed (in any run), 4 a batch timed out, 3 some case
errored, 6 the result could not be written (JUnit) or posted (Slack), 0 every case passed.
With a gate (`--min-pass-rate`) 1 and 0 say whether it held; `compare` also exits 1 on any
regression of B (SPEC §9). A refused `--publish-on-pass` exits 5.

Rooms: `outcome` (request, report, exit codes), `session` (settings, clients, request checks),
`command` (the invocation and the follow-up),
`delivery` (JUnit, Slack).
"""

from bot.ci.command import (
    TRANSIENT,
    execute,
    main,
    parse_words,
)
from bot.ci.delivery import (
    BAD_SLACK_TOKEN,
    CLI_USER,
    CiRun,
    repeat_message,
    slack_result,
)
from bot.ci.outcome import (
    EXIT_CODE_MEANINGS,
    ExitCode,
    Followed,
    Report,
    Request,
    Stop,
    batch_seconds,
    ci_link,
    exit_code,
    exit_codes_help,
)
from bot.ci.session import (
    Session,
)

__all__ = [
    "BAD_SLACK_TOKEN",
    "CLI_USER",
    "EXIT_CODE_MEANINGS",
    "TRANSIENT",
    "CiRun",
    "ExitCode",
    "Followed",
    "Report",
    "Request",
    "Session",
    "Stop",
    "batch_seconds",
    "ci_link",
    "execute",
    "exit_code",
    "exit_codes_help",
    "main",
    "parse_words",
    "repeat_message",
    "slack_result",
]
