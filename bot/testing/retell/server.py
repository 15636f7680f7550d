"""`FakeRetell`: the mixins combined, served by aiohttp with auth, rules and recording.

The routes, the middleware that applies the rules and records every API request, and the
lifecycle (start, stop, `async with`) live here, on top of everything the mixins provide.
"""

from __future__ import annotations

import asyncio
from types import TracebackType
from typing import Any, Self

from aiohttp import web
from aiohttp.typedefs import Handler

from bot.testing.retell.agents import AgentsMixin
from bot.testing.retell.answers import _answer, _error
from bot.testing.retell.batches import BatchTestsMixin
from bot.testing.retell.control import ControlMixin
from bot.testing.retell.definitions import DefinitionsMixin
from bot.testing.retell.model import UNAUTHORIZED_MESSAGE, RecordedRequest
from bot.testing.retell.observation import ObservationMixin
from bot.testing.retell.parsing import _field, _json_object, _recorded_body
from bot.testing.retell.rules import RulesMixin, _take_rule, _without_end
from bot.testing.retell.seeding import SeedingMixin


class FakeRetell(
    ControlMixin,
    AgentsMixin,
    BatchTestsMixin,
    DefinitionsMixin,
    SeedingMixin,
    RulesMixin,
    ObservationMixin,
):
    """An in-memory Retell (batch tests, engines, agents) on a local port, seeded and steered."""

    # ----- lifecycle -------------------------------------------------------------------------

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> str:
        """Listen on `host:port` (0 picks a free port) and return the base URL."""
        if self._runner is not None:
            raise RuntimeError("FakeRetell is already running")
        runner = web.AppRunner(self._build_app(), access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, host, port)
        await site.start()
        self._runner = runner
        bound_port = runner.addresses[0][1]
        url_host = f"[{host}]" if ":" in host else host
        self._base_url = f"http://{url_host}:{bound_port}"
        return self._base_url

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
            self._base_url = None

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.stop()

    def add_account(self, api_key: str) -> FakeRetell:
        """Another Retell account on this server, reached with `api_key` only.

        Returned as a stand-in of its own to seed, steer and observe like this one (its
        requests, rules and batches are its own); its `base_url` is this server's. A batch
        created under one key is 404 under another, as at Retell.
        """
        if api_key == self.api_key or api_key in self._accounts:
            raise ValueError(f"an account with this key exists already: …{api_key[-4:]}")
        account = FakeRetell(
            api_key=api_key,
            clock=self._clock,
            batch_seconds=self.batch_seconds,
            time_scale=self.time_scale,
            page_cap=self.page_cap,
        )
        account._host = self
        self._accounts[api_key] = account
        return account

    def account(self, api_key: str) -> FakeRetell:
        """The account added with `api_key` (`add_account`); KeyError when there is none."""
        if api_key == self.api_key:
            return self
        account = self._accounts[api_key]
        assert isinstance(account, FakeRetell)
        return account

    @property
    def base_url(self) -> str:
        if self._host is not None:
            host = self._host
            assert isinstance(host, FakeRetell)
            return host.base_url
        if self._base_url is None:
            raise RuntimeError("FakeRetell is not started")
        return self._base_url

    # ----- plumbing --------------------------------------------------------------------------

    def _build_app(self) -> web.Application:
        @web.middleware
        async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
            return await self._middleware(request, handler)

        app = web.Application(middlewares=[middleware])
        app.router.add_post("/create-batch-test", self._create_batch_test)
        app.router.add_get("/get-batch-test/{batch_id}", self._get_batch_test)
        app.router.add_get("/v2/list-batch-tests", self._list_batch_tests)
        app.router.add_get("/v2/list-test-runs/{batch_id}", self._list_test_runs)
        app.router.add_get("/v2/list-test-case-definitions", self._list_test_case_definitions)
        app.router.add_get(
            "/get-test-case-definition/{definition_id}", self._get_test_case_definition
        )
        app.router.add_get("/get-test-run/{job_id}", self._get_test_run)
        app.router.add_get("/v2/list-retell-llms", self._list_retell_llms)
        app.router.add_get("/v2/list-conversation-flows", self._list_conversation_flows)
        app.router.add_get("/get-retell-llm/{engine_id}", self._get_retell_llm)
        app.router.add_get("/get-conversation-flow/{engine_id}", self._get_conversation_flow)
        app.router.add_post("/v2/list-agents", self._list_agents)
        app.router.add_get("/list-agent-versions/{agent_id}", self._list_agent_versions)
        app.router.add_get("/get-agent/{agent_id}", self._get_agent)
        app.router.add_post("/publish-agent-version/{agent_id}", self._publish_agent_version)
        app.router.add_get("/get-concurrency", self._get_concurrency)
        app.router.add_post("/_control/account", self._control_account)
        app.router.add_post("/_control/seed", self._control_seed)
        app.router.add_post("/_control/outcome", self._control_outcome)
        app.router.add_post("/_control/agent", self._control_agent)
        app.router.add_post("/_control/fail_next", self._control_fail_next)
        app.router.add_post("/_control/delay", self._control_delay)
        app.router.add_post("/_control/create_batch", self._control_create_batch)
        app.router.add_get("/_control/stats", self._control_stats)
        return app

    async def _middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        account = self._account_asked(request)
        if account is not None:
            # The same route, answered by the account's own stand-in.
            name = getattr(handler, "__name__", "")
            return await account._middleware(request, getattr(account, name, handler))
        if request.path.startswith("/_control/"):
            # Seeding helpers refuse bad input (an unknown engine, a duplicate id) this way.
            return await _answer(request, handler, refused=(KeyError, ValueError))
        arrived = self._clock()
        # The whole request is read before a delay rule is used up, so a test that waits for the
        # rule to be taken knows the request has arrived (and, with `answer_late`, is handled).
        body = await _recorded_body(request)
        delay = _take_rule(self._delays, request.path)
        if delay is not None and not delay.answer_late:
            await _held(request, delay.seconds)
            if request.transport is None or request.transport.is_closing():
                # Its client went away (timed out, or its process was killed) while the request
                # was held: like a request still in the network, it never reaches Retell.
                self.dropped.append(request.path)
                self._wake()
                return web.Response(status=499)
        endless = next((v for k, v in self._endless.items() if request.path.startswith(k)), None)
        asked_key = request.query.get("pagination_key")
        if endless is not None and asked_key is not None:
            query = {k: v for k, v in request.query.items() if k != "pagination_key"}
            request = request.clone(rel_url=request.rel_url.with_query(query))
        response = self._reject(request) or await _answer(request, handler)
        if endless is not None and isinstance(response, web.Response) and response.status == 200:
            response = _without_end(response, asked_key if endless else None, len(self.requests))
        self._record(request, body, response.status, arrived)
        if delay is not None and delay.answer_late:
            await asyncio.sleep(delay.seconds)
        return response

    def _account_asked(self, request: web.Request) -> FakeRetell | None:
        """The added account a request is for: its bearer key, or `?account=KEY` on a
        control endpoint. None for this stand-in's own (and for unknown keys: a 401 here)."""
        if self._host is not None:
            return None
        if request.path.startswith("/_control/"):
            key = request.query.get("account")
        else:
            scheme, _, token = request.headers.get("Authorization", "").partition(" ")
            key = token.strip() if scheme.lower() == "bearer" else None
        found = self._accounts.get(key) if key and key != self.api_key else None
        return found if isinstance(found, FakeRetell) else None

    async def _get_concurrency(self, request: web.Request) -> web.Response:
        """`GET /get-concurrency`: the org's concurrency, the cheapest authenticated call (the
        bot checks a key with it). Figures as in Retell's OpenAPI example."""
        return web.json_response(
            {
                "current_concurrency": 0,
                "concurrency_limit": 20,
                "base_concurrency": 20,
                "purchased_concurrency": 0,
                "concurrency_purchase_limit": 100,
                "remaining_purchase_limit": 100,
                "concurrency_burst_enabled": False,
                "concurrency_burst_limit": 0,
            }
        )

    async def _control_account(self, request: web.Request) -> web.Response:
        """`add_account` from `{"api_key": KEY}`; then `/_control/*?account=KEY` steers it."""
        body = await _json_object(request)
        self.add_account(_field(body, "api_key", str))
        return web.json_response({"ok": True})

    def _reject(self, request: web.Request) -> web.Response | None:
        """A 401 for a bad key, or an injected fault, before the real handler runs."""
        scheme, _, token = request.headers.get("Authorization", "").partition(" ")
        if scheme.lower() != "bearer" or token.strip() != self.api_key:
            return _error(401, UNAUTHORIZED_MESSAGE)
        fault = _take_rule(self._faults, request.path)
        if fault is None:
            return None
        headers = {} if fault.retry_after is None else {"Retry-After": f"{fault.retry_after:g}"}
        return _error(fault.status, fault.message, headers)

    def _record(self, request: web.Request, body: Any, status: int, arrived: float) -> None:
        self.requests.append(
            RecordedRequest(
                request.method, request.path, dict(request.query), body, status, arrived
            )
        )
        resource = request.match_info.route.resource
        route = resource.canonical if resource is not None else request.path
        self._requests_by_prefix[route.split("/{", 1)[0]] += 1
        self._requests_by_minute[int((arrived - self._clock_anchor) // 60)] += 1
        self._wake()


async def _held(request: web.Request, seconds: float) -> None:
    """Hold a request for `seconds`, or until its client goes away (a killed process), so
    that a long hold never outlives the test that set it."""
    deadline = asyncio.get_running_loop().time() + seconds
    while (left := deadline - asyncio.get_running_loop().time()) > 0:
        if request.transport is None or request.transport.is_closing():
            return
        await asyncio.sleep(min(left, 0.05))
