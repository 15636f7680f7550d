"""The `/_control/*` endpoints: seeding and steering a stand-in in another process.

Each is a thin JSON wrapper over a public method of the seeding, rules or observation mixin.
"""

from __future__ import annotations

from aiohttp import web

from bot.testing.retell.model import FakeAgentVersion, RetellStandInError
from bot.testing.retell.observation import ObservationMixin
from bot.testing.retell.parsing import (
    _engine_type,
    _field,
    _infer_engine_type,
    _integral,
    _json_object,
    _parse_response_engine,
)
from bot.testing.retell.rules import RulesMixin
from bot.testing.retell.seeding import SeedingMixin


class ControlMixin(SeedingMixin, RulesMixin, ObservationMixin):
    """Handlers of the control endpoints (no auth; for separate-process use)."""

    # ----- control handlers (no auth; for separate-process use) ------------------------------

    async def _control_seed(self, request: web.Request) -> web.Response:
        body = await _json_object(request)
        engine_id = _field(body, "engine_id", str)
        raw_type = body.get("engine_type")
        engine_type = (
            _engine_type(raw_type, "engine_type")
            if raw_type is not None
            else _infer_engine_type(engine_id)
        )
        if "versions" in body:
            self.add_engine(engine_type, engine_id, versions=_field(body, "versions", int))
        prefix = _field(body, "prefix", str) if "prefix" in body else "tc_"
        ids = self.seed(
            engine_id, _field(body, "count", int), prefix=prefix, engine_type=engine_type
        )
        return web.json_response({"ids": ids})

    async def _control_outcome(self, request: web.Request) -> web.Response:
        body = await _json_object(request)
        status = body.get("status")
        if status not in ("pass", "fail", "error"):
            raise RetellStandInError(400, "status must be pass, fail or error.")
        explanation = body.get("explanation")
        self.set_outcome(
            _field(body, "case_id", str),
            status,
            explanation if isinstance(explanation, str) else None,
            version=_integral(body.get("version"), "version"),
        )
        return web.json_response({"ok": True})

    async def _control_agent(self, request: web.Request) -> web.Response:
        """`add_agent` from `{"agent_id", "name", "versions": [...]}`.

        Version i of the agent is item i, `{"response_engine": {..., "version": N},
        "is_published": bool}`: the engine version it answers with, as Retell shows it.
        """
        body = await _json_object(request)
        raw_versions = body.get("versions")
        if not isinstance(raw_versions, list) or not all(
            isinstance(item, dict) for item in raw_versions
        ):
            raise RetellStandInError(400, "versions must be an array of objects.")
        versions: list[FakeAgentVersion] = []
        for item in raw_versions:
            engine_type, engine_id, version = _parse_response_engine(item.get("response_engine"))
            if version is None:
                raise RetellStandInError(400, "response_engine.version is required.")
            published = item.get("is_published") is True
            versions.append(FakeAgentVersion(engine_type, engine_id, version, published))
        self.add_agent(_field(body, "agent_id", str), _field(body, "name", str), versions)
        return web.json_response({"ok": True})

    async def _control_fail_next(self, request: web.Request) -> web.Response:
        body = await _json_object(request)
        retry_after = body.get("retry_after")
        message = body.get("message")
        self.fail_next(
            _field(body, "path_prefix", str),
            _field(body, "status", int),
            times=_field(body, "times", int) if "times" in body else 1,
            retry_after=float(retry_after) if isinstance(retry_after, int | float) else None,
            message=message if isinstance(message, str) else None,
        )
        return web.json_response({"ok": True})

    async def _control_delay(self, request: web.Request) -> web.Response:
        body = await _json_object(request)
        times = body.get("times")
        self.delay(
            _field(body, "path_prefix", str),
            _field(body, "seconds", float),
            times=times if isinstance(times, int) else None,
            answer_late=body.get("answer_late") is True,
        )
        return web.json_response({"ok": True})

    async def _control_create_batch(self, request: web.Request) -> web.Response:
        body = await _json_object(request)
        duration = body.get("duration")
        batch = self._create_batch(
            body.get("response_engine"),
            body.get("test_case_definition_ids"),
            duration=float(duration) if isinstance(duration, int | float) else None,
        )
        return web.json_response({"test_case_batch_job_id": batch.batch_id})

    async def _control_stats(self, request: web.Request) -> web.Response:
        return web.json_response(self.stats())
