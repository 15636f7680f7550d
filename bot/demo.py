"""`retell-bot demo`: the whole flow, without credentials, against built-in local stand-ins.

A newcomer sees what the channel would see within seconds of installing: the real bot (the same
Application, HTTP server, scheduler and SQLite store as `retell-bot serve`) talks over real HTTP
on 127.0.0.1 to stand-ins of Slack and Retell, and this module prints the conversation.
"""

from __future__ import annotations

import logging
import re
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bot import logs
from bot.application import Application
from bot.settings import load_settings
from bot.testing.retell import FakeRetell
from bot.testing.slack import FakeSlack, Message, SlackUser
from bot.text import unescape
from bot.web import start_http

CHANNEL = "C0DEMO01"
USER = "U0DEMO01"
ENGINE = "llm_demo"
CASES = {
    "tc_refund": ("Refund request", "pass", None),
    "tc_cancel": ("Cancel subscription", "pass", None),
    "tc_booking": (
        "Appointment booking",
        "fail",
        "The agent booked the slot without confirming "
        "the caller's time zone, so the appointment landed an hour early.",
    ),
    "tc_angry": ("Angry caller", "pass", None),
    "tc_spanish": (
        "Spanish speaker",
        "error",
        "The simulated caller hung up before the agent answered: the call could not be evaluated.",
    ),
    "tc_wrong_number": ("Wrong number", "pass", None),
}


def as_text(blocks: list[dict[str, Any]], fallback: str) -> list[str]:
    """A terminal rendering of Block Kit: enough to read the message as a person would."""
    lines: list[str] = []
    for block in blocks:
        kind = block.get("type")
        if kind == "header":
            lines.append("▌ " + _plain(block["text"]["text"]))
        elif kind == "section":
            if "text" in block:
                lines.extend(_plain(block["text"]["text"]).splitlines())
            fields = [
                _plain(item["text"]).replace("\n", ": ", 1) for item in block.get("fields", [])
            ]
            if fields:
                lines.append(" · ".join(fields))
        elif kind == "context":
            lines.append("  ".join(_plain(e.get("text", "")) for e in block.get("elements", [])))
        elif kind == "actions":
            labels = [e.get("text", {}).get("text", "") for e in block.get("elements", [])]
            lines.append(" ".join(f"[ {label} ]" for label in labels))
        elif kind == "divider":
            lines.append("─" * 40)
    return lines or [_plain(fallback)]


def _plain(text: str) -> str:
    text = re.sub(r"<!date\^[^|>]*\|([^>]*)>", r"\1", text)
    text = re.sub(r"<@(U\w+)>", lambda m: "@you" if m.group(1) == USER else "@" + m.group(1), text)
    text = re.sub(r"<#(C\w+)(\|[^>]*)?>", "#qa-voice", text)
    text = unescape(text)
    return text.replace("*", "").replace("`", "")


class Transcript:
    """Prints what the channel shows, as it changes."""

    def __init__(self, slack: FakeSlack) -> None:
        self._slack = slack
        self._seen: dict[str, int] = {}

    def _changes(self) -> list[tuple[Message, bool]]:
        changed = []
        for message in self._slack.messages:
            key = f"{message.channel}/{message.ts}"
            if self._seen.get(key) != message.update_count:
                changed.append((message, key not in self._seen))
        return changed

    def show(self) -> None:
        changes = self._changes()
        for message, new in changes:
            self._seen[f"{message.channel}/{message.ts}"] = message.update_count
            where = "  #qa-voice thread" if message.is_reply else "  #qa-voice"
            verb = "posts" if new else "edits its message"
            print(f"{where} · retell-tests {verb}:")
            for line in as_text(message.blocks, message.text):
                if line.strip():
                    print(f"      │ {line}")
            print(flush=True)

    async def until(self, predicate: Callable[[], bool], timeout: float = 30.0) -> None:
        """Print every change until `predicate` holds."""
        while not predicate():
            await self._slack.wait_for(lambda: bool(self._changes()) or predicate(), timeout)
            self.show()
        if self._changes():
            self.show()


def _you(text: str) -> None:
    print(f"  you \N{SINGLE RIGHT-POINTING ANGLE QUOTATION MARK} {text}\n", flush=True)


def _private(text: str) -> None:
    print("  (only visible to you) retell-tests:")
    for line in text.splitlines():
        print(f"      │ {_plain(line)}")
    print(flush=True)


def _results(slack: FakeSlack) -> list[Message]:
    return [m for m in slack.channel_messages(CHANNEL) if not m.is_reply and " total" in m.text]


async def run_demo(*, verbose: bool = False) -> int:
    logs.configure("INFO" if verbose else "WARNING", "text")
    logging.getLogger("bot.bolt").setLevel(logging.WARNING)
    async with FakeSlack() as slack, FakeRetell(batch_seconds=3.0) as retell:
        retell.add_engine("retell-llm", ENGINE)
        for case_id, (name, outcome, why) in CASES.items():
            retell.add_definition(ENGINE, case_id, name)
            retell.set_outcome(case_id, outcome, why)  # type: ignore[arg-type]
        with tempfile.TemporaryDirectory() as workdir:
            settings = load_settings(
                slack_bot_token="xoxb-test",
                slack_signing_secret="secret",
                slack_api_url=slack.api_url,
                retell_api_key="key_test",
                retell_base_url=retell.base_url,
                database_url=f"sqlite:///{Path(workdir) / 'demo.db'}",
                poll_initial_seconds=0.25,
                poll_max_seconds=1.0,
                # Demo time runs 40 times faster than with the defaults; so do the budgets.
                retell_requests_per_minute=60.0 * 40,
                slack_edits_per_minute=45.0 * 40,
            )
            bot = Application.build(settings)
            async with bot.running():
                runner, port = await start_http(bot, "127.0.0.1", 0)
                try:
                    await _conversation(slack, f"http://127.0.0.1:{port}/slack/events")
                finally:
                    await runner.cleanup()
    print("That was the real bot, scheduler and database, against local stand-ins of Slack and")
    print("Retell. Next: create the Slack app from manifest.yml and run `retell-bot serve`.")
    return 0


async def _conversation(slack: FakeSlack, events_url: str) -> None:
    user = SlackUser(slack=slack, user_id=USER, user_name="you", channel_id=CHANNEL)
    transcript = Transcript(slack)
    print("\nretell-bot demo: a Slack channel, #qa-voice, with the bot in it.\n")

    text = f"run {ENGINE} all"
    _you(f"/retell-test {text}")
    reply = await user.command(events_url, text)
    _private(reply.json().get("text", "") if reply.text.startswith("{") else reply.text)
    await transcript.until(lambda: len(_results(slack)) >= 1)
    await slack.wait_for(lambda: any(m.is_reply for m in slack.messages))
    transcript.show()

    first = _results(slack)[0]
    _you("clicks [ Show failures ]")
    await user.press(
        events_url, action_id="show_failures", value=_run_id(first), message_ts=first.ts
    )
    await transcript.until(lambda: len(slack.thread(CHANNEL, first.ts)) >= 2)

    _you("clicks [ Rerun failed ]")
    await user.press(
        events_url, action_id="rerun_failed", value=_run_id(first), message_ts=first.ts
    )
    await transcript.until(lambda: len(_results(slack)) >= 2)


def _run_id(message: Message) -> str:
    for block in message.blocks:
        for element in block.get("elements", []):
            if isinstance(element, dict) and element.get("action_id") == "rerun":
                return str(element.get("value"))
    raise LookupError("the result message has no Rerun button")
