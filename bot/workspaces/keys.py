"""Each workspace's own Retell API key, encrypted at rest in the `workspaces` table.

The key is a Fernet token under `ENCRYPTION_KEYS` (`MultiFernet`: the first key encrypts, every
key decrypts, so an operator adds a new key in front, runs `retell-bot keys rotate`, and drops
the old one). Follow-ups ask for a workspace's key many times a second, so a key read is kept
in memory for `ttl` seconds: a change made in this process is seen at once, one made by another
replica within `ttl`. A token no configured key can decrypt counts as not connected (and is
logged without its value), never as a crash.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from sqlalchemy import select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker

from bot.store import Workspace, utcnow

log = logging.getLogger(__name__)

KEY_TTL_SECONDS = 5.0
HINT_LENGTH = 4


@dataclass(frozen=True, slots=True)
class KeyHint:
    """What may be shown of a connected key: its last characters, who connected it, when."""

    hint: str
    by: str | None
    at: datetime | None


class RetellKeys:
    """Connect, read, remove and re-encrypt the workspaces' Retell keys."""

    def __init__(
        self,
        engine: AsyncEngine,
        encryption_keys: Sequence[str],
        *,
        ttl: float = KEY_TTL_SECONDS,
        clock: Callable[[], float] = time.monotonic,
        now: Callable[[], datetime] = utcnow,
    ) -> None:
        if not encryption_keys:
            raise ValueError("RetellKeys needs at least one encryption key (ENCRYPTION_KEYS)")
        self._engine = engine
        self._sessions = async_sessionmaker(engine, expire_on_commit=False)
        self._fernet = MultiFernet([Fernet(key) for key in encryption_keys])
        self._ttl = ttl
        self._clock = clock
        self._now = now
        self._cache: dict[str, tuple[float, str | None]] = {}

    async def connect(self, team_id: str, key: str, *, user_id: str) -> None:
        """Store `key` as the workspace's Retell key (the row is created if there is none)."""
        values = {
            "retell_key": self._fernet.encrypt(key.encode()).decode(),
            "retell_key_hint": key[-HINT_LENGTH:],
            "retell_key_by": user_id,
            "retell_key_at": self._now(),
        }
        insert = postgresql.insert if self._engine.dialect.name == "postgresql" else sqlite.insert
        statement = insert(Workspace).values(team_id=team_id, **values)
        statement = statement.on_conflict_do_update(index_elements=["team_id"], set_=values)
        async with self._sessions.begin() as session:
            await session.execute(statement)
        self._cache[team_id] = (self._clock() + self._ttl, key)

    async def key_for(self, team_id: str) -> str | None:
        """The workspace's own key in clear, None when it connected none (or it is unreadable)."""
        cached = self._cache.get(team_id)
        if cached is not None and cached[0] > self._clock():
            return cached[1]
        async with self._sessions() as session:
            token = await session.scalar(
                select(Workspace.retell_key).where(Workspace.team_id == team_id)
            )
        key = self._decrypt(team_id, token) if token else None
        if len(self._cache) > 10_000:
            self._cache.clear()  # bounded: a cache, not a copy of the table
        self._cache[team_id] = (self._clock() + self._ttl, key)
        return key

    async def hint(self, team_id: str) -> KeyHint | None:
        """What App Home shows of the workspace's key; None when it has none it can use."""
        async with self._sessions() as session:
            row = (
                await session.execute(
                    select(
                        Workspace.retell_key,
                        Workspace.retell_key_hint,
                        Workspace.retell_key_by,
                        Workspace.retell_key_at,
                    ).where(Workspace.team_id == team_id)
                )
            ).first()
        if row is None or not row.retell_key or self._decrypt(team_id, row.retell_key) is None:
            return None
        return KeyHint(row.retell_key_hint or "", row.retell_key_by, row.retell_key_at)

    async def remove(self, team_id: str) -> bool:
        """Forget the workspace's key; True when it had one."""
        async with self._sessions.begin() as session:
            result = await session.execute(
                update(Workspace)
                .where(Workspace.team_id == team_id, Workspace.retell_key.is_not(None))
                .values(
                    retell_key=None, retell_key_hint=None, retell_key_by=None, retell_key_at=None
                )
            )
        self._cache[team_id] = (self._clock() + self._ttl, None)
        return bool(getattr(result, "rowcount", 0))

    def forget(self, team_id: str) -> None:
        """The workspace uninstalled (its row is gone): nothing of its key is kept here."""
        self._cache.pop(team_id, None)

    async def rotate(self) -> int:
        """Re-encrypt every stored key with the first encryption key; how many were.

        Rows no configured key can decrypt are left as they are (and logged): rotating must
        not destroy a key that an operator may still recover by putting its old key back.
        """
        rotated = 0
        async with self._sessions.begin() as session:
            rows = (
                await session.execute(
                    select(Workspace.team_id, Workspace.retell_key).where(
                        Workspace.retell_key.is_not(None)
                    )
                )
            ).all()
            for team_id, token in rows:
                if not token:
                    continue
                try:
                    fresh = self._fernet.rotate(token.encode()).decode()
                except InvalidToken:
                    log.warning("workspace %s: its Retell key decrypts with no key; kept", team_id)
                    continue
                await session.execute(
                    update(Workspace).where(Workspace.team_id == team_id).values(retell_key=fresh)
                )
                rotated += 1
        self._cache.clear()
        return rotated

    def _decrypt(self, team_id: str, token: str) -> str | None:
        try:
            return self._fernet.decrypt(token.encode()).decode()
        except InvalidToken:
            log.warning(
                "workspace %s: its Retell key decrypts with none of ENCRYPTION_KEYS; "
                "treated as not connected",
                team_id,
            )
            return None
