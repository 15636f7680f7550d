"""The Retell gateway: every call to Retell goes through here, over the official `AsyncRetell`.

The SDK already retries 408/409/429/5xx and connection errors with backoff that honours
`Retry-After`; this module adds only what the product needs on top: Retell's objects mapped to the
bot's own (`BatchJob`, `TestRun`, `CaseDefinition`), pagination walked to the end, and every
failure turned into a `RetellProblem` whose text a Slack user can act on.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Literal

import httpx
import retell
from retell import AsyncRetell, DefaultAsyncHttpxClient, omit

# The SDK-free types, re-exported: `from bot.retell import BatchJob` goes on working.
from bot.batches import BatchJob as BatchJob
from bot.batches import BatchStatus as BatchStatus
from bot.batches import CaseDefinition as CaseDefinition
from bot.batches import ProblemKind as ProblemKind
from bot.batches import RetellProblem as RetellProblem
from bot.batches import TestRun as TestRun
from bot.batches import TestRunStatus as TestRunStatus
from bot.metrics import Metrics
from bot.suite import Engine, Suite
from bot.text import one_line

log = logging.getLogger(__name__)

MAX_RETRY_AFTER_SECONDS = 30.0

LIST_PAGE_SIZE = 1000  # Retell's documented maximum for the /v2/list-* calls
SMALLEST_PAGE = 50  # Retell's default page size: a list reads as many pages as this allows
MAX_TEST_RUNS = 1000  # a batch holds at most 1,000 test case definitions, one run each
MAX_DEFINITIONS = 10_000  # far beyond any real engine's suite; `run … all` takes 1,000


def retell_said(exc: retell.APIStatusError) -> str:
    body = exc.body
    if isinstance(body, dict):
        text = body.get("message") or body.get("error_message") or body.get("error")
        if isinstance(text, str) and text.strip():
            return text.strip()[:300]
    return ""


def explain(exc: Exception, *, what: str) -> RetellProblem:
    """Translate an SDK exception into a `RetellProblem` (`what` names the call, e.g. 'create')."""
    if isinstance(exc, RetellProblem):
        return exc
    if isinstance(exc, retell.APIStatusError):
        detail = retell_said(exc)
        suffix = f" Retell said: “{detail}”" if detail else ""
        code = exc.status_code
        if code == 401:
            return RetellProblem(
                "unauthorized",
                "Retell rejected the API key (401). Ask the bot's admin to check RETELL_API_KEY.",
                code,
            )
        if code == 402:
            return RetellProblem(
                "payment",
                "Retell refused for billing reasons (402): the account may be out of credits."
                + suffix,
                code,
            )
        if code == 404:
            return RetellProblem(
                "not_found",
                f"Retell could not find the {what} (404): check the engine id, its version "
                f"and the test case ids.{suffix}",
                code,
            )
        if code in (400, 422):
            return RetellProblem(
                "invalid", f"Retell refused the request as invalid ({code}).{suffix}", code
            )
        if code == 429:
            return RetellProblem(
                "rate_limited",
                "Retell is rate limiting this account (429) and kept doing so after retries. "
                "Try again in a minute.",
                code,
            )
        if code >= 500:
            return RetellProblem(
                "unavailable",
                f"Retell is having trouble ({code}). Try again in a few minutes.",
                code,
                uncertain=code != 503,
            )
        return RetellProblem("unexpected", f"Retell answered {code}.{suffix}", code)
    if isinstance(exc, retell.APITimeoutError | httpx.TimeoutException):
        return RetellProblem(
            "unavailable",
            "Retell did not answer in time. Try again soon.",
            uncertain=True,
        )
    if isinstance(exc, retell.APIConnectionError | httpx.TransportError):
        return RetellProblem(
            "unavailable",
            "Could not reach Retell, even after retries. Try again soon.",
            uncertain=True,
        )
    return RetellProblem("unexpected", f"Unexpected error talking to Retell: {type(exc).__name__}")


def _nothing_created(exc: Exception) -> bool:
    """Whether a failed create certainly created nothing at Retell (so it may be retried)."""
    if isinstance(exc, retell.APIStatusError):
        return exc.status_code in (429, 503)
    if isinstance(exc, retell.APIConnectionError) and not isinstance(exc, retell.APITimeoutError):
        return isinstance(exc.__cause__, httpx.ConnectError)  # the request was never sent
    return False


def _retry_delay(exc: Exception, attempt: int) -> float:
    """Retell's `Retry-After` when it gave one (capped), else an exponential back-off."""
    response = getattr(exc, "response", None)
    header = response.headers.get("retry-after") if response is not None else None
    try:
        return min(max(float(str(header)), 0.0), MAX_RETRY_AFTER_SECONDS)
    except (TypeError, ValueError):
        backoff: float = min(0.5 * 2**attempt, MAX_RETRY_AFTER_SECONDS)
        return backoff * random.uniform(0.75, 1.0)


def _batch(data: Any) -> BatchJob:
    engine = data.response_engine
    return BatchJob(
        batch_id=data.test_case_batch_job_id,
        engine=Engine.from_response_engine(engine.model_dump()),
        status=data.status,
        passed=data.pass_count,
        failed=data.fail_count,
        errored=data.error_count,
        total=data.total_count,
        created_ms=data.creation_timestamp,
        modified_ms=data.user_modified_timestamp,
    )


TEST_RUN_STATUSES: tuple[TestRunStatus, ...] = ("pending", "in_progress", "pass", "fail", "error")


def _test_runs_page(body: object) -> tuple[list[TestRun], bool, object]:
    """A `list-test-runs` page as read raw: its test runs, `has_more` and the key offered."""
    if not isinstance(body, dict) or not isinstance(body.get("items"), list):
        raise ValueError("a list-test-runs page without items")
    runs = [_test_run(item) for item in body["items"]]
    return runs, bool(body.get("has_more")), body.get("pagination_key")


def _test_run(item: object) -> TestRun:
    if not isinstance(item, dict):
        raise ValueError("a test run that is not an object")
    case_id = str(item["test_case_definition_id"])
    snapshot = item.get("test_case_definition_snapshot")
    name = snapshot.get("name") if isinstance(snapshot, dict) else None
    status = item.get("status")
    explanation = item.get("result_explanation")
    return TestRun(
        job_id=str(item.get("test_case_job_id", "")),
        case_id=case_id,
        name=one_line(name) if isinstance(name, str) and one_line(name) else case_id,
        status=status if status in TEST_RUN_STATUSES else "pending",
        explanation=explanation if isinstance(explanation, str) else None,
    )


class PageWalk:
    """Follows `pagination_key`s only as far as the data can reach.

    A listing that keeps answering `has_more` (with new keys, or the same one) once made one
    Show failures press send 4,734 requests in 20 s. A walk ends with a `RetellProblem` on a
    repeated key, on more items than the data can hold, or on more pages than that many
    items fill at Retell's default page size.
    """

    def __init__(self, what: str, max_items: int) -> None:
        self._what = what
        self._max_items = max_items
        self._max_pages = -(-max_items // SMALLEST_PAGE) + 1
        self._keys: set[str] = set()
        self._items = 0
        self._pages = 0

    def next_key(self, items: int, has_more: object, key: object) -> str | None:
        """The key of the page to read next, None when this was the last one."""
        self._items += items
        self._pages += 1
        if not has_more or not isinstance(key, str) or not key:
            return None
        if key in self._keys:
            raise self._endless(f"offered page {self._pages + 1} under a key it had given before")
        if self._items > self._max_items:
            raise self._endless(f"listed {self._items:,}, more than it can hold")
        if self._pages >= self._max_pages:
            raise self._endless(f"still had more after {self._pages} pages")
        self._keys.add(key)
        return key

    def _endless(self, why: str) -> RetellProblem:
        log.warning("Retell's list of %s %s; stopped reading it", self._what, why)
        return RetellProblem(
            "unexpected",
            f"Retell's list of {self._what} never ended (it {why}), so the bot stopped reading "
            f"it. Try again in a while; if this persists, Retell's listing is misbehaving.",
        )


KeyCheck = Literal["good", "refused", "unavailable"]


def sdk_client(
    *,
    api_key: str,
    base_url: str,
    timeout: float = 30.0,
    max_retries: int = 4,
    metrics: Metrics | None = None,
) -> AsyncRetell:
    """The SDK client every gateway (and every workspace's account) is made from."""
    hooks = {"response": [metrics.count_retell_response]} if metrics is not None else {}
    return AsyncRetell(
        api_key=api_key,
        base_url=base_url,
        timeout=timeout,
        max_retries=max_retries,
        http_client=DefaultAsyncHttpxClient(event_hooks=hooks),
    )


Account = Callable[[], Awaitable[AsyncRetell]]


class RetellGateway:
    """The bot's only door to Retell.

    `client` is the account's SDK client, or (for a workspace's account, `bot.workspaces`)
    a coroutine function finding it at each call: which key is in force can change while
    the gateway is held, and finding none raises the `RetellProblem` that says how to connect.
    """

    def __init__(
        self,
        client: AsyncRetell | Account,
        *,
        metrics: Metrics | None = None,
        create_retries: int = 4,
    ) -> None:
        self._fixed = client if isinstance(client, AsyncRetell) else None
        self._find = None if isinstance(client, AsyncRetell) else client
        self._metrics = metrics
        self._create_retries = create_retries

    @classmethod
    def connect(
        cls,
        *,
        api_key: str,
        base_url: str,
        timeout: float = 30.0,
        max_retries: int = 4,
        metrics: Metrics | None = None,
    ) -> RetellGateway:
        client = sdk_client(
            api_key=api_key,
            base_url=base_url,
            timeout=timeout,
            max_retries=max_retries,
            metrics=metrics,
        )
        return cls(client, metrics=metrics, create_retries=max_retries)

    def problem(self, exc: Exception, *, what: str) -> RetellProblem:
        """`explain`, counted in the metrics; `bot.agents` maps its errors with it too."""
        problem = explain(exc, what=what)
        if self._metrics is not None:
            self._metrics.retell_errors.labels(problem.kind).inc()
        return problem

    async def account(self) -> AsyncRetell:
        """The SDK client of the account in force; `bot.agents` shares it."""
        if self._fixed is not None:
            return self._fixed
        assert self._find is not None
        return await self._find()

    async def close(self) -> None:
        if self._fixed is not None:
            await self._fixed.close()

    async def check_key(self, key: str, *, timeout: float = 5.0) -> KeyCheck:
        """Whether Retell takes `key`: one `GET /get-concurrency`, the cheapest call there is.

        "refused" for a 401 or 403, "unavailable" for anything else that is not an answer
        (Retell down, a timeout), so a good key is never called refused because of an outage.
        """
        client = (await self.account()).with_options(api_key=key, timeout=timeout, max_retries=0)
        try:
            await client.concurrency.retrieve()
        except retell.APIStatusError as exc:
            if exc.status_code in (401, 403):
                return "refused"
            log.info("checking a Retell key: Retell answered %s", exc.status_code)
            return "unavailable"
        except (retell.APIConnectionError, httpx.HTTPError) as exc:
            log.info("checking a Retell key: %s", type(exc).__name__)
            return "unavailable"
        return "good"

    async def create_batch(self, suite: Suite) -> BatchJob:
        """Create a batch test. Retried only when Retell certainly created nothing.

        A create is not idempotent: a try that timed out, lost its connection after sending,
        or met a 500 may have created the batch, and trying again would create (and bill) a
        second one that nobody follows. So the SDK's own retries are off here, and only a
        refusal (429 or 503, honouring `Retry-After`) or a connection that never opened is
        tried again; anything else is reported, as "maybe created" when it may have been.
        """
        client = (await self.account()).with_options(max_retries=0)
        for attempt in range(self._create_retries + 1):
            try:
                created = await client.tests.create_batch_test(
                    response_engine=suite.engine.response_engine(),  # type: ignore[arg-type]
                    test_case_definition_ids=list(suite.case_ids),
                )
            except Exception as exc:
                if attempt == self._create_retries or not _nothing_created(exc):
                    raise self.problem(exc, what="engine or one of the test cases") from exc
                await asyncio.sleep(_retry_delay(exc, attempt))
            else:
                return _batch(created)
        raise AssertionError("unreachable: the last attempt returns or raises")

    async def get_batch(self, batch_id: str) -> BatchJob:
        try:
            client = await self.account()
            return _batch(await client.tests.get_batch_test(batch_id))
        except Exception as exc:
            raise self.problem(exc, what=f"batch {batch_id}") from exc

    async def list_batches(
        self, engine: Engine, *, pagination_key: str | None = None, limit: int = LIST_PAGE_SIZE
    ) -> tuple[list[BatchJob], str | None]:
        """One page of an engine's batches, newest first, and the key of the next page (if any).

        One call refreshes every batch of the engine on the page: this is what lets the bot
        follow a thousand batches without a thousand requests.
        """
        try:
            client = await self.account()
            page = await client.tests.list_batch_tests(
                type=engine.type,
                llm_id=engine.id if engine.type == "retell-llm" else omit,
                conversation_flow_id=engine.id if engine.type == "conversation-flow" else omit,
                version=engine.version if engine.version is not None else omit,
                limit=limit,
                pagination_key=pagination_key or omit,
            )
        except Exception as exc:
            raise self.problem(exc, what=f"engine {engine.label}") from exc
        next_key = page.pagination_key if page.has_more else None
        return [_batch(item) for item in page.items], next_key

    async def test_runs(self, batch_id: str) -> list[TestRun]:
        """Every test run of a batch, all pages."""
        return [run async for run in self._iter_test_runs(batch_id)]

    async def _iter_test_runs(self, batch_id: str) -> AsyncIterator[TestRun]:
        key: str | None = None
        walk = PageWalk(f"test runs of batch {batch_id}", MAX_TEST_RUNS)
        while True:
            try:
                # The JSON itself rather than the SDK's models: each of a page's 1,000 test runs
                # carries its whole definition snapshot, and modelling it all costs ~0.1 s of
                # event-loop CPU per page (measured: 0.11 s against 0.017 s read raw).
                client = await self.account()
                response = await client.tests.with_raw_response.list_test_runs(
                    batch_id, limit=LIST_PAGE_SIZE, pagination_key=key or omit
                )
                items, more, offered = _test_runs_page(await response.json())
            except Exception as exc:
                raise self.problem(exc, what=f"batch {batch_id}") from exc
            key = walk.next_key(len(items), more, offered)
            for item in items:
                yield item
            if key is None:
                return

    async def definitions(self, engine: Engine) -> list[CaseDefinition]:
        """Every test case definition of an engine, all pages."""
        found: list[CaseDefinition] = []
        key: str | None = None
        walk = PageWalk(f"test case definitions of {engine.label}", MAX_DEFINITIONS)
        while True:
            try:
                client = await self.account()
                page = await client.tests.list_test_case_definitions(
                    type=engine.type,
                    llm_id=engine.id if engine.type == "retell-llm" else omit,
                    conversation_flow_id=engine.id if engine.type == "conversation-flow" else omit,
                    limit=LIST_PAGE_SIZE,
                    pagination_key=key or omit,
                )
            except Exception as exc:
                raise self.problem(exc, what=f"engine {engine.label}") from exc
            found.extend(
                CaseDefinition(item.test_case_definition_id, one_line(item.name or ""))
                for item in page.items
            )
            key = walk.next_key(len(page.items), page.has_more, page.pagination_key)
            if key is None:
                return found

    async def engines(self, *, timeout: float = 2.0, max_pages: int = 3) -> list[EngineChoice]:
        """The account's Retell LLMs and conversation flows, most recently modified first.

        For the Run modal's engine menu, which Slack gives 3 s: both lists are read at once,
        with one short try each (no SDK retries) and at most `max_pages` pages apiece. An
        engine listed in several versions appears once, with its latest version.
        """
        try:
            client = (await self.account()).with_options(timeout=timeout, max_retries=0)
        except Exception as exc:
            raise self.problem(exc, what="list of engines") from exc

        async def llms() -> list[EngineChoice]:
            found: list[EngineChoice] = []
            key: str | None = None
            for _ in range(max_pages):
                page = await client.llm.list(limit=LIST_PAGE_SIZE, pagination_key=key or omit)
                found.extend(_llm_choice(item) for item in page.items)
                if not page.has_more or not page.pagination_key:
                    break
                key = page.pagination_key
            return found

        async def flows() -> list[EngineChoice]:
            found: list[EngineChoice] = []
            key: str | None = None
            for _ in range(max_pages):
                page = await client.conversation_flow.list(
                    limit=LIST_PAGE_SIZE, pagination_key=key or omit
                )
                found.extend(_flow_choice(item) for item in page.items)
                if not page.has_more or not page.pagination_key:
                    break
                key = page.pagination_key
            return found

        try:
            llm_choices, flow_choices = await asyncio.gather(llms(), flows())
        except Exception as exc:
            raise self.problem(exc, what="list of engines") from exc
        latest: dict[str, EngineChoice] = {}
        for choice in [*llm_choices, *flow_choices]:
            seen = latest.get(choice.engine_id)
            if seen is None or (choice.version or 0) > (seen.version or 0):
                latest[choice.engine_id] = choice
        return sorted(latest.values(), key=lambda choice: -choice.modified_ms)

    async def definitions_quick(
        self, engine: Engine, *, timeout: float = 2.0
    ) -> list[CaseDefinition]:
        """`definitions`, each page tried once with a short timeout: for menus Slack gives 3 s.

        The SDK's retries back off for seconds, which an options request cannot wait for; the
        user retries by typing again.
        """
        try:
            quick = (await self.account()).with_options(timeout=timeout, max_retries=0)
        except Exception as exc:
            raise self.problem(exc, what=f"engine {engine.label}") from exc
        return await RetellGateway(quick, metrics=self._metrics).definitions(engine)


@dataclass(frozen=True, slots=True)
class EngineChoice:
    """A response engine of the account, as the Run modal offers it.

    Retell's LLM and conversation-flow objects carry no name, so what identifies one to a user
    is its id, plus its latest version and model.
    """

    engine_type: Literal["retell-llm", "conversation-flow"]
    engine_id: str
    version: int | None
    model: str | None
    modified_ms: int

    @property
    def engine(self) -> Engine:
        """The engine unpinned: a run without a version uses Retell's latest."""
        return Engine(self.engine_type, self.engine_id)


def _llm_choice(item: Any) -> EngineChoice:
    model = getattr(item, "model", None)
    return EngineChoice(
        engine_type="retell-llm",
        engine_id=str(item.llm_id),
        version=item.version if isinstance(item.version, int) else None,
        model=model if isinstance(model, str) else None,
        modified_ms=int(item.last_modification_timestamp or 0),
    )


def _flow_choice(item: Any) -> EngineChoice:
    model = getattr(getattr(item, "api_model_choice", None), "model", None)
    return EngineChoice(
        engine_type="conversation-flow",
        engine_id=str(item.conversation_flow_id),
        version=item.version if isinstance(item.version, int) else None,
        model=model if isinstance(model, str) else None,
        modified_ms=int(item.last_modification_timestamp or 0),
    )
