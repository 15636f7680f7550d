"""Per-case results, comparisons with the previous run, and what digests read."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import (
    case,
    func,
    select,
    update,
)

from bot.store.base import Tables
from bot.store.models import CaseResult, Run, RunSchedule, RunState, utcnow

# Enough of Retell's reason for a result and a thread reply; a pathological one stays bounded.
EXPLANATION_KEPT_CHARS = 2000


@dataclass(frozen=True, slots=True)
class RecordedCase:
    """How one case ended in a finished run, as it is kept for comparisons and digests."""

    case_id: str
    name: str
    status: str
    explanation: str | None = None


class CaseRecords(Tables):
    """Per-case results and the history the digests and comparisons read."""

    # -- per-case results, comparison and digests ------------------------------------------

    async def record_cases(
        self, run_id: int, cases: Sequence[RecordedCase], *, now: datetime
    ) -> None:
        """Store how each case of a finished run ended, once; later calls change nothing."""
        async with self._sessions.begin() as session:
            run = await session.get(Run, run_id, with_for_update=True)
            if run is None or run.cases_recorded_at is not None:
                return
            unique = {case.case_id: case for case in cases}
            session.add_all(
                CaseResult(
                    run_id=run_id,
                    case_id=case.case_id,
                    name=case.name[:300],
                    status=case.status[:16],
                    explanation=(
                        case.explanation[:EXPLANATION_KEPT_CHARS]
                        if case.explanation and case.status in ("fail", "error")
                        else None
                    ),
                )
                for case in unique.values()
            )
            run.cases_recorded_at = now

    async def case_names(self, case_ids: Sequence[str]) -> dict[str, str]:
        """The last recorded name of each of these cases (Retell names are not in `runs`)."""
        names: dict[str, str] = {}
        async with self._sessions() as session:
            for start in range(0, len(case_ids), 500):
                result = await session.execute(
                    select(CaseResult.case_id, func.max(CaseResult.name))
                    .where(CaseResult.case_id.in_(list(case_ids[start : start + 500])))
                    .group_by(CaseResult.case_id)
                )
                names.update((str(case_id), str(name)) for case_id, name in result.all())
        return names

    async def case_results(self, run_id: int) -> Sequence[CaseResult]:
        async with self._sessions() as session:
            result = await session.execute(select(CaseResult).where(CaseResult.run_id == run_id))
            return result.scalars().all()

    async def previous_run(self, run: Run) -> Run | None:
        """The last completed run of the same suite in the same channel before `run`."""
        async with self._sessions() as session:
            result = await session.execute(
                select(Run)
                .where(
                    Run.team_id == run.team_id,
                    Run.channel_id == run.channel_id,
                    Run.suite_key == run.suite.key,
                    Run.state == RunState.COMPLETE.value,
                    Run.id != run.id,
                    Run.finished_at <= (run.finished_at or utcnow()),
                )
                .order_by(Run.finished_at.desc(), Run.id.desc())
                .limit(1)
            )
            return result.scalar_one_or_none()

    async def finished_runs(
        self, team_id: str, channel_id: str, since: datetime, until: datetime
    ) -> Sequence[Run]:
        """Completed and timed-out runs of a channel that finished in [since, until)."""
        states = [RunState.COMPLETE.value, RunState.TIMED_OUT.value]
        async with self._sessions() as session:
            result = await session.execute(
                select(Run)
                .where(
                    Run.team_id == team_id,
                    Run.channel_id == channel_id,
                    Run.state.in_(states),
                    Run.finished_at >= since,
                    Run.finished_at < until,
                )
                .order_by(Run.finished_at)
            )
            return result.scalars().all()

    async def set_regressions(self, run_id: int, regressions: int) -> None:
        async with self._sessions.begin() as session:
            await session.execute(
                update(Run).where(Run.id == run_id).values(regressions=regressions)
            )

    async def comparisons(
        self, team_id: str, channel_id: str, since: datetime, until: datetime, *, limit: int
    ) -> Sequence[Run]:
        """The leads of a channel's comparisons finished in [since, until), newest first."""
        async with self._sessions() as session:
            result = await session.execute(
                select(Run)
                .where(
                    Run.team_id == team_id,
                    Run.channel_id == channel_id,
                    Run.candidate_version.is_not(None),
                    Run.regressions.is_not(None),
                    Run.finished_at >= since,
                    Run.finished_at < until,
                )
                .order_by(Run.finished_at.desc(), Run.id.desc())
                .limit(limit)
            )
            return result.scalars().all()

    async def failing_cases(
        self, team_id: str, channel_id: str, since: datetime, until: datetime, *, limit: int
    ) -> list[tuple[str, int, int]]:
        """`(name, times failed or errored, times run)` of a channel's cases, worst first."""
        bad = func.sum(case((CaseResult.status.in_(["fail", "error"]), 1), else_=0))
        async with self._sessions() as session:
            result = await session.execute(
                select(func.max(CaseResult.name), bad, func.count())
                .join(Run, Run.id == CaseResult.run_id)
                .where(
                    Run.team_id == team_id,
                    Run.channel_id == channel_id,
                    Run.finished_at >= since,
                    Run.finished_at < until,
                )
                .group_by(CaseResult.case_id)
                .having(bad > 0)
                .order_by(bad.desc(), func.max(CaseResult.name))
                .limit(limit)
            )
            return [(str(name), int(failed), int(ran)) for name, failed, ran in result.all()]

    async def latest_runs(
        self, team_id: str, channel_ids: Sequence[str], limit: int
    ) -> Sequence[Run]:
        if not channel_ids:
            return []
        async with self._sessions() as session:
            result = await session.execute(
                select(Run)
                .where(Run.team_id == team_id, Run.channel_id.in_(list(channel_ids)))
                .order_by(Run.id.desc())
                .limit(limit)
            )
            return result.scalars().all()

    async def channels_of(self, team_id: str, user_id: str, limit: int = 20) -> list[str]:
        """Channels where someone ran tests or keeps schedules, most recent first."""
        async with self._sessions() as session:
            runs = await session.execute(
                select(Run.channel_id, func.max(Run.id))
                .where(Run.team_id == team_id, Run.user_id == user_id)
                .group_by(Run.channel_id)
                .order_by(func.max(Run.id).desc())
                .limit(limit)
            )
            schedules = await session.execute(
                select(RunSchedule.channel_id)
                .where(RunSchedule.team_id == team_id, RunSchedule.user_id == user_id)
                .distinct()
            )
            found = [str(channel) for channel, _ in runs.all()]
            found += [str(channel) for channel in schedules.scalars()]
            return list(dict.fromkeys(found))[:limit]
