"""Seeding: engines, definitions, agents and what cases resolve to; creating batches.

Tests and the control endpoints seed through these methods; a batch's outcomes are drawn
here when it is created, whether through the API or directly.
"""

from __future__ import annotations

import secrets
import zlib
from typing import Any

from bot.testing.retell.model import (
    BATCH_HEX_LENGTH,
    BATCH_ID_PREFIX,
    ENGINE_ID_KEYS,
    ERROR_EXPLANATIONS,
    FAIL_EXPLANATIONS,
    EngineType,
    FakeAgent,
    FakeAgentVersion,
    FakeBatch,
    FakeDefinition,
    FakeEngine,
    Outcome,
    RetellStandInError,
)
from bot.testing.retell.parsing import (
    _id_list,
    _infer_engine_type,
    _parse_case_ids,
    _parse_response_engine,
)
from bot.testing.retell.state import RetellState


class SeedingMixin(RetellState):
    """Engines, definitions, agents, scripted outcomes and batch durations; batch creation."""

    # ----- seeding ---------------------------------------------------------------------------

    def add_engine(self, engine_type: EngineType, engine_id: str, *, versions: int = 1) -> None:
        """Create an engine with versions 0..versions-1, or publish more versions of one."""
        if versions < 1:
            raise ValueError("an engine has at least one version")
        engine = self._engines.get(engine_id)
        if engine is None:
            self._engines[engine_id] = FakeEngine(
                engine_type, engine_id, versions - 1, modified_ms=self._wall_ms()
            )
        elif engine.engine_type != engine_type:
            raise ValueError(f"{engine_id} already exists as a {engine.engine_type} engine")
        else:
            engine.latest_version = max(engine.latest_version, versions - 1)
            engine.modified_ms = self._wall_ms()

    def add_definition(self, engine_id: str, case_id: str, name: str) -> None:
        """Add a test case definition to an existing engine."""
        engine = self._engines.get(engine_id)
        if engine is None:
            raise KeyError(f"unknown engine {engine_id}; add_engine() first")
        if case_id in self._definitions:
            raise ValueError(f"test case definition {case_id} already exists")
        self._definitions[case_id] = FakeDefinition(
            case_id, name, engine.engine_type, engine_id, self._wall_ms()
        )
        engine.definition_ids.append(case_id)

    def seed(
        self,
        engine_id: str,
        count: int,
        *,
        prefix: str = "tc_",
        engine_type: EngineType | None = None,
    ) -> list[str]:
        """Add the engine if missing and `count` definitions named "Case 1".. for it.

        Ids are `<prefix><n>` with the lowest free numbers, so they stay unique across engines
        (`tc_1..tc_3` for one engine, then `tc_4..` for the next). The type is inferred from
        the id (`conversation_flow_…` or else `retell-llm`) unless given.
        """
        if engine_id not in self._engines:
            self.add_engine(engine_type or _infer_engine_type(engine_id), engine_id)
        engine = self._engines[engine_id]
        ids: list[str] = []
        number = 1
        while len(ids) < count:
            case_id = f"{prefix}{number}"
            number += 1
            if case_id not in self._definitions:
                self.add_definition(engine_id, case_id, f"Case {len(engine.definition_ids) + 1}")
                ids.append(case_id)
        return ids

    def set_outcome(
        self,
        case_id: str,
        status: Outcome,
        explanation: str | None = None,
        *,
        version: int | None = None,
    ) -> None:
        """Fix what a case resolves to in batches created from now on.

        With `version`, only in batches of that engine version (resolved: a batch that names
        no version runs the latest), and ahead of any setting without one: this is how a test
        makes version 4 regress a case that version 3 passes. Without any, a case passes,
        unless its id contains "error" (errors) or "fail" (fails).
        """
        self._outcomes[(case_id, version)] = (status, explanation)

    def script_outcomes(
        self,
        case_id: str,
        outcomes: list[tuple[Outcome, str | None]],
        *,
        version: int | None = None,
    ) -> None:
        """What a case resolves to in the next batches that include it, one entry per batch.

        Once the script is used up, `set_outcome` (or the id-based default) applies again;
        this is how a test makes a case flaky across repeated runs of one suite. With
        `version`, the script is used (and used up) only by batches of that engine version.
        """
        self._outcome_scripts[(case_id, version)] = list(outcomes)

    def add_agent(self, agent_id: str, name: str, versions: list[FakeAgentVersion]) -> None:
        """Create an agent with versions 0..n, each answering with an existing engine version.

        The last version is the agent's draft unless it is marked published.
        """
        if agent_id in self._agents:
            raise ValueError(f"agent {agent_id} already exists")
        if not versions:
            raise ValueError("an agent has at least one version")
        for version in versions:
            engine = self._engines.get(version.engine_id)
            if engine is None or engine.engine_type != version.engine_type:
                raise KeyError(f"unknown {version.engine_type} {version.engine_id}; add it first")
            if not 0 <= version.engine_version <= engine.latest_version:
                raise ValueError(
                    f"{version.engine_id} has no version {version.engine_version} "
                    f"(latest is {engine.latest_version})"
                )
        now = self._wall_ms()
        self._agents[agent_id] = FakeAgent(agent_id, name, list(versions), now, now)

    def create_batch_directly(
        self, engine: dict[str, Any], case_ids: list[str], *, duration: float | None = None
    ) -> str:
        """Create a batch as Retell's dashboard or a CI job would; returns its id.

        Validation is the API's: invalid input raises `RetellStandInError`.
        """
        return self._create_batch(engine, case_ids, duration=duration).batch_id

    def _drawn_duration(self) -> float:
        if self.shortest_batch_seconds is None:
            return self.batch_seconds
        return self._durations.uniform(self.shortest_batch_seconds, self.batch_seconds)

    def set_batch_duration(self, seconds: float) -> None:
        """Simulated seconds that new batches take, unless `next_batch_durations` says otherwise."""
        self.batch_seconds = seconds

    def finish_now(self, batch_id: str) -> None:
        """Complete every remaining case of a batch at the current clock time."""
        batch = self.batches[batch_id]
        now = self._clock()
        batch.finished_at = now if batch.finished_at is None else min(batch.finished_at, now)

    def complete_cases(self, batch_id: str, count: int) -> None:
        """Move a batch on so that (at least) its first `count` cases have completed now.

        Lets a test see a batch part-way through without racing a real-time timeline.
        """
        batch = self.batches[batch_id]
        if batch.duration <= 0 or batch.completed(self._clock()) >= count:
            return
        span = batch.duration / batch.time_scale  # clock seconds from start to the last case
        batch.started_at = self._clock() - span * count / batch.total - 1e-6

    # ----- the model -------------------------------------------------------------------------

    def _outcome_for(self, case_id: str, version: int) -> tuple[Outcome, str | None]:
        for key in ((case_id, version), (case_id, None)):  # the version's own setting first
            script = self._outcome_scripts.get(key)
            if script:
                status, explanation = script.pop(0)
                break
            if key in self._outcomes:
                status, explanation = self._outcomes[key]
                break
        else:
            if "error" in case_id:
                status, explanation = "error", None
            elif "fail" in case_id:
                status, explanation = "fail", None
            else:
                status, explanation = "pass", None
        if explanation is None and status != "pass":
            pool = ERROR_EXPLANATIONS if status == "error" else FAIL_EXPLANATIONS
            explanation = pool[zlib.crc32(case_id.encode()) % len(pool)]
        return status, explanation

    def _create_batch(
        self, response_engine: Any, case_ids: Any, *, duration: float | None
    ) -> FakeBatch:
        engine_type, engine_id, version = _parse_response_engine(response_engine)
        ids = _parse_case_ids(case_ids)
        engine = self._require_engine(engine_type, engine_id)
        resolved_version = self._resolve_version(engine, version)
        unknown = [
            case_id
            for case_id in dict.fromkeys(ids)
            if case_id not in self._definitions or self._definitions[case_id].engine_id != engine_id
        ]
        if unknown:
            raise RetellStandInError(
                404,
                f"Test case definitions not found for {engine_id}: {_id_list(unknown)}.",
            )
        if duration is None:
            duration = (
                self.next_batch_durations.pop(0)
                if self.next_batch_durations
                else self._drawn_duration()
            )
        fail_indices: list[int] = []
        error_indices: list[int] = []
        explanations: dict[int, str] = {}
        for index, case_id in enumerate(ids):
            status, explanation = self._outcome_for(case_id, resolved_version)
            if status == "fail":
                fail_indices.append(index)
            elif status == "error":
                error_indices.append(index)
            if explanation is not None:
                explanations[index] = explanation
        echoed: dict[str, Any] = {"type": engine_type, ENGINE_ID_KEYS[engine_type]: engine_id}
        if version is not None:
            echoed["version"] = version
        batch = FakeBatch(
            batch_id=BATCH_ID_PREFIX + secrets.token_hex(BATCH_HEX_LENGTH // 2),
            engine_type=engine_type,
            engine_id=engine_id,
            version=resolved_version,
            response_engine=echoed,
            case_ids=ids,
            fail_indices=fail_indices,
            error_indices=error_indices,
            explanations=explanations,
            started_at=self._clock(),
            created_ms=self._wall_ms(),
            duration=duration,
            time_scale=self.time_scale,
            stalled=self.complete_never,
        )
        self.batches[batch.batch_id] = batch
        self._batches_by_version.setdefault((engine_id, resolved_version), []).append(batch)
        return batch
