"""Writing answers: list pages and Retell's JSON error body, and the handler guard using it.

Shared by the API handlers (pages), the fault rules and the middleware (errors).
"""

from __future__ import annotations

import logging
from typing import Any

from aiohttp import web
from aiohttp.typedefs import Handler

from bot.testing.retell.model import RetellStandInError

# The package's name, the logger the single module used before it became a package.
log = logging.getLogger("bot.testing.retell")


def _page(items: list[dict[str, Any]], has_more: bool, key: str | None) -> web.Response:
    return web.json_response({"items": items, "has_more": has_more, "pagination_key": key})


def _error(status: int, message: str, headers: dict[str, str] | None = None) -> web.Response:
    return web.json_response(
        {"status": "error", "message": message}, status=status, headers=headers
    )


async def _answer(
    request: web.Request, handler: Handler, *, refused: tuple[type[Exception], ...] = ()
) -> web.StreamResponse:
    """Run a handler, turning every failure into Retell's JSON error body (`refused`: 400)."""
    try:
        return await handler(request)
    except RetellStandInError as exc:
        return _error(exc.status, exc.message)
    except web.HTTPException as exc:
        return _error(exc.status, exc.reason)
    except refused as exc:
        return _error(400, str(exc))
    except Exception:
        log.exception("stand-in handler failed: %s %s", request.method, request.path)
        return _error(500, "Internal server error.")
