"""The API's batch tests and their test runs: create, get and list.

A test run carries its definition's snapshot and the lists share the engine query and page
limit, so this builds on the definitions handlers; creation is the seeding mixin's.
"""

from __future__ import annotations

import contextlib
from typing import Any

from aiohttp import web

from bot.testing.retell.answers import _page
from bot.testing.retell.definitions import DefinitionsMixin
from bot.testing.retell.model import (
    BATCH_HEX_LENGTH,
    BATCH_ID_PREFIX,
    JOB_ID_PREFIX,
    JOB_INDEX_HEX_LENGTH,
    FakeBatch,
    RetellStandInError,
)
from bot.testing.retell.parsing import _decode_key, _encode_key, _json_object, _query_version
from bot.testing.retell.seeding import SeedingMixin


class BatchTestsMixin(DefinitionsMixin, SeedingMixin):
    """POST /create-batch-test, GET one batch test or test run, pages of either."""

    def _find_batch(self, batch_id: str) -> FakeBatch:
        batch = self.batches.get(batch_id)
        if batch is None:
            raise RetellStandInError(404, f"Batch test {batch_id} not found.")
        return batch

    def _find_run(self, job_id: str) -> tuple[FakeBatch, int]:
        suffix = job_id.removeprefix(JOB_ID_PREFIX)
        batch_hex, index_hex = suffix[:BATCH_HEX_LENGTH], suffix[BATCH_HEX_LENGTH:]
        batch = self.batches.get(BATCH_ID_PREFIX + batch_hex)
        if batch is not None and len(index_hex) == JOB_INDEX_HEX_LENGTH:
            with contextlib.suppress(ValueError):
                index = int(index_hex, 16)
                if index < batch.total:
                    return batch, index
        raise RetellStandInError(404, f"Test run {job_id} not found.")

    # ----- JSON shapes -----------------------------------------------------------------------

    def _batch_json(self, batch: FakeBatch, now: float) -> dict[str, Any]:
        progress = batch.progress(now)
        return {
            "test_case_batch_job_id": batch.batch_id,
            "status": progress.status,
            "response_engine": dict(batch.response_engine),
            "pass_count": progress.passed,
            "fail_count": progress.failed,
            "error_count": progress.errored,
            "total_count": progress.total,
            "creation_timestamp": batch.created_ms,
            "user_modified_timestamp": batch.wall_ms(progress.modified_at),
        }

    def _run_json(self, batch: FakeBatch, index: int, completed: int) -> dict[str, Any]:
        case_id = batch.case_ids[index]
        done = index < completed
        return {
            "test_case_job_id": batch.job_id(index),
            "status": batch.run_status(index, completed),
            "test_case_definition_id": case_id,
            "test_case_definition_snapshot": self._definition_json(self._definitions[case_id]),
            "result_explanation": batch.explanations.get(index) if done else None,
            "creation_timestamp": batch.created_ms,
            "user_modified_timestamp": batch.wall_ms(batch.run_changed_at(index, completed)),
            "transcript_snapshot": None,
        }

    # ----- API handlers ----------------------------------------------------------------------

    async def _create_batch_test(self, request: web.Request) -> web.Response:
        body = await _json_object(request)
        if "response_engine" not in body:
            raise RetellStandInError(400, "response_engine is required.")
        if "test_case_definition_ids" not in body:
            raise RetellStandInError(400, "test_case_definition_ids is required.")
        batch = self._create_batch(
            body["response_engine"], body["test_case_definition_ids"], duration=None
        )
        return web.json_response(self._batch_json(batch, self._clock()), status=201)

    async def _get_batch_test(self, request: web.Request) -> web.Response:
        batch = self._find_batch(request.match_info["batch_id"])
        return web.json_response(self._batch_json(batch, self._clock()))

    async def _list_batch_tests(self, request: web.Request) -> web.Response:
        query = dict(request.query)
        engine = self._engine_from_query(query)
        version = self._resolve_version(engine, _query_version(query))
        limit = self._page_limit(query)
        batches = self._batches_by_version.get((engine.engine_id, version), [])
        scope = f"batches:{engine.engine_id}:{version}"
        after = _decode_key(query.get("pagination_key"), scope, len(batches))
        start = len(batches) - 1 if after is None else after - 1  # newest first
        stop = max(start - limit, -1)
        now = self._clock()
        items = [self._batch_json(batches[i], now) for i in range(start, stop, -1)]
        has_more = stop >= 0
        return _page(items, has_more, _encode_key(scope, stop + 1) if has_more else None)

    async def _list_test_runs(self, request: web.Request) -> web.Response:
        batch = self._find_batch(request.match_info["batch_id"])
        query = dict(request.query)
        limit = self._page_limit(query)
        scope = f"runs:{batch.batch_id}"
        after = _decode_key(query.get("pagination_key"), scope, batch.total)
        start = 0 if after is None else after + 1
        stop = min(start + limit, batch.total)
        completed = batch.completed(self._clock())
        items = [self._run_json(batch, i, completed) for i in range(start, stop)]
        has_more = stop < batch.total
        return _page(items, has_more, _encode_key(scope, stop - 1) if has_more else None)

    async def _get_test_run(self, request: web.Request) -> web.Response:
        batch, index = self._find_run(request.match_info["job_id"])
        completed = batch.completed(self._clock())
        return web.json_response(self._run_json(batch, index, completed))
