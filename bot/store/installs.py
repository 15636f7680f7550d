"""Workspaces in distribution mode: where each one's installation is, refresh leases, and
forgetting a workspace that uninstalled the app (SPEC §10)."""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import delete, or_, select, update
from sqlalchemy.exc import IntegrityError

from bot.store.base import Tables
from bot.store.models import (
    AckedCommand,
    AgentPublish,
    CaseResult,
    Run,
    RunSchedule,
    TokenRefresh,
    Workspace,
)


class InstallRecords(Tables):
    """The `workspaces` rows as installations see them, and `token_refreshes`."""

    async def workspace(self, team_id: str) -> Workspace | None:
        async with self._sessions() as session:
            return await session.get(Workspace, team_id)

    async def record_install(
        self,
        team_id: str,
        *,
        enterprise_id: str | None,
        enterprise_install: bool,
        at: datetime | None,
    ) -> None:
        """Where this workspace's token is found; kept across reinstalls (and its Retell key
        with it, until an uninstall forgets both)."""
        values = {
            "enterprise_id": enterprise_id,
            "enterprise_install": enterprise_install,
        }
        if at is not None:
            values["installed_at"] = at  # type: ignore[assignment]
        async with self._sessions.begin() as session:
            row = await session.get(Workspace, team_id, with_for_update=True)
            if row is None:
                session.add(Workspace(team_id=team_id, **values))
                return
            for name, value in values.items():
                setattr(row, name, value)

    async def forget_workspace(self, team_id: str) -> list[int]:
        """Everything the bot keeps of this workspace, gone; the ids of its schedules (whose
        timers the caller removes). The Slack tokens are the installation store's."""
        async with self._sessions.begin() as session:
            schedules = list(
                (
                    await session.execute(
                        select(RunSchedule.id).where(RunSchedule.team_id == team_id)
                    )
                ).scalars()
            )
            runs = select(Run.id).where(Run.team_id == team_id).scalar_subquery()
            await session.execute(delete(CaseResult).where(CaseResult.run_id.in_(runs)))
            await session.execute(delete(AgentPublish).where(AgentPublish.run_id.in_(runs)))
            # Reruns point at their originals: unlink before deleting.
            await session.execute(update(Run).where(Run.team_id == team_id).values(rerun_of=None))
            await session.execute(delete(Run).where(Run.team_id == team_id))
            await session.execute(delete(RunSchedule).where(RunSchedule.team_id == team_id))
            await session.execute(delete(AckedCommand).where(AckedCommand.team_id == team_id))
            await session.execute(delete(Workspace).where(Workspace.team_id == team_id))
        return schedules

    async def teams_of_enterprise(self, enterprise_id: str) -> list[str]:
        """The workspaces an org-wide install has served (its uninstall forgets them all)."""
        async with self._sessions() as session:
            rows = await session.execute(
                select(Workspace.team_id).where(
                    Workspace.enterprise_id == enterprise_id, Workspace.enterprise_install
                )
            )
            return list(rows.scalars())

    async def claim_refresh(
        self, installation: str, holder: str, *, now: datetime, hold: timedelta
    ) -> bool:
        """Take the refresh of one installation's token; False while another replica has it."""
        try:
            async with self._sessions.begin() as session:
                session.add(
                    TokenRefresh(installation=installation, holder=holder, until=now + hold)
                )
            return True
        except IntegrityError:
            pass
        async with self._sessions.begin() as session:  # a holder that died: its lease ran out
            result = await session.execute(
                update(TokenRefresh)
                .where(
                    TokenRefresh.installation == installation,
                    or_(TokenRefresh.until < now, TokenRefresh.holder == holder),
                )
                .values(holder=holder, until=now + hold)
            )
            return bool(getattr(result, "rowcount", 0))

    async def release_refresh(self, installation: str, holder: str) -> None:
        async with self._sessions.begin() as session:
            await session.execute(
                delete(TokenRefresh).where(
                    TokenRefresh.installation == installation, TokenRefresh.holder == holder
                )
            )
