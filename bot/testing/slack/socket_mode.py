"""Socket Mode: apps.connections.open, the websocket, envelopes out and acks back."""

from __future__ import annotations

import asyncio
import json
import time
import uuid

import aiohttp
from aiohttp import WSMsgType, web

from bot.testing.slack.observation import ObservationMixin
from bot.testing.slack.records import (
    ApiCall,
    JSONDict,
)


class SocketModeMixin(ObservationMixin):
    """Hands a Socket Mode client its websocket and delivers envelopes it must ack."""

    @property
    def socket_connected(self) -> bool:
        """True while a Socket Mode client holds the websocket."""
        return any(not ws.closed for ws in self._sockets)

    async def wait_socket_connected(self, timeout: float = 5.0) -> None:
        """Wait until a Socket Mode client has connected."""
        await self.wait_for(lambda: self.socket_connected, timeout)

    async def socket_send(
        self,
        envelope_type: str,
        payload: JSONDict,
        *,
        timeout: float = 5.0,
        accepts_response_payload: bool = True,
    ) -> JSONDict:
        """Deliver an envelope to the connected Socket Mode client and return its ack.

        `envelope_type` is "slash_commands", "interactive" or "events_api"; for slash commands
        `payload` is the command's fields as a dict (see `slash_command_payload`).
        """
        await self.wait_for(lambda: self.socket_connected, timeout)
        socket = next(ws for ws in reversed(self._sockets) if not ws.closed)
        envelope_id = str(uuid.uuid4())
        envelope = {
            "envelope_id": envelope_id,
            "type": envelope_type,
            "payload": payload,
            "accepts_response_payload": accepts_response_payload,
            "retry_attempt": 0,
            "retry_reason": "",
        }
        ack: asyncio.Future[JSONDict] = asyncio.get_running_loop().create_future()
        self._pending_acks[envelope_id] = ack
        self.socket_envelopes.append(envelope)
        try:
            await socket.send_json(envelope)
            async with asyncio.timeout(timeout):
                return await ack
        except TimeoutError:
            raise TimeoutError(
                f"no ack for {envelope_type} envelope {envelope_id} within {timeout}s"
            ) from None
        finally:
            self._pending_acks.pop(envelope_id, None)

    def _apps_connections_open(self, _params: JSONDict) -> JSONDict:
        ticket = uuid.uuid4()
        return {"url": f"{self.socket_url}?ticket={ticket}&app_id={self.app_id}"}

    async def _handle_socket(self, request: web.Request) -> web.StreamResponse:
        socket = web.WebSocketResponse(autoping=True)
        await socket.prepare(request)
        self._sockets.append(socket)
        self.calls.append(ApiCall("socket_mode", dict(request.query), True, time.time()))
        await socket.send_json(
            {
                "type": "hello",
                "num_connections": sum(1 for ws in self._sockets if not ws.closed),
                "debug_info": {
                    "host": "fake-slack",
                    "build_number": 1,
                    "approximate_connection_time": 18060,
                },
                "connection_info": {"app_id": self.app_id},
            }
        )
        await self._notify()
        try:
            async for frame in socket:
                if frame.type == WSMsgType.TEXT:
                    await self._receive_ack(frame.data)
        finally:
            self._sockets.remove(socket)
            if not self.socket_connected:
                self._fail_pending_acks("the Socket Mode client disconnected before acking")
        return socket

    def _fail_pending_acks(self, reason: str) -> None:
        """Let socket_send fail fast instead of waiting out its timeout."""
        for pending in self._pending_acks.values():
            if not pending.done():
                pending.set_exception(ConnectionError(reason))

    async def _receive_ack(self, raw: str) -> None:
        try:
            ack = json.loads(raw)
        except json.JSONDecodeError:
            return
        if not isinstance(ack, dict) or "envelope_id" not in ack:
            return
        self.socket_acks.append(ack)
        pending = self._pending_acks.get(ack["envelope_id"])
        if pending is not None and not pending.done():
            pending.set_result(ack)
        await self._notify()

    async def _close_sockets(self, _app: web.Application) -> None:
        for ws in list(self._sockets):
            await ws.close(code=aiohttp.WSCloseCode.GOING_AWAY, message=b"server shutdown")
