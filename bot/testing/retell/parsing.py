"""Reading requests: bodies, query parameters and pagination keys, validated as Retell does.

Module-level functions with no state, shared by the API and control handlers; a bad value
raises `RetellStandInError` with the answer Retell would give.
"""

from __future__ import annotations

import base64
import contextlib
import json
import math
from typing import Any, TypeVar

from aiohttp import web

from bot.testing.retell.model import (
    DEFAULT_PAGE_SIZE,
    ENGINE_ID_KEYS,
    MAX_CASES_PER_BATCH,
    MAX_PAGE_SIZE,
    EngineType,
    RetellStandInError,
)

_T = TypeVar("_T")


def _infer_engine_type(engine_id: str) -> EngineType:
    return "conversation-flow" if engine_id.startswith("conversation_flow_") else "retell-llm"


def _engine_type(value: object, name: str) -> EngineType:
    if value == "retell-llm":
        return "retell-llm"
    if value == "conversation-flow":
        return "conversation-flow"
    if value == "custom-llm":
        raise RetellStandInError(400, "Custom LLM is not supported")
    raise RetellStandInError(400, f"{name} must be 'retell-llm' or 'conversation-flow'.")


def _integral(value: object, name: str) -> int | None:
    """An optional non-negative integer; integral floats (3.0, as the SDK may send) count."""
    if value is None:
        return None
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise RetellStandInError(400, f"{name} must be a non-negative integer.")
    return value


def _parse_response_engine(value: object) -> tuple[EngineType, str, int | None]:
    if not isinstance(value, dict):
        raise RetellStandInError(400, "response_engine must be an object.")
    engine_type = _engine_type(value.get("type"), "response_engine.type")
    id_key = ENGINE_ID_KEYS[engine_type]
    engine_id = value.get(id_key)
    if not isinstance(engine_id, str) or not engine_id:
        raise RetellStandInError(
            400, f"response_engine.{id_key} is required when type is {engine_type}."
        )
    return engine_type, engine_id, _integral(value.get("version"), "response_engine.version")


def _parse_case_ids(value: object) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(item, str) and item for item in value):
        raise RetellStandInError(
            400, "test_case_definition_ids must be an array of non-empty strings."
        )
    if not 1 <= len(value) <= MAX_CASES_PER_BATCH:
        raise RetellStandInError(
            422,
            f"test_case_definition_ids must contain between 1 and {MAX_CASES_PER_BATCH} ids "
            f"(got {len(value)}).",
        )
    return list(value)


def _id_list(ids: list[str], shown: int = 10) -> str:
    text = ", ".join(ids[:shown])
    return f"{text} and {len(ids) - shown} more" if len(ids) > shown else text


def _query_int(query: dict[str, str], name: str) -> int | None:
    raw = query.get(name)
    if raw is None:
        return None
    try:
        number = float(raw)
    except ValueError:
        number = math.nan
    if not number.is_integer():
        raise RetellStandInError(400, f"{name} must be an integer.")
    return int(number)


def _query_limit(query: dict[str, str]) -> int:
    limit = _query_int(query, "limit")
    if limit is None:
        return DEFAULT_PAGE_SIZE
    if not 1 <= limit <= MAX_PAGE_SIZE:
        raise RetellStandInError(400, f"limit must be between 1 and {MAX_PAGE_SIZE}.")
    return limit


def _query_version(query: dict[str, str]) -> int | None:
    version = _query_int(query, "version")
    if version is not None and version < 0:
        raise RetellStandInError(400, "version must be a non-negative integer.")
    return version


def _encode_key(scope: str, position: int) -> str:
    """An opaque pagination key: where the previous page ended, bound to one listing."""
    return base64.urlsafe_b64encode(f"{scope}|{position}".encode()).decode().rstrip("=")


def _decode_key(key: str | None, scope: str, size: int) -> int | None:
    if key is None:
        return None
    with contextlib.suppress(ValueError):
        text = base64.urlsafe_b64decode(key + "=" * (-len(key) % 4)).decode()
        found_scope, _, position = text.rpartition("|")
        if found_scope == scope and 0 <= int(position) < size:
            return int(position)
    raise RetellStandInError(400, "Invalid pagination_key.")


async def _recorded_body(request: web.Request) -> Any:
    if not request.body_exists:
        return None
    text = await request.text()
    try:
        return json.loads(text)
    except ValueError:
        return text


async def _json_object(request: web.Request) -> dict[str, Any]:
    try:
        body = json.loads(await request.text())
    except ValueError:
        raise RetellStandInError(400, "Request body must be valid JSON.") from None
    if not isinstance(body, dict):
        raise RetellStandInError(400, "Request body must be a JSON object.")
    return body


def _field(body: dict[str, Any], name: str, kind: type[_T]) -> _T:
    value = body.get(name)
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if not isinstance(value, kind) or isinstance(value, bool):
        raise RetellStandInError(400, f"{name} must be a {kind.__name__}.")
    return value
