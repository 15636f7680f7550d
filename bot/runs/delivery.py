"""Delivery: a finished run's result, posted once, retried until it lands."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, cast

from bot import blocks, history
from bot.blocks import Comparison, Message
from bot.comparing import Gate, compare_versions
from bot.pacing import Priority
from bot.repeats import CaseSummary, summarize
from bot.retell import BatchJob, RetellProblem, TestRun, TestRunStatus
from bot.runs.context import Services, about_run_step
from bot.runs.publishing import Publishing, tested_engine
from bot.runs.status import QUIET_NOTIFY, StatusMessages, apply
from bot.runview import pass_rate
from bot.slackapi import UNREACHABLE_CHANNEL, SlackFailure
from bot.store import CaseResult, RecordedCase, Run, RunState

# Every part of the workflow logs as `bot.runs`, as the one module did: log filters and
# tests name it.
log = logging.getLogger("bot.runs")

RESULT, MENTION = Priority.RESULT, Priority.MENTION

# A finished group as its result shows it.
GroupView = blocks.RepeatGroup | blocks.VersionsGroup

MAX_DELIVERY_ATTEMPTS = 8
DELIVERY_OUTAGE = timedelta(days=1)  # how long a result waits out a Slack outage


class Delivery:
    """Finish a run and deliver its result: the status message edited, thread replies, DMs."""

    def __init__(
        self, services: Services, statuses: StatusMessages, publishing: Publishing
    ) -> None:
        self._settings = services.settings
        self._store = services.store
        self._retell = services.retell
        self._slack = services.slack
        self._metrics = services.metrics
        self._clock = services.clock
        self._slack_calls = services.slack_calls
        self._statuses = statuses
        self._publishing = publishing

    async def finish(
        self, run: Run, claim: str, state: RunState, batch: BatchJob | None, now: datetime
    ) -> None:
        if not await self._store.finish(run.id, state, batch, now=now):
            return  # someone else finished it
        self._metrics.runs_finished.labels(state.value).inc()
        if batch is not None:
            apply(run, batch, state)
        run.state = state.value
        run.finished_at = now
        log.info("run %s: batch %s %s (%s)", run.id, run.batch_id, state.value, run.counts_key)
        await self._record_cases(run)
        await self.deliver(run, claim)

    async def _record_cases(self, run: Run) -> None:
        """Store how each case ended, once, for comparisons and digests.

        A run where everything passed needs no Retell call: its cases are its case ids, all
        passed (names come from earlier records of the same case, else the id). Otherwise one
        read of `list-test-runs` (all pages). If that fails the result is still delivered;
        it then compares pass rates only.
        """
        if run.cases_recorded_at is not None or run.batch_id is None:
            return
        now = self._clock()
        if run.state == RunState.COMPLETE.value and run.passed == run.total == len(run.case_ids):
            names = await self._store.case_names(run.case_ids)
            cases = [
                RecordedCase(case_id, names.get(case_id, case_id), "pass")
                for case_id in run.case_ids
            ]
        else:
            try:
                test_runs = await self._retell.of(run.team_id).test_runs(run.batch_id)
            except RetellProblem as problem:
                log.warning("run %s: per-case results not read: %s", run.id, problem.message)
                return
            cases = [RecordedCase(r.case_id, r.name, r.status, r.explanation) for r in test_runs]
        await self._store.record_cases(run.id, cases, now=now)
        run.cases_recorded_at = now

    @about_run_step
    async def deliver(self, run: Run, claim: str) -> None:
        """Turn the status message into the result; retried by later sweeps until it lands.

        A quiet schedule's run may post one line instead, or nothing (see `_announcement`).
        A repeat group reports once, through its lead, when every batch of it has finished.
        """
        if run.repeat_of is not None:
            await self._hand_to_lead(run, claim)
            return
        comparison: Comparison | None = None
        view: GroupView | None = None
        if run.leads_group:
            group = await self._statuses.group(run)
            if not all(_settled(other) for other in group[1:]):
                await self._await_repeats(run, claim)
                return
            view = await self._group_view(run, group)
            message: Message | None = _group_announcement(run, view)
        else:
            previous, comparison = await self._comparison(run)
            message = _announcement(run, previous, comparison)
        if message is None:
            await self._store.mark_reported(run.id, claim, now=self._clock())
            log.info("run %s: nothing changed; notify=changes stays quiet", run.id)
            return
        if _green(run, view):
            engine = tested_engine(run)
            drafts = await self._publishing.offers(run.team_id, engine)
            if drafts and engine is not None:
                message = blocks.with_publish(
                    message, blocks.publish_actions(run.id, engine, drafts)
                )
        now = self._clock()
        if (
            run.status_ts is None
            and not run.channel_error
            and await self._statuses.adopt_status(run) is None
        ):
            retry_in = self._settings.poll_initial_seconds
            await self._store.defer_delivery(run.id, claim, retry_in=retry_in, now=now)
            return
        try:
            async with self._slack_calls:
                if run.channel_error:
                    await self._slack.of(run.team_id).direct_message(
                        run.user_id, message, defer=True
                    )
                elif run.status_ts:
                    await self._slack.of(run.team_id).edit(
                        run.team_id, run.channel_id, run.status_ts, message, priority=RESULT
                    )
                else:
                    await self._statuses.post(run, message, run.counts_key, priority=RESULT)
        except SlackFailure as exc:
            if exc.paced:  # the shared budget or Slack's 429: not an attempt, just later
                retry_in = exc.retry_after or self._settings.poll_initial_seconds
                log.info("run %s: result waits %.2fs for Slack (%s)", run.id, retry_in, exc.code)
                await self._store.defer_delivery(run.id, claim, retry_in=retry_in, now=now)
                return
            code = exc.code
            if code in UNREACHABLE_CHANNEL and not run.channel_error:
                log.warning(
                    "run %s: channel unusable (%s); result goes to the requester", run.id, code
                )
                run.channel_error = code
                await self._store.set_channel_error(run.id, code)
                await self.deliver(run, claim)
                return
            await self._delivery_failed(run, claim, code or type(exc).__name__, exc)
            return
        replies = _thread_replies(run, view, comparison)
        if await self._store.mark_reported(run.id, claim, now=self._clock(), mention=bool(replies)):
            await self._post_replies(run, claim, replies, first_try=True)

    @about_run_step
    async def mention(self, run: Run, claim: str) -> None:
        """Post the thread replies still owed for a result a previous attempt delivered."""
        view: GroupView | None = None
        comparison: Comparison | None = None
        if run.leads_group:
            view = await self._group_view(run, await self._statuses.group(run))
        elif run.mention:
            _, comparison = await self._comparison(run)
        await self._post_replies(run, claim, _thread_replies(run, view, comparison))

    async def _post_replies(
        self, run: Run, claim: str, replies: Sequence[ThreadReply], *, first_try: bool = False
    ) -> None:
        """The result's thread replies, each once: a retry looks in the thread before posting.

        Slack has no idempotency key, and an attempt cut short (a crash, a lost connection,
        a cancelled job) may have posted a reply before recording it; each carries message
        metadata naming the run and the reply, which the thread's history shows.
        """
        try:
            async with self._slack_calls:
                for reply in replies:
                    metadata = _reply_metadata(run, reply.kind)
                    if not first_try and await self._slack.of(run.team_id).find_reply(
                        run.channel_id,
                        run.status_ts or "",
                        event_type=metadata["event_type"],
                        payload=metadata["event_payload"],
                    ):
                        continue
                    await self._slack.of(run.team_id).post(
                        run.channel_id,
                        reply.message,
                        thread_ts=run.status_ts,
                        metadata=metadata,
                        priority=MENTION,
                        defer=True,
                    )
        except SlackFailure as exc:
            code = exc.code
            now = self._clock()
            if exc.paced:
                retry_in = exc.retry_after or self._settings.poll_initial_seconds
                await self._store.defer_delivery(run.id, claim, retry_in=retry_in, now=now)
                return
            finished = run.finished_at or now
            if exc.outage and now - finished < DELIVERY_OUTAGE:
                retry_in = self._settings.poll_initial_seconds
                log.info("run %s: Slack unavailable (%s); mention retried", run.id, code)
                await self._store.defer_delivery(run.id, claim, retry_in=retry_in, now=now)
                return
            if run.delivery_attempts + 1 < MAX_DELIVERY_ATTEMPTS:
                log.warning("run %s: thread reply not posted (%s); retried", run.id, code)
                retry_in = self._settings.poll_max_seconds
                await self._store.delivery_failed(run.id, claim, retry_in=retry_in, now=now)
                return
            log.error("run %s: thread reply not posted after retries: %s", run.id, code)
        await self._store.mark_mentioned(run.id, claim)

    async def _comparison(self, run: Run) -> tuple[Run | None, Comparison | None]:
        """The previous completed run of the same suite here, and how this one differs."""
        if run.state != RunState.COMPLETE.value:
            return None, None
        previous = await self._store.previous_run(run)
        if previous is None:
            return None, history.compare(None, (), ())
        current_cases = await self._store.case_results(run.id)
        previous_cases = await self._store.case_results(previous.id)
        return previous, history.compare(previous, current_cases, previous_cases)

    async def _delivery_failed(self, run: Run, claim: str, code: str, exc: SlackFailure) -> None:
        """Try the result again later; give up only on refusals, never on an outage.

        Slack down or rate limiting (5xx, 429, no answer) says nothing about the result: it
        is tried again, backing off to POLL_MAX_SECONDS, for up to DELIVERY_OUTAGE_DAYS.
        A refusal (a workspace policy, a message Slack will not take) counts as an attempt,
        and after MAX_DELIVERY_ATTEMPTS the run is recorded as undeliverable.
        """
        now = self._clock()
        finished = run.finished_at or now
        if exc.outage and now - finished < DELIVERY_OUTAGE:
            waited = (now - finished).total_seconds()
            retry_in = min(
                max(self._settings.poll_initial_seconds, waited / 4),
                self._settings.poll_max_seconds,
            )
            log.info(
                "run %s: Slack unavailable (%s); result retried in %.1fs", run.id, code, retry_in
            )
            await self._store.defer_delivery(run.id, claim, retry_in=retry_in, now=now)
            return
        attempts = run.delivery_attempts + 1
        if attempts >= MAX_DELIVERY_ATTEMPTS:
            log.error("run %s: result not delivered after %d attempts: %s", run.id, attempts, code)
            await self._store.give_up_delivery(run.id, claim, now=now)
            return
        retry_in = min(
            self._settings.poll_initial_seconds * 2**attempts, self._settings.poll_max_seconds
        )
        log.warning("run %s: result not delivered (%s); retry in %.1fs", run.id, code, retry_in)
        await self._store.delivery_failed(run.id, claim, retry_in=retry_in, now=now)

    async def _hand_to_lead(self, run: Run, claim: str) -> None:
        """A repeat batch other than the first is done (its cases recorded): wake the lead."""
        if await self._store.mark_reported(run.id, claim, now=self._clock()) and run.repeat_of:
            await self._store.nudge(run.repeat_of, now=self._clock())

    async def _await_repeats(self, lead: Run, claim: str) -> None:
        """The lead finished before other batches of its group: keep showing their progress,
        and look again shortly (a batch finishing nudges it sooner)."""
        if lead.status_ts and not lead.channel_error:
            await self._statuses.show_progress(lead, lead.status_ts)
        retry_in = self._settings.poll_initial_seconds
        await self._store.defer_delivery(lead.id, claim, retry_in=retry_in, now=self._clock())

    async def _group_view(self, lead: Run, group: Sequence[Run]) -> GroupView:
        """A finished group as its result shows it: repeats with verdicts, or a comparison."""
        candidate = lead.candidate
        if candidate is None:
            return blocks.RepeatGroup(group, await self._summaries(group))
        a_runs = [run for run in group if run.engine_version == lead.engine_version]
        b_runs = [run for run in group if run.engine_version != lead.engine_version]
        a, b = (
            await self._summaries(a_runs, lead.case_ids),
            await self._summaries(b_runs, lead.case_ids),
        )
        comparison = compare_versions(a, b) if a and b else None
        if comparison is not None and lead.regressions != comparison.regressions:
            lead.regressions = comparison.regressions
            await self._store.set_regressions(lead.id, comparison.regressions)
        return blocks.VersionsGroup(group, candidate, comparison)

    async def _summaries(
        self, group: Sequence[Run], order_of: Sequence[str] | None = None
    ) -> list[CaseSummary]:
        """Per-case verdicts over a group's batches, from the results stored as each finished."""
        if not group:
            return []
        order = {case_id: i for i, case_id in enumerate(order_of or group[0].case_ids)}
        batches = []
        for run in group:
            if run.cases_recorded_at is None:
                continue
            cases = sorted(
                await self._store.case_results(run.id),
                key=lambda c: order.get(c.case_id, len(order)),
            )
            batches.append([_test_run(case) for case in cases])
        return summarize(batches)


@dataclass(frozen=True, slots=True)
class ThreadReply:
    """A reply owed in a result's thread; `kind` tells it apart from the run's other ones."""

    kind: str
    message: Message


def _thread_replies(
    run: Run, view: GroupView | None, comparison: Comparison | None
) -> list[ThreadReply]:
    """What a delivered result owes its thread: the requester's mention (not for schedules,
    which nobody is waiting on) and, for a schedule's `mention=`, a regression alert."""
    if run.channel_error:
        return []  # the result went by DM: that is the notification
    replies = []
    if run.schedule_id is None:
        if isinstance(view, blocks.VersionsGroup):
            mention = blocks.compare_mention(view)
        elif view is not None:
            mention = blocks.repeat_mention(view)
        else:
            mention = blocks.requester_mention(run)
        replies.append(ThreadReply("requester", mention))
    if run.mention and comparison is not None and history.regressed(run, comparison):
        alert = blocks.regression_mention(run, run.mention, comparison)
        replies.append(ThreadReply("regression", alert))
    return replies


REPLY_EVENT = "retell_run_reply"


def _reply_metadata(run: Run, kind: str) -> dict[str, Any]:
    return {"event_type": REPLY_EVENT, "event_payload": {"run_id": run.id, "kind": kind}}


def _settled(run: Run) -> bool:
    """A repeat batch is settled once it reported to its lead, or could not be created."""
    return run.reported_at is not None or run.state == RunState.FAILED.value


def _test_run(case: CaseResult) -> TestRun:
    """A stored per-case result in the shape the aggregation reads."""
    status = cast(TestRunStatus, case.status)
    return TestRun("", case.case_id, case.name, status, case.explanation)


def _green(run: Run, view: GroupView | None) -> bool:
    """Whether a finished result vouches for its engine version: everything passed, or the
    gate held; for a comparison, no regression and the gate held (SPEC §9)."""
    if run.state != RunState.COMPLETE.value:
        return False
    if isinstance(view, blocks.VersionsGroup):
        return view.green
    if isinstance(view, blocks.RepeatGroup):
        passed, _, _, total = view.counts
        if not view.finished or any(r.state != RunState.COMPLETE.value for r in view.runs):
            return False
    else:
        passed, total = run.passed, run.total
    if total == 0:
        return False
    if run.min_pass is not None:
        return Gate(run.min_pass).held(pass_rate(passed, total))
    return passed == total


def _group_announcement(run: Run, view: GroupView) -> Message | None:
    """What a finished group posts; a quiet comparison schedule speaks only when it matters.

    `notify=failures` posts the full result unless the comparison is green (no regression,
    the gate held), then one quiet line; `notify=changes` only when a case regressed or was
    fixed.
    """
    if isinstance(view, blocks.RepeatGroup):
        return blocks.repeat_result(view)
    full = blocks.compare_result(view)
    if run.notify not in QUIET_NOTIFY or view.comparison is None:
        return full
    if run.notify == "failures":
        return blocks.quiet_comparison(view) if view.green else full
    changed = view.comparison.regressions + view.comparison.count("fixed")
    return full if changed else None


def _announcement(run: Run, previous: Run | None, comparison: Comparison | None) -> Message | None:
    """What a finished run posts: the result, or for quiet schedules one line or nothing.

    `notify=failures` posts the full result only when something failed or errored, else one
    quiet line; `notify=changes` posts it only when it differs from the previous run.
    """
    full = blocks.result_message(run, comparison=comparison)
    if run.state != RunState.COMPLETE.value or run.notify not in QUIET_NOTIFY:
        return full
    if run.notify == "failures":
        green = (
            Gate(run.min_pass).held(pass_rate(run.passed, run.total))
            if run.min_pass is not None
            else not run.failed + run.errored
        )
        return blocks.quiet_result(run) if green else full
    if comparison is None or history.changed(run, previous, comparison):
        return full
    return None
