"""What a run tests: a Retell response engine and the test case definitions to run against it.

These are the product's nouns, shared by the parser, the gateway, storage and rendering, so they
are plain frozen dataclasses with no I/O.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any, Literal

EngineType = Literal["retell-llm", "conversation-flow"]

# What each engine type is called in a sentence ("Retell has no Retell LLM llm_abc").
ENGINE_KINDS: dict[EngineType, str] = {
    "retell-llm": "Retell LLM",
    "conversation-flow": "conversation flow",
}

LLM_PREFIX = "llm_"
FLOW_PREFIX = "conversation_flow_"


@dataclass(frozen=True, slots=True)
class Engine:
    """A Retell response engine, optionally pinned to a version (`llm_abc@3`)."""

    type: EngineType
    id: str
    version: int | None = None

    @classmethod
    def from_id(cls, engine_id: str, version: int | None = None) -> Engine:
        """Infer the engine type from Retell's id prefix (`llm_…` or `conversation_flow_…`)."""
        engine_type: EngineType = (
            "conversation-flow" if engine_id.startswith(FLOW_PREFIX) else "retell-llm"
        )
        return cls(engine_type, engine_id, version)

    @classmethod
    def from_response_engine(cls, data: dict[str, Any]) -> Engine:
        """Read Retell's `response_engine` object (as returned on a batch job)."""
        version = data.get("version")
        version_int = int(version) if version is not None else None
        if data.get("type") == "conversation-flow":
            return cls("conversation-flow", str(data["conversation_flow_id"]), version_int)
        return cls("retell-llm", str(data["llm_id"]), version_int)

    @property
    def label(self) -> str:
        """How users write the engine: `llm_abc` or `llm_abc@3`."""
        return self.id if self.version is None else f"{self.id}@{self.version}"

    def response_engine(self) -> dict[str, Any]:
        """Retell's `response_engine` request object for this engine."""
        key = "conversation_flow_id" if self.type == "conversation-flow" else "llm_id"
        body: dict[str, Any] = {"type": self.type, key: self.id}
        if self.version is not None:
            body["version"] = self.version
        return body


@dataclass(frozen=True, slots=True)
class Suite:
    """An engine plus the ordered, de-duplicated test case definition ids to run against it."""

    engine: Engine
    case_ids: tuple[str, ...]

    @property
    def size(self) -> int:
        return len(self.case_ids)

    @property
    def key(self) -> str:
        """The same engine and set of cases, whatever their order: what "the same suite" means
        when a result is compared with the previous one."""
        text = "\n".join([self.engine.type, self.engine.label, *sorted(self.case_ids)])
        return hashlib.sha256(text.encode()).hexdigest()[:32]
