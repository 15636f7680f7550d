"""Engine versions and the agents answering with them: what publishing a tested version needs.

A green run of `llm_abc@4` can be shipped by publishing the agents whose draft answers with
exactly `llm_abc@4`. Retell's agent list names no engine, so finding them takes the list plus
calls per agent; `AgentDirectory` keeps the whole map for a short while, so that a burst of
results costs one scan. These calls sit beside `bot.retell` (which is full) and share its
client and its counted error mapping.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass

import retell
from retell import omit

from bot.retell import LIST_PAGE_SIZE, PageWalk, RetellGateway, RetellProblem, retell_said
from bot.suite import ENGINE_KINDS, Engine
from bot.text import one_line

DRAFTS_TTL_SECONDS = 60.0
SCAN_CONCURRENCY = 8  # per-agent calls at once: a scan must not crowd out the runs' polling
MAX_AGENTS = 5_000  # far beyond any real account; bounds a listing that never ends
MAX_AGENT_VERSIONS = 10_000

NO_REASON: dict[str, str] = {
    "unauthorized": "the API key was rejected; ask the bot's admin to check RETELL_API_KEY.",
    "rate_limited": "the account is rate limited; try again in a minute.",
    "unavailable": "Retell is unavailable; try again in a few minutes.",
}

Drafts = dict[Engine, tuple["AgentDraft", ...]]


@dataclass(frozen=True, slots=True)
class AgentDraft:
    """An agent whose draft (its latest version, unpublished) answers with a tested engine."""

    agent_id: str
    name: str
    version: int


class EngineVersions:
    """The concrete version an engine stands for: `llm_abc@3` once Retell has it, else the latest.

    What a result is about, and what an agent's draft must answer with to be offered.
    """

    def __init__(self, gateway: RetellGateway) -> None:
        self._gateway = gateway

    async def engine_version(self, engine: Engine) -> int:
        """One retrieve of the engine (at its version, if it has one)."""
        asked = engine.version if engine.version is not None else omit
        found: int | None
        try:
            client = await self._gateway.account()
            if engine.type == "conversation-flow":
                found = (await client.conversation_flow.retrieve(engine.id, version=asked)).version
            else:
                found = (await client.llm.retrieve(engine.id, version=asked)).version
        except Exception as exc:
            problem = self._gateway.problem(exc, what=f"engine {engine.label}")
            if problem.kind != "not_found" or not isinstance(exc, retell.APIStatusError):
                raise problem from exc
            raise RetellProblem("not_found", _missing(engine, exc), problem.status) from exc
        if engine.version is not None:
            return engine.version
        if found is None:
            raise RetellProblem(
                "unexpected", f"Retell did not say which version of {engine.id} is the latest."
            )
        return found


def _missing(engine: Engine, exc: retell.APIStatusError) -> str:
    detail = retell_said(exc)
    said = f" Retell said: “{detail}”" if detail else ""
    if engine.version is None:
        return f"Retell has no {ENGINE_KINDS[engine.type]} {engine.id} ({exc.status_code}).{said}"
    return f"Retell has no version {engine.version} of {engine.id} ({exc.status_code}).{said}"


class AgentDirectory:
    """Which agents' drafts answer with which engine version, from one scan kept for `ttl` s.

    Callers who ask while a scan is under way wait for that scan rather than start their own;
    `forget()` (after a publish) makes the next caller scan again.
    """

    def __init__(
        self,
        gateway: RetellGateway,
        *,
        ttl: float = DRAFTS_TTL_SECONDS,
        clock: Callable[[], float] = time.monotonic,
        concurrency: int = SCAN_CONCURRENCY,
    ) -> None:
        self._gateway = gateway
        self._ttl = ttl
        self._clock = clock
        self._concurrency = concurrency
        self._drafts: Drafts | None = None
        self._fresh_until = 0.0
        self._scan: asyncio.Task[Drafts] | None = None
        self._generation = 0  # moved on by forget(): a scan begun before it is not kept

    async def drafts_of(self, engine: Engine) -> list[AgentDraft]:
        """The agents whose draft answers with exactly this engine and version."""
        if engine.version is None:
            raise ValueError(f"{engine.id} has no version: resolve it with engine_version first")
        drafts = await self._current()
        return list(drafts.get(engine, ()))

    def forget(self) -> None:
        """Drop what the last scan found, and any scan under way: an agent has changed."""
        self._generation += 1
        self._drafts = None
        self._scan = None

    async def publish(self, agent_id: str, version: int, *, name: str | None = None) -> None:
        """Publish exactly this version of the agent, tried once.

        A publish that got no answer may have happened, so the SDK's retries are off and the
        user decides, with Retell's own state in view, whether to press again.
        """
        shown = name or self._known_name(agent_id) or agent_id
        try:
            client = (await self._gateway.account()).with_options(max_retries=0)
            await client.agent.publish(agent_id, version=version)
        except Exception as exc:
            problem = self._gateway.problem(exc, what=f"agent {shown}")
            raise _not_published(problem, exc, f"version {version} of {shown}") from exc
        finally:
            self.forget()

    def _known_name(self, agent_id: str) -> str | None:
        for drafts in (self._drafts or {}).values():
            for draft in drafts:
                if draft.agent_id == agent_id:
                    return draft.name
        return None

    # ----- the scan ----------------------------------------------------------------------------

    async def _current(self) -> Drafts:
        if self._drafts is not None and self._clock() < self._fresh_until:
            return self._drafts
        if self._scan is None:
            scan = asyncio.create_task(self._scan_and_keep(self._generation))
            scan.add_done_callback(self._scan_ended)
            self._scan = scan
        # Shielded: one caller giving up must not cancel the scan the others wait for.
        return await asyncio.shield(self._scan)

    def _scan_ended(self, scan: asyncio.Task[Drafts]) -> None:
        if self._scan is scan:
            self._scan = None
        if not scan.cancelled():
            scan.exception()  # seen by its waiters; marked so even when all of them gave up

    async def _scan_and_keep(self, generation: int) -> Drafts:
        started = self._clock()
        drafts = await self._scan_agents()
        if generation == self._generation:
            self._drafts, self._fresh_until = drafts, started + self._ttl
        return drafts

    async def _scan_agents(self) -> Drafts:
        agents = await self._agents()
        slots = asyncio.Semaphore(self._concurrency)

        async def draft(agent_id: str, name: str) -> tuple[Engine, AgentDraft] | None:
            async with slots:
                return await self._draft(agent_id, name)

        try:
            async with asyncio.TaskGroup() as group:
                tasks = [group.create_task(draft(*agent)) for agent in agents]
        except* RetellProblem as failed:
            raise failed.exceptions[0] from None
        found: dict[Engine, list[AgentDraft]] = {}
        for task in tasks:
            if (result := task.result()) is not None:
                found.setdefault(result[0], []).append(result[1])
        return {engine: tuple(drafts) for engine, drafts in found.items()}

    async def _agents(self) -> list[tuple[str, str]]:
        """Every agent's id and name, all pages."""
        found: list[tuple[str, str]] = []
        key: str | None = None
        walk = PageWalk("agents", MAX_AGENTS)
        while True:
            try:
                page = await (await self._gateway.account()).agent.list(
                    limit=LIST_PAGE_SIZE, pagination_key=key or omit
                )
            except Exception as exc:
                raise self._gateway.problem(exc, what="list of agents") from exc
            found.extend(
                (item.agent_id, one_line(item.agent_name) or item.agent_id) for item in page.items
            )
            key = walk.next_key(len(page.items), page.has_more, page.pagination_key)
            if key is None:
                return found

    async def _draft(self, agent_id: str, name: str) -> tuple[Engine, AgentDraft] | None:
        """The agent's draft and the engine version it answers with; None if it has no draft."""
        try:
            client = await self._gateway.account()
            latest = await self._latest_version(agent_id)
            if latest is None or latest[1]:
                return None
            agent = await client.agent.retrieve(agent_id, version=latest[0])
        except retell.NotFoundError:
            return None  # deleted since it was listed
        except Exception as exc:
            raise self._gateway.problem(exc, what=f"agent {name}") from exc
        answers_with = agent.response_engine.model_dump()
        if answers_with.get("type") not in ENGINE_KINDS:
            return None  # a custom LLM: nothing the bot tests
        engine = Engine.from_response_engine(answers_with)
        if engine.version is None:
            return None  # follows the engine's latest: not one tested version
        return engine, AgentDraft(agent_id, name, latest[0])

    async def _latest_version(self, agent_id: str) -> tuple[int, bool] | None:
        """The agent's highest version and whether it is published, all pages read."""
        latest: tuple[int, bool] | None = None
        key: str | None = None
        walk = PageWalk(f"versions of agent {agent_id}", MAX_AGENT_VERSIONS)
        while True:
            page = await (await self._gateway.account()).agent.list_versions(
                agent_id, limit=LIST_PAGE_SIZE, pagination_key=key or omit
            )
            for item in page.items:
                if latest is None or item.version > latest[0]:
                    latest = (item.version, item.is_published)
            key = walk.next_key(len(page.items), page.has_more, page.pagination_key)
            if key is None:
                return latest


def _not_published(problem: RetellProblem, exc: Exception, what: str) -> RetellProblem:
    """A failed publish in words: refused (nothing changed) or unconfirmed (it may have)."""
    if problem.uncertain:
        code = f" ({problem.status})" if problem.status is not None else ""
        message = (
            f"Retell did not confirm publishing {what}{code}: it may have been published anyway, "
            "so check the agent in Retell before trying again."
        )
    elif isinstance(exc, retell.APIStatusError):
        reason = retell_said(exc) or NO_REASON.get(problem.kind, "Retell gave no reason.")
        ending = "" if reason.endswith((".", "!", "?")) else "."
        message = f"Retell refused to publish {what} ({exc.status_code}): {reason}{ending}"
    else:
        message = f"Could not publish {what}: {problem.message}"
    return RetellProblem(problem.kind, message, problem.status, uncertain=problem.uncertain)
