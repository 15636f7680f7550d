"""Status messages: what a run shows in its channel while it runs."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from bot import blocks
from bot.blocks import Message
from bot.pacing import Priority
from bot.retell import BatchJob
from bot.runs.context import Services
from bot.runs.replies import cannot_post
from bot.runs.requests import Requester
from bot.slackapi import UNREACHABLE_CHANNEL, SlackFailure
from bot.store import Run, RunState

# Every part of the workflow logs as `bot.runs`, as the one module did: log filters and
# tests name it.
log = logging.getLogger("bot.runs")

# Schedules whose runs post nothing while running, and their result only when it matters.
QUIET_NOTIFY = ("failures", "changes")


class StatusMessages:
    """The status message a running run shows in its channel: posted, taken over, kept current."""

    def __init__(self, services: Services) -> None:
        self._settings = services.settings
        self._store = services.store
        self._slack = services.slack
        self._metrics = services.metrics
        self._slack_calls = services.slack_calls
        self._tell = services.tell
        self._clock = services.clock

    async def status(
        self, run: Run, seen: Mapping[str, BatchJob] | None = None
    ) -> tuple[Message, str]:
        """The status message of a run, and the key of what it shows (to skip equal edits).

        A group's lead (repeats, a comparison) shows every batch of it; `seen` holds batches
        refreshed in this pass, newer than what the store has for the others.
        """
        if not run.leads_group:
            return blocks.status_message(run), run.counts_key
        group = await self.group(run)
        for other in group[1:]:
            batch = (seen or {}).get(other.batch_id or "")
            if batch is not None and other.state == RunState.RUNNING.value:
                apply(other, batch, RunState.RUNNING)
        finished = sum(RunState(other.state).finished for other in group)
        if run.candidate is not None:
            versions = blocks.VersionsGroup(group, run.candidate)
            counts = [str(count) for side in versions.side_counts for count in side]
            return blocks.compare_status(versions), "/".join([*counts, str(finished)])
        view = blocks.RepeatGroup(group)
        key = "/".join(map(str, (*view.counts, finished)))
        return blocks.repeat_status(view), key

    async def group(self, lead: Run) -> list[Run]:
        """A repeat group's runs with the lead as this process has it (its newest state)."""
        return [
            lead,
            *(other for other in await self._store.repeat_group(lead.id) if other.id != lead.id),
        ]

    async def post_status(self, run: Run, who: Requester) -> None:
        """Post a running run's status message; the requester hears when the channel is unusable.

        Any other failure is left for the next follow-up, which tries again.
        """
        message, shown = await self.status(run)
        try:
            await self.post(run, message, shown)
        except SlackFailure as exc:
            if exc.paced:  # the channel's budget is spent: the next follow-up posts it
                log.info("run %s: status message waits for the channel's budget", run.id)
                return
            log.warning("run %s: status message not posted: %s", run.id, exc.code)
            if exc.code in UNREACHABLE_CHANNEL:
                run.channel_error = exc.code
                await self._store.set_channel_error(run.id, exc.code)
                await self._tell(who, cannot_post(run.channel_id, exc.code))

    async def post(
        self,
        run: Run,
        message: Message,
        shown: str | None,
        *,
        priority: Priority = Priority.PROGRESS,
    ) -> None:
        """Post the run's one top-level message (its status, or its result when it had none).

        Marked first (`status_posting_since`) and carrying the run's metadata, so that when
        Slack's answer is lost (a dropped connection, an outage, this process killed, the
        database gone before the `ts` is recorded) the next attempt finds the message in the
        channel's history (`adopt_status`) instead of posting a second one. Only a plain
        refusal from Slack clears the mark: then nothing was posted.
        """
        if run.status_posting_since is None:
            run.status_posting_since = self._clock()
            await self._store.status_posting(run.id, run.status_posting_since)
        try:
            ts = await self._slack.of(run.team_id).post(
                run.channel_id,
                message,
                metadata=status_metadata(run),
                priority=priority,
                defer=True,
            )
        except SlackFailure as exc:
            if exc.unsent or (exc.answered and not exc.outage):
                run.status_posting_since = None
                await self._store.status_not_posted(run.id)
            raise
        run.status_ts = ts
        run.status_posting_since = None
        run.shown_counts = shown
        await self._store.set_status_message(run.id, ts, shown)

    async def adopt_status(self, run: Run) -> bool | None:
        """Take over the message an earlier `post` may have left unrecorded; True if found,
        None if Slack could not be asked (posting one now could post it twice).

        The sweep only holds runs nobody else holds, and whoever posts holds the run until
        the message is posted and recorded, so a `status_posting_since` left behind means
        that post ended without a recorded `ts`: its process died, the database went, or
        Slack's answer was lost, possibly after Slack had the message. The channel's history,
        searched by the metadata every such message carries, tells.
        """
        since = run.status_posting_since
        if since is None:
            return False
        payload = status_metadata(run)
        try:
            ts = await self._slack.of(run.team_id).find_posted(
                run.channel_id,
                since=since,
                event_type=payload["event_type"],
                payload=payload["event_payload"],
            )
        except SlackFailure as exc:
            (log.info if exc.paced else log.warning)(
                "run %s: status message not looked for (%s); looked for again later",
                run.id,
                exc.code,
            )
            return None
        run.status_posting_since = None
        if ts is None:
            log.info("run %s: its starter died before posting the status message", run.id)
            await self._store.status_not_posted(run.id)
            return False
        log.info("run %s: took over the status message its starter had posted", run.id)
        run.status_ts = ts
        await self._store.set_status_message(run.id, ts, None)
        return True

    async def show_progress(
        self, run: Run, status_ts: str, seen: Mapping[str, BatchJob] | None = None
    ) -> None:
        """Edit the status message when what it would show changed since it was last shown."""
        if not run.leads_group and run.counts_key == run.shown_counts:
            return  # nothing moved: no need to read anything
        message, shown = await self.status(run, seen)
        if shown != run.shown_counts and await self._edit(run, status_ts, message):
            run.shown_counts = shown
            await self._store.set_shown(run.id, shown)

    async def _edit(self, run: Run, status_ts: str, message: Message) -> bool:
        """Show new counts on the status message, unless the shared budget holds it back.

        A skipped edit is not lost: the counts stay unshown and a later check shows them.
        """
        async with self._slack_calls:
            try:
                await self._slack.of(run.team_id).edit(
                    run.team_id, run.channel_id, status_ts, message, priority=Priority.PROGRESS
                )
            except SlackFailure as exc:
                if exc.paced:
                    self._metrics.status_edits_coalesced.inc()
                else:
                    log.warning("run %s: status not updated: %s", run.id, exc.code)
                return False
        return True


STATUS_EVENT = "retell_run_status"


def status_metadata(run: Run) -> dict[str, Any]:
    """Slack message metadata that marks a run's status message, to find it again."""
    return {"event_type": STATUS_EVENT, "event_payload": {"run_id": run.id}}


def posts_status(run: Run) -> bool:
    """Whether a run shows a status message while it runs (quiet schedules and repeat batches
    other than the first do not)."""
    return run.notify not in QUIET_NOTIFY and run.repeat_of is None


def apply(
    run: Run, batch: BatchJob, state: RunState, *, started_at: datetime | None = None
) -> None:
    """Mirror what the store just recorded onto the in-memory run used for rendering."""
    run.passed, run.failed, run.errored, run.total = batch.counts
    run.batch_id = batch.batch_id
    run.state = state.value
    if started_at is not None:
        run.started_at = started_at
