"""The API's test case definitions and response engines (Retell LLMs, conversation flows).

Also the parts every list call shares (the engine named by the query, the page limit), which
the batch-test handlers reuse.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from bot.testing.retell.answers import _page
from bot.testing.retell.model import (
    ENGINE_ID_KEYS,
    SIMULATION_MODEL,
    EngineType,
    FakeDefinition,
    FakeEngine,
    RetellStandInError,
)
from bot.testing.retell.parsing import (
    _decode_key,
    _encode_key,
    _engine_type,
    _query_limit,
    _query_version,
)
from bot.testing.retell.state import RetellState


class DefinitionsMixin(RetellState):
    """GET definitions (one, or a page per engine), LLMs and conversation flows (one, or pages)."""

    def _page_limit(self, query: dict[str, str]) -> int:
        """The items one list page holds: the validated `limit`, then `page_cap` if smaller."""
        limit = _query_limit(query)
        return limit if self.page_cap is None else min(limit, self.page_cap)

    def _engine_from_query(self, query: dict[str, str]) -> FakeEngine:
        raw_type = query.get("type")
        if raw_type is None:
            raise RetellStandInError(400, "type is required.")
        engine_type = _engine_type(raw_type, "type")
        id_key = ENGINE_ID_KEYS[engine_type]
        engine_id = query.get(id_key)
        if not engine_id:
            raise RetellStandInError(400, f"{id_key} is required when type is {engine_type}.")
        return self._require_engine(engine_type, engine_id)

    def _definition_json(self, definition: FakeDefinition) -> dict[str, Any]:
        return {
            "test_case_definition_id": definition.case_id,
            "name": definition.name,
            "response_engine": {
                "type": definition.engine_type,
                ENGINE_ID_KEYS[definition.engine_type]: definition.engine_id,
            },
            "type": "simulation",
            "user_prompt": (
                f"You are a customer calling about: {definition.name}. Stay in character, "
                "answer the agent's questions and hang up once your request is handled."
            ),
            "metrics": [
                "The agent understood the caller's request",
                "The agent resolved the request or escalated it correctly",
            ],
            "dynamic_variables": {},
            "tool_mocks": [],
            "llm_model": SIMULATION_MODEL,
            "creation_timestamp": definition.created_ms,
            "user_modified_timestamp": definition.created_ms,
        }

    def _engine_json(self, engine: FakeEngine, version: int | None = None) -> dict[str, Any]:
        """A Retell LLM or conversation flow (the main fields), as the list calls return it.

        With `version`, that version as a retrieve returns it: published once a later one exists.
        """
        body: dict[str, Any] = {
            ENGINE_ID_KEYS[engine.engine_type]: engine.engine_id,
            "version": engine.latest_version if version is None else version,
            "is_published": (
                engine.latest_version > 0 if version is None else version < engine.latest_version
            ),
            "last_modification_timestamp": engine.modified_ms,
        }
        if engine.engine_type == "retell-llm":
            body.update(model=SIMULATION_MODEL, general_prompt="You are a helpful agent.")
        else:
            body.update(model_choice={"type": "cascading", "model": SIMULATION_MODEL}, nodes=[])
        return body

    async def _list_test_case_definitions(self, request: web.Request) -> web.Response:
        query = dict(request.query)
        engine = self._engine_from_query(query)
        limit = self._page_limit(query)
        ids = engine.definition_ids
        scope = f"definitions:{engine.engine_id}"
        after = _decode_key(query.get("pagination_key"), scope, len(ids))
        start = 0 if after is None else after + 1
        stop = min(start + limit, len(ids))
        items = [self._definition_json(self._definitions[ids[i]]) for i in range(start, stop)]
        has_more = stop < len(ids)
        return _page(items, has_more, _encode_key(scope, stop - 1) if has_more else None)

    async def _list_engines(self, request: web.Request, engine_type: EngineType) -> web.Response:
        """GET /v2/list-retell-llms and /v2/list-conversation-flows: the account's engines."""
        query = dict(request.query)
        limit = self._page_limit(query)
        order = query.get("sort_order", "ascending")
        if order not in ("ascending", "descending"):
            raise RetellStandInError(400, "sort_order must be 'ascending' or 'descending'.")
        engines = [e for e in self._engines.values() if e.engine_type == engine_type]
        if order == "descending":
            engines.reverse()
        scope = f"engines:{engine_type}:{order}"
        after = _decode_key(query.get("pagination_key"), scope, len(engines))
        start = 0 if after is None else after + 1
        stop = min(start + limit, len(engines))
        items = [self._engine_json(engines[i]) for i in range(start, stop)]
        has_more = stop < len(engines)
        return _page(items, has_more, _encode_key(scope, stop - 1) if has_more else None)

    async def _list_retell_llms(self, request: web.Request) -> web.Response:
        return await self._list_engines(request, "retell-llm")

    async def _list_conversation_flows(self, request: web.Request) -> web.Response:
        return await self._list_engines(request, "conversation-flow")

    async def _get_engine(self, request: web.Request, engine_type: EngineType) -> web.Response:
        """GET /get-retell-llm/{id} and /get-conversation-flow/{id}: one version, or the latest."""
        engine = self._require_engine(engine_type, request.match_info["engine_id"])
        version = self._resolve_version(engine, _query_version(dict(request.query)))
        return web.json_response(self._engine_json(engine, version))

    async def _get_retell_llm(self, request: web.Request) -> web.Response:
        return await self._get_engine(request, "retell-llm")

    async def _get_conversation_flow(self, request: web.Request) -> web.Response:
        return await self._get_engine(request, "conversation-flow")

    async def _get_test_case_definition(self, request: web.Request) -> web.Response:
        case_id = request.match_info["definition_id"]
        definition = self._definitions.get(case_id)
        if definition is None:
            raise RetellStandInError(404, f"Test case definition {case_id} not found.")
        return web.json_response(self._definition_json(definition))
