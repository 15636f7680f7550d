"""The API's agents: list them and their versions, get one version, publish one.

Agents are what the bot publishes after a green run, so only what that needs is modelled:
a name, versions 0..n, each version's response engine and whether it is published.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from aiohttp import web

from bot.testing.retell.answers import _page
from bot.testing.retell.definitions import DefinitionsMixin
from bot.testing.retell.model import AGENT_VOICE, FakeAgent, RetellStandInError
from bot.testing.retell.parsing import (
    _decode_key,
    _encode_key,
    _integral,
    _json_object,
    _query_version,
)


class AgentsMixin(DefinitionsMixin):
    """POST /v2/list-agents, GET agent versions or one agent, POST publish-agent-version."""

    def _find_agent(self, agent_id: str) -> FakeAgent:
        agent = self._agents.get(agent_id)
        if agent is None:
            raise RetellStandInError(404, f"Agent {agent_id} not found.")
        return agent

    @staticmethod
    def _agent_version(agent: FakeAgent, version: int | None) -> int:
        if version is None:
            return agent.latest_version
        if version > agent.latest_version:
            raise RetellStandInError(
                404,
                f"Version {version} of agent {agent.agent_id} not found "
                f"(latest is {agent.latest_version}).",
            )
        return version

    def _ordered_page(
        self, query: dict[str, str], scope: str, size: int
    ) -> tuple[list[int], bool, str | None]:
        """The positions one page of an ascending (or `sort_order=descending`) list holds."""
        limit = self._page_limit(query)
        order = query.get("sort_order", "ascending")
        if order not in ("ascending", "descending"):
            raise RetellStandInError(400, "sort_order must be 'ascending' or 'descending'.")
        scope = f"{scope}:{order}"
        after = _decode_key(query.get("pagination_key"), scope, size)
        start = 0 if after is None else after + 1
        stop = min(start + limit, size)
        positions = list(range(start, stop))
        if order == "descending":
            positions = [size - 1 - position for position in positions]
        has_more = stop < size
        return positions, has_more, _encode_key(scope, stop - 1) if has_more else None

    # ----- JSON shapes -----------------------------------------------------------------------

    def _agent_item_json(self, agent: FakeAgent) -> dict[str, Any]:
        """An agent as list-agents returns it: no response engine (that is per version)."""
        return {
            "agent_id": agent.agent_id,
            "agent_name": agent.name,
            "channel": "voice",
            "is_suspended": False,
            "is_transfer_agent": False,
            "tags": {},
            "user_modified_timestamp": agent.modified_ms,
        }

    def _agent_json(self, agent: FakeAgent, version: int) -> dict[str, Any]:
        held = agent.versions[version]
        return {
            "agent_id": agent.agent_id,
            "agent_name": agent.name,
            "version": version,
            "is_published": held.published,
            "response_engine": held.response_engine,
            "voice_id": AGENT_VOICE,
            "channel": "voice",
            "last_modification_timestamp": agent.modified_ms,
        }

    # ----- API handlers ----------------------------------------------------------------------

    async def _list_agents(self, request: web.Request) -> web.Response:
        agents = list(self._agents.values())
        positions, has_more, key = self._ordered_page(dict(request.query), "agents", len(agents))
        return _page([self._agent_item_json(agents[i]) for i in positions], has_more, key)

    async def _list_agent_versions(self, request: web.Request) -> web.Response:
        agent = self._find_agent(request.match_info["agent_id"])
        positions, has_more, key = self._ordered_page(
            dict(request.query), f"agent-versions:{agent.agent_id}", len(agent.versions)
        )
        items = [
            {
                "version": i,
                "is_published": agent.versions[i].published,
                "last_modification_timestamp": agent.modified_ms,
            }
            for i in positions
        ]
        return _page(items, has_more, key)

    async def _get_agent(self, request: web.Request) -> web.Response:
        agent = self._find_agent(request.match_info["agent_id"])
        version = self._agent_version(agent, _query_version(dict(request.query)))
        return web.json_response(self._agent_json(agent, version))

    async def _publish_agent_version(self, request: web.Request) -> web.Response:
        """Publish one version in place; like Retell, an already published one is accepted."""
        agent = self._find_agent(request.match_info["agent_id"])
        body = await _json_object(request)
        version = _integral(body.get("version"), "version")
        if version is None:
            raise RetellStandInError(400, "version is required.")
        self._agent_version(agent, version)
        agent.versions[version] = dataclasses.replace(agent.versions[version], published=True)
        agent.modified_ms = self._wall_ms()
        self.publishes.append((agent.agent_id, version))
        return web.Response(status=200)
