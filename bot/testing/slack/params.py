"""Reading a Web API request's parameters the way Slack does: query, form or JSON, and the token."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from aiohttp import web

from bot.testing.slack.records import JSONDict, SlackApiFailure


async def read_params(request: web.Request) -> tuple[JSONDict, str | None]:
    """Merge query, form and JSON parameters as Slack does; return them and the token.

    slack_sdk sends methods with blocks as JSON bodies, others as query parameters, and the
    token in ``Authorization: Bearer``; older clients put ``token`` in the form.
    """
    params: JSONDict = dict(request.query)
    if request.can_read_body:
        if request.content_type == "application/json":
            try:
                body = await request.json()
            except json.JSONDecodeError as error:
                raise SlackApiFailure("invalid_json", str(error)) from error
            if not isinstance(body, dict):
                raise SlackApiFailure("invalid_json", "body must be a JSON object")
            params.update(body)
        elif request.content_type in {"application/x-www-form-urlencoded", "multipart/form-data"}:
            form = await request.post()
            for key, value in form.items():
                params[key] = value.file.read() if isinstance(value, web.FileField) else value
    token = params.pop("token", None)
    authorization = request.headers.get("Authorization", "")
    if authorization.startswith("Bearer "):
        token = authorization.removeprefix("Bearer ").strip()
    return params, token if isinstance(token, str) else None


def param_str(params: Mapping[str, Any], name: str) -> str | None:
    value = params.get(name)
    if value is None:
        return None
    return value if isinstance(value, str) else str(value)


def param_json(params: Mapping[str, Any], name: str, default: Any) -> Any:
    """Form bodies carry JSON fields (blocks, view, files) as strings; JSON bodies as values."""
    value = params.get(name)
    if value is None or value == "":
        return default
    if isinstance(value, str):
        try:
            return json.loads(value)
        except json.JSONDecodeError as error:
            raise SlackApiFailure(f"invalid_{name}_format", f"{name}: {error}") from error
    return value


def param_blocks(params: Mapping[str, Any]) -> list[JSONDict]:
    blocks = param_json(params, "blocks", [])
    if not isinstance(blocks, list):
        raise SlackApiFailure("invalid_blocks_format", "blocks: must be a list")
    return blocks


def param_bool(params: Mapping[str, Any], name: str) -> bool:
    value = params.get(name)
    if isinstance(value, str):
        return value.lower() in {"1", "true"}
    return bool(value)
