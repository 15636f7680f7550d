"""Triage: reruns (one at a time per run, under a database lock), failures, status."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from datetime import timedelta

from bot import blocks
from bot.blocks import Message
from bot.commands import TestSelection
from bot.repeats import summarize
from bot.retell import RetellProblem
from bot.runs.context import Services
from bot.runs.replies import failures_already_shown, rerun_under_way
from bot.runs.requests import Requester, RunRequest
from bot.runs.starting import Starting
from bot.slackapi import SlackFailure
from bot.store import Run

# Every part of the workflow logs as `bot.runs`, as the one module did: log filters and
# tests name it.
log = logging.getLogger("bot.runs")

# A rerun press holds its run until the rerun is recorded (released then): long enough for a
# start under load, which with the follow-up lease (1 s in tests) it outlived, so a second
# press started a second rerun. Only a process that dies holds it to the end.
RERUN_LOCK = timedelta(seconds=30)


class Triage:
    """What a run's buttons and the `status` command do: rerun it, show its failures, look."""

    def __init__(self, services: Services, starting: Starting) -> None:
        self._store = services.store
        self._retell = services.retell
        self._slack = services.slack
        self._clock = services.clock
        self._lease = services.lease
        self._tell = services.tell
        self._starting = starting

    async def rerun(
        self, run_id: int, who: Requester, *, only_failed: bool, request_key: str | None = None
    ) -> Run | None:
        """A new batch with the same engine and cases (or only those that failed or errored).

        A comparison is rerun as the same comparison: both versions, and "failed" means the
        cases that did not pass on the candidate.
        """
        original = await self._authorized_run(run_id, who)
        if original is None:
            return None
        hold = max(self._lease, RERUN_LOCK)
        if not await self._store.lock_rerun(run_id, now=self._clock(), lease=hold):
            await self._tell(who, rerun_under_way())
            return None
        try:
            if await self._store.rerun_in_flight(run_id):
                await self._tell(who, rerun_under_way())
                return None
            return await self._rerun(
                original, who, only_failed=only_failed, request_key=request_key
            )
        finally:
            await self._store.unlock_rerun(run_id)

    async def _rerun(
        self, original: Run, who: Requester, *, only_failed: bool, request_key: str | None
    ) -> Run | None:
        case_ids: Sequence[str] = original.case_ids
        if only_failed:
            try:
                case_ids = await self._failed_cases(original)
            except RetellProblem as problem:
                await self._tell(who, blocks.problem(problem.message))
                return None
            if not case_ids:
                message = "No case failed or errored in that batch: nothing to rerun."
                await self._tell(who, blocks.problem(message))
                return None
        tests = TestSelection(ids=tuple(case_ids), names=(), everything=False)
        request = RunRequest(
            who,
            original.engine,
            tests,
            source="rerun",
            rerun_of=original.id,
            request_key=request_key,
            repeats=original.repeats,
            candidate=original.candidate,
            min_pass=original.min_pass,
        )
        return await self._starting.start(request)

    async def _failed_cases(self, original: Run) -> list[str]:
        """The cases that failed or errored in a run (in any batch of a repeat group, in any
        batch on B of a comparison), in the suite's order: from the results stored when it
        finished, else read from Retell."""
        bad: set[str] = set()
        for run in _judged(original, await self._store.repeat_group(original.id)):
            if run.cases_recorded_at is not None:
                cases = [(c.case_id, c.status) for c in await self._store.case_results(run.id)]
            elif run.batch_id is not None:
                retell = self._retell.of(run.team_id)
                cases = [(r.case_id, r.status) for r in await retell.test_runs(run.batch_id)]
            else:
                continue
            bad.update(case_id for case_id, status in cases if status in ("fail", "error"))
        in_suite = [case_id for case_id in original.case_ids if case_id in bad]
        return in_suite + sorted(bad.difference(in_suite))

    async def show_failures(self, run_id: int, who: Requester) -> None:
        """Thread replies listing each failed, flaky and errored case with Retell's why.

        Read fresh from Retell (every page of every batch of the run), once: a second press,
        or a double click, is told where the list is instead of posting it again.
        """
        run = await self._authorized_run(run_id, who)
        if run is None or run.batch_id is None:
            return
        if not await self._store.mark_failures_shown(run.id, now=self._clock()):
            await self._tell(who, failures_already_shown())
            return
        try:
            await self._post_failures(run)
        except RetellProblem as problem:
            await self._store.unmark_failures_shown(run.id)
            await self._tell(who, blocks.problem(problem.message))
        except SlackFailure as exc:
            await self._store.unmark_failures_shown(run.id)
            log.warning("run %s: failures not posted: %s", run.id, exc.code)
            await self._tell(
                who,
                blocks.problem(f"The failures could not be posted ({exc.code}); try again."),
            )

    async def _post_failures(self, run: Run) -> None:
        group = [r for r in _judged(run, await self._store.repeat_group(run.id)) if r.batch_id]
        retell = self._retell.of(run.team_id)
        batches = await asyncio.gather(*(retell.test_runs(r.batch_id or "") for r in group))
        # A comparison lists B's failures, under B's engine and batch.
        shown = group[0] if group and run.candidate_version is not None else run
        post = blocks.failures_post(shown, summarize(batches), batches=len(batches))
        for reply in post.replies:
            await self._slack.of(run.team_id).post(run.channel_id, reply, thread_ts=run.status_ts)
        if post.attachment is not None:
            file = post.attachment
            await self._slack.of(run.team_id).upload(
                run.channel_id,
                file.content,
                filename=file.filename,
                title=file.title,
                thread_ts=run.status_ts,
            )

    async def _authorized_run(self, run_id: int, who: Requester) -> Run | None:
        """The run a button names, if it is this channel's; a repeat group's lead for any of
        its batches (buttons act on the group)."""
        run = await self._store.get(run_id)
        if run is not None and run.repeat_of is not None:
            run = await self._store.get(run.repeat_of)
        if run is None or run.team_id != who.team_id or run.channel_id != who.channel_id:
            await self._tell(who, blocks.problem("That run is not one of this channel's."))
            return None
        return run

    async def status(self, who: Requester, batch_id: str | None) -> Message:
        if batch_id is None:
            return blocks.in_flight_list(await self._store.in_flight(who.channel_id))
        run = await self._store.by_batch(batch_id)
        if run is not None and run.team_id != who.team_id:
            run = None
        try:
            batch = await self._retell.of(who.team_id).get_batch(batch_id)
        except RetellProblem as problem:
            return blocks.problem(problem.message)
        return blocks.batch_status(batch, run)


def _judged(lead: Run, group: Sequence[Run]) -> list[Run]:
    """The batches whose failures a group's buttons act on: all of a repeat group's, and the
    candidate's (B's) of a comparison, since B is what is being decided on."""
    if lead.candidate_version is None:
        return list(group)
    return [run for run in group if run.engine_version == lead.candidate_version]
