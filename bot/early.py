"""What `serve` answers before the application is loaded (issue 17): `run` commands are kept.

`serve` listens first and imports the application (retell-sdk's models, APScheduler, Bolt's
app: over a second) behind it. This is what it loads first: the store (SQLAlchemy, and the
migrations, which run here on a new database), the command parser and the blocks, none of
which needs the SDK. With them a `/retell-test run …` or `compare …` that arrives during
start-up is handled the way SPEC §11 wants any acked command handled: its signature checked
(`bot.web.screen`), parsed, checked against the access lists, kept in `acked_commands` before
the ack, and acked with the usual "Starting a Retell batch test…". It is kept claimable at once,
as if its process had died after the ack: once the application is ready, `hand_over` starts it
through the orphan path (`RunWorkflow.resume_commands`) right away, and if this process dies
first, the next one (or another replica's sweep) starts it. Its request key (Slack's trigger_id)
makes a retry of it, early or late, start nothing twice.

`help` and a command with a mistake in it are answered here too (both pure). Everything else
(`watch`, `status`, schedules, `report`, the Run form, buttons, events) waits for the
application, as before (`bot.web`).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from typing import Any, Protocol

from bot import blocks
from bot.admission import ACCEPT_SECONDS, Admission, CommandBook, open_store, request_key
from bot.commands import SLASH_COMMAND, USAGE, CommandError, HelpCommand, RunCommand, parse
from bot.refusal import not_allowed
from bot.settings import Settings
from bot.store import AckedCommand, Store, utcnow

log = logging.getLogger(__name__)

# What an early answer is: a plain text ack (what Bolt sends for `ack(text=…)`), or a message.
Answer = str | dict[str, Any]


class Resuming(Protocol):
    """`RunWorkflow`, as far as the hand-over needs it."""

    async def resume_commands(self, unkept: Sequence[AckedCommand] = ()) -> None: ...


class EarlyCommands:
    """Slash commands taken before the application is ready (see the module's doc)."""

    def __init__(
        self, settings: Settings, store: Store, *, clock: Callable[[], datetime] = utcnow
    ) -> None:
        self.settings = settings
        self.store = store  # handed to the application, which closes it
        self._clock = clock
        self._book = CommandBook(store, patience=ACCEPT_SECONDS)
        self._unkept: list[AckedCommand] = []
        self._answering = 0
        self._idle = asyncio.Event()
        self._idle.set()
        self._handed_over = False
        self.kept = 0

    @classmethod
    async def open(cls, settings: Settings) -> EarlyCommands:
        """Connect and migrate: `acked_commands` must exist before anything is kept in it."""
        store = open_store(settings)
        try:
            await store.upgrade()
        except BaseException:
            await store.close()
            raise
        return cls(settings, store)

    async def answer(
        self, body: Mapping[str, Any], *, patience: float = ACCEPT_SECONDS
    ) -> Answer | None:
        """The ack of a slash command, or None when it has to wait for the application.

        `patience`: how long the database may take to keep a command (what is left of Slack's
        3 s after the wait for this stage); past it the command is acked anyway, unkept, and
        started by this process once it is ready, as a slow database's are after start-up.
        """
        if self._handed_over or body.get("command") != SLASH_COMMAND:
            return None
        text = str(body.get("text") or "")
        if not text.strip():
            return None  # the Run form: opening it needs the application
        parsed = parse(text)
        if isinstance(parsed, CommandError):
            return blocks.command_error(parsed).as_kwargs()
        if isinstance(parsed, HelpCommand):
            return blocks.help_message(USAGE).as_kwargs()
        if not isinstance(parsed, RunCommand):
            return None
        channel_id, user_id = str(body.get("channel_id", "")), str(body.get("user_id", ""))
        if refusal := not_allowed(self.settings, channel_id=channel_id, user_id=user_id):
            return blocks.refused(refusal).as_kwargs()
        key = request_key(body)
        if key is None:
            return None  # nothing to find it again by (Slack always sends one)
        now = self._clock()
        response_url = body.get("response_url")
        command = AckedCommand(
            request_key=key,
            team_id=str(body.get("team_id", "")),
            channel_id=channel_id,
            user_id=user_id,
            response_url=response_url if isinstance(response_url, str) else None,
            text=text,
            received_at=now,
            claimed_until=now,  # nobody holds it: whoever is ready first starts it
        )
        self._answering += 1
        self._idle.clear()
        try:
            admission = await self._book.keep(command, patience=patience)
        finally:
            self._answering -= 1
            if not self._answering:
                self._idle.set()
        if admission is Admission.REFUSED:
            return blocks.database_down().as_kwargs()
        if admission is Admission.UNKEPT:
            self._unkept.append(command)  # the write may still land: started once either way
        else:
            self.kept += 1
        log.info("command acked during start-up, kept to start once ready: %s", text)
        return blocks.run_ack_text(parsed)

    async def hand_over(self, workflow: Resuming) -> None:
        """The application is ready (and takes new requests): start what was acked here."""
        self._handed_over = True
        await self._idle.wait()  # acks under way (each waits ACCEPT_SECONDS at most)
        unkept, self._unkept = self._unkept, []
        if self.kept or unkept:
            log.info("starting %d command(s) acked during start-up", self.kept + len(unkept))
        await workflow.resume_commands(unkept)

    async def close(self) -> None:
        """Let a write under way finish (shutdown); the store is the application's to close."""
        await self._book.close()
