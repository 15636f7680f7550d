"""The Retell stand-in, driven through the official SDK exactly as the bot drives Retell."""

from __future__ import annotations

import asyncio
import signal
import sys
import time
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
import retell
from retell import AsyncRetell

from bot.testing.retell import FakeAgentVersion, FakeRetell, RetellStandInError

API_KEY = "key_standin_test"
LLM = "llm_support"


class FakeClock:
    """A clock the test moves by hand, so batches progress without sleeping."""

    def __init__(self, start: float = 1_000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
async def fake(clock: FakeClock) -> AsyncIterator[FakeRetell]:
    async with FakeRetell(api_key=API_KEY, clock=clock, batch_seconds=10.0) as server:
        yield server


@pytest.fixture
async def client(fake: FakeRetell) -> AsyncIterator[AsyncRetell]:
    sdk = AsyncRetell(api_key=API_KEY, base_url=fake.base_url, max_retries=0)
    yield sdk
    await sdk.close()


def llm(engine_id: str = LLM, version: float | None = None) -> Any:
    engine: dict[str, Any] = {"type": "retell-llm", "llm_id": engine_id}
    if version is not None:
        engine["version"] = version
    return engine


async def test_batch_counts_move_to_complete_as_the_clock_advances(
    fake: FakeRetell, client: AsyncRetell, clock: FakeClock
) -> None:
    ids = fake.seed(LLM, 4)
    fake.add_definition(LLM, "tc_fail_refund", "Refund request")
    fake.set_outcome(ids[3], "error", "The simulated caller hung up immediately.")

    created = await client.tests.create_batch_test(
        response_engine=llm(), test_case_definition_ids=[*ids, "tc_fail_refund"]
    )
    assert created.test_case_batch_job_id.startswith("test_case_batch_job_")
    assert (created.status, created.total_count, created.pass_count) == ("in_progress", 5, 0)
    assert created.response_engine.model_dump(exclude_none=True) == llm()

    clock.advance(5.0)  # half of the 10 s: 2 of 5 cases done
    half = await client.tests.get_batch_test(created.test_case_batch_job_id)
    assert (half.status, half.pass_count, half.fail_count, half.error_count) == (
        "in_progress",
        2,
        0,
        0,
    )
    assert half.user_modified_timestamp == created.creation_timestamp + 4_000

    clock.advance(5.0)
    done = await client.tests.get_batch_test(created.test_case_batch_job_id)
    assert (done.status, done.pass_count, done.fail_count, done.error_count) == (
        "complete",
        3,
        1,
        1,
    )
    assert done.user_modified_timestamp == created.creation_timestamp + 10_000

    runs = await client.tests.list_test_runs(created.test_case_batch_job_id)
    by_case = {run.test_case_definition_id: run for run in runs.items}
    failed = by_case["tc_fail_refund"]
    assert failed.status == "fail"
    assert failed.test_case_definition_snapshot.name == "Refund request"
    assert failed.result_explanation and failed.result_explanation.endswith(".")
    assert by_case[ids[3]].result_explanation == "The simulated caller hung up immediately."
    assert by_case[ids[0]].status == "pass" and by_case[ids[0]].result_explanation is None
    one = await client.tests.get_test_run(failed.test_case_job_id)
    assert one.model_dump() == failed.model_dump()


async def test_runs_are_pending_then_in_progress_then_resolved(
    fake: FakeRetell, client: AsyncRetell, clock: FakeClock
) -> None:
    ids = fake.seed(LLM, 25)
    batch = await client.tests.create_batch_test(
        response_engine=llm(), test_case_definition_ids=ids
    )
    page = await client.tests.list_test_runs(batch.test_case_batch_job_id, limit=1000)
    assert [run.status for run in page.items] == ["in_progress"] * 20 + ["pending"] * 5
    clock.advance(2.0)  # 5 of 25 done
    page = await client.tests.list_test_runs(batch.test_case_batch_job_id, limit=1000)
    assert [run.status for run in page.items] == ["pass"] * 5 + ["in_progress"] * 20


async def test_list_batch_tests_pages_newest_first(
    fake: FakeRetell, client: AsyncRetell, clock: FakeClock
) -> None:
    ids = fake.seed(LLM, 2)
    created = []
    for _ in range(5):
        batch = await client.tests.create_batch_test(
            response_engine=llm(), test_case_definition_ids=ids
        )
        created.append(batch.test_case_batch_job_id)
        clock.advance(1.0)

    seen: list[list[str]] = []
    key: str | None = None
    while True:
        page = await client.tests.list_batch_tests(
            type="retell-llm", llm_id=LLM, limit=2, pagination_key=key or retell.omit
        )
        seen.append([item.test_case_batch_job_id for item in page.items])
        if not page.has_more:
            assert page.pagination_key is None
            break
        key = page.pagination_key
    newest_first = created[::-1]
    assert seen == [newest_first[0:2], newest_first[2:4], newest_first[4:5]]


async def test_list_batch_tests_defaults_to_the_latest_version(
    fake: FakeRetell, client: AsyncRetell
) -> None:
    fake.add_engine("retell-llm", LLM, versions=3)
    ids = fake.seed(LLM, 1)
    old = await client.tests.create_batch_test(
        response_engine=llm(version=0), test_case_definition_ids=ids
    )
    unpinned = await client.tests.create_batch_test(
        response_engine=llm(), test_case_definition_ids=ids
    )
    pinned = await client.tests.create_batch_test(
        response_engine=llm(version=2.0), test_case_definition_ids=ids
    )
    assert unpinned.response_engine.model_dump(exclude_none=True) == llm()  # echoed as sent
    assert fake.batches[unpinned.test_case_batch_job_id].version == 2

    latest = await client.tests.list_batch_tests(type="retell-llm", llm_id=LLM)
    assert {b.test_case_batch_job_id for b in latest.items} == {
        unpinned.test_case_batch_job_id,
        pinned.test_case_batch_job_id,
    }
    v0 = await client.tests.list_batch_tests(type="retell-llm", llm_id=LLM, version=0)
    assert [b.test_case_batch_job_id for b in v0.items] == [old.test_case_batch_job_id]

    fake.add_engine("retell-llm", LLM, versions=4)  # publishing v3 hides v2's batches by default
    after = await client.tests.list_batch_tests(type="retell-llm", llm_id=LLM)
    assert after.items == [] and after.has_more is False


async def test_list_test_case_definitions_pages_in_creation_order(
    fake: FakeRetell, client: AsyncRetell
) -> None:
    flow = "conversation_flow_billing"
    ids = fake.seed(flow, 7)
    fake.seed(LLM, 3)  # another engine's definitions stay out
    names: list[str] = []
    pages = 0
    key: str | None = None
    while True:
        page = await client.tests.list_test_case_definitions(
            type="conversation-flow",
            conversation_flow_id=flow,
            limit=3,
            pagination_key=key or retell.omit,
        )
        pages += 1
        names.extend(item.name for item in page.items)
        if not page.has_more:
            break
        key = page.pagination_key
    assert pages == 3
    assert names == [f"Case {n}" for n in range(1, 8)]
    one = await client.tests.get_test_case_definition(ids[0])
    assert one.response_engine.model_dump(exclude_none=True) == {
        "type": "conversation-flow",
        "conversation_flow_id": flow,
    }


async def test_invalid_requests_are_refused_like_retell(
    fake: FakeRetell, client: AsyncRetell
) -> None:
    fake.add_engine("retell-llm", LLM, versions=2)
    ids = fake.seed(LLM, 2)
    fake.seed("llm_other", 1, prefix="other_")
    create = client.tests.create_batch_test

    with pytest.raises(retell.BadRequestError, match="Custom LLM is not supported"):
        custom: Any = {"type": "custom-llm", "llm_websocket_url": "wss://example.test"}
        await create(response_engine=custom, test_case_definition_ids=ids)
    with pytest.raises(retell.UnprocessableEntityError, match="1001"):
        await create(response_engine=llm(), test_case_definition_ids=ids * 500 + ["x"])
    with pytest.raises(retell.BadRequestError, match="version"):
        await create(response_engine=llm(version=1.5), test_case_definition_ids=ids)
    with pytest.raises(retell.NotFoundError, match="tc_missing, other_1"):
        await create(
            response_engine=llm(), test_case_definition_ids=[*ids, "tc_missing", "other_1"]
        )
    with pytest.raises(retell.NotFoundError, match="llm_nope"):
        await create(response_engine=llm("llm_nope"), test_case_definition_ids=ids)
    with pytest.raises(retell.NotFoundError, match="Version 5 of llm_support"):
        await create(response_engine=llm(version=5), test_case_definition_ids=ids)
    with pytest.raises(retell.BadRequestError, match="llm_id is required"):
        await client.tests.list_batch_tests(type="retell-llm")
    with pytest.raises(retell.BadRequestError, match="limit"):
        await client.tests.list_batch_tests(type="retell-llm", llm_id=LLM, limit=1001)
    with pytest.raises(retell.BadRequestError, match="pagination_key"):
        await client.tests.list_batch_tests(type="retell-llm", llm_id=LLM, pagination_key="zz")
    with pytest.raises(retell.NotFoundError):
        await client.tests.get_batch_test("test_case_batch_job_unknown")
    with pytest.raises(retell.NotFoundError):
        await client.tests.get_test_run("test_case_job_unknown")
    assert fake.batches == {}

    async with AsyncRetell(api_key="wrong", base_url=fake.base_url, max_retries=0) as stranger:
        with pytest.raises(retell.AuthenticationError) as refused:
            await stranger.tests.get_batch_test("test_case_batch_job_unknown")
    assert refused.value.body == {"status": "error", "message": "API key is missing or invalid."}


async def test_raw_errors_have_retells_json_body(fake: FakeRetell) -> None:
    headers = {"Authorization": f"Bearer {API_KEY}"}
    async with aiohttp.ClientSession(base_url=fake.base_url, headers=headers) as http:
        async with http.post("/create-batch-test", data="not json") as answer:
            assert answer.status == 400
            assert await answer.json() == {
                "status": "error",
                "message": "Request body must be valid JSON.",
            }
        async with http.get("/no-such-endpoint") as answer:
            assert answer.status == 404
            assert (await answer.json())["status"] == "error"
    assert [r.status for r in fake.requests] == [400, 404]


async def test_retry_after_is_honoured_by_the_sdk(fake: FakeRetell) -> None:
    ids = fake.seed(LLM, 1)
    fake.fail_next("/create-batch-test", 429, times=2, retry_after=0.05)
    async with AsyncRetell(api_key=API_KEY, base_url=fake.base_url, max_retries=2) as sdk:
        started = time.perf_counter()
        batch = await sdk.tests.create_batch_test(
            response_engine=llm(), test_case_definition_ids=ids
        )
        elapsed = time.perf_counter() - started
    assert batch.total_count == 1
    assert fake.count("/create-batch-test", "POST") == 3
    assert [r.status for r in fake.requests] == [429, 429, 201]
    assert len(fake.batches) == 1
    assert elapsed < 1.0  # the SDK's own backoff would wait at least 1.1 s for two retries


async def test_fault_outlasting_retries_surfaces_as_the_sdk_error(
    fake: FakeRetell, client: AsyncRetell
) -> None:
    fake.fail_next("/get-batch-test", 500, message="Retell is down")
    with pytest.raises(retell.InternalServerError, match="Retell is down"):
        await client.tests.get_batch_test("test_case_batch_job_whatever")
    with pytest.raises(retell.NotFoundError):  # the fault was used up
        await client.tests.get_batch_test("test_case_batch_job_whatever")


async def test_delay_makes_the_sdk_time_out(fake: FakeRetell) -> None:
    fake.delay("/get-batch-test", 0.15, times=1)
    async with AsyncRetell(
        api_key=API_KEY, base_url=fake.base_url, max_retries=0, timeout=0.05
    ) as sdk:
        with pytest.raises(retell.APITimeoutError):
            await sdk.tests.get_batch_test("test_case_batch_job_slow")


async def test_a_held_request_whose_client_gave_up_is_never_handled(fake: FakeRetell) -> None:
    ids = fake.seed(LLM, 2)
    fake.delay("/create-batch-test", 0.3, times=1)
    async with AsyncRetell(
        api_key=API_KEY, base_url=fake.base_url, max_retries=0, timeout=0.05
    ) as sdk:
        with pytest.raises(retell.APITimeoutError):
            await sdk.tests.create_batch_test(response_engine=llm(), test_case_definition_ids=ids)
    await fake.wait_for(lambda: fake.dropped == ["/create-batch-test"], timeout=2.0)
    assert not fake.batches and not fake.requests


async def test_answer_late_does_the_work_before_the_client_gives_up(fake: FakeRetell) -> None:
    ids = fake.seed(LLM, 2)
    fake.delay("/create-batch-test", 0.3, times=1, answer_late=True)
    async with AsyncRetell(
        api_key=API_KEY, base_url=fake.base_url, max_retries=0, timeout=0.05
    ) as sdk:
        with pytest.raises(retell.APITimeoutError):
            await sdk.tests.create_batch_test(response_engine=llm(), test_case_definition_ids=ids)
        [batch_id] = fake.batches  # created although the client never saw the answer
        assert [(r.path, r.status) for r in fake.requests] == [("/create-batch-test", 201)]
        batch = await sdk.tests.get_batch_test(batch_id)  # the rule was used up: no delay
    assert batch.total_count == 2


async def test_wait_for_wakes_on_requests_and_times_out_helpfully(
    fake: FakeRetell, client: AsyncRetell
) -> None:
    call = asyncio.create_task(client.tests.get_batch_test("test_case_batch_job_x"))
    await fake.wait_for(lambda: fake.count("/get-batch-test") == 1, timeout=2.0)
    with pytest.raises(retell.NotFoundError):
        await call
    with pytest.raises(TimeoutError, match="GET /get-batch-test/test_case_batch_job_x -> 404"):
        await fake.wait_for(lambda: False, timeout=0.05)


async def test_stalled_batches_and_finish_now(
    fake: FakeRetell, client: AsyncRetell, clock: FakeClock
) -> None:
    ids = fake.seed(LLM, 3)
    fake.complete_never = True
    stuck = fake.create_batch_directly(llm(), ids)
    fake.complete_never = False
    fake.next_batch_durations.append(100.0)
    slow = fake.create_batch_directly(llm(), ids)
    quick = fake.create_batch_directly(llm(), ids, duration=1.0)

    clock.advance(20.0)
    assert (fake.progress(stuck).completed, fake.progress(stuck).status) == (2, "in_progress")
    assert fake.progress(slow).completed == 0
    assert fake.progress(quick).status == "complete"

    fake.finish_now(stuck)
    listed = await client.tests.list_batch_tests(type="retell-llm", llm_id=LLM)
    statuses = {b.test_case_batch_job_id: b.status for b in listed.items}
    assert statuses == {stuck: "complete", slow: "in_progress", quick: "complete"}

    with pytest.raises(RetellStandInError, match="not found"):
        fake.create_batch_directly(llm(), ["tc_missing"])


async def test_complete_cases_moves_a_batch_part_way_without_undoing_progress(
    fake: FakeRetell, clock: FakeClock
) -> None:
    ids = fake.seed(LLM, 4)
    batch = fake.create_batch_directly(llm(), ids, duration=100.0)
    fake.complete_cases(batch, 2)
    assert (fake.progress(batch).completed, fake.progress(batch).status) == (2, "in_progress")
    clock.advance(26.0)  # a quarter more of the timeline: the third case
    assert fake.progress(batch).completed == 3
    fake.complete_cases(batch, 1)  # already further: nothing moves back
    assert fake.progress(batch).completed == 3


async def test_time_scale_compresses_batches(clock: FakeClock) -> None:
    fake = FakeRetell(clock=clock, batch_seconds=600.0, time_scale=60.0)
    ids = fake.seed(LLM, 2)
    batch_id = fake.create_batch_directly(llm(), ids)
    clock.advance(5.0)  # 5 real seconds are 300 simulated ones
    assert fake.progress(batch_id).completed == 1
    clock.advance(5.0)
    assert fake.progress(batch_id).status == "complete"


async def test_many_batches_page_through_in_large_pages(
    fake: FakeRetell, client: AsyncRetell
) -> None:
    ids = fake.seed(LLM, 3)
    for _ in range(2_500):
        fake.create_batch_directly(llm(), ids)
    first = await client.tests.list_batch_tests(type="retell-llm", llm_id=LLM, limit=1000)
    assert len(first.items) == 1000 and first.has_more and first.pagination_key
    rest = await client.tests.list_batch_tests(
        type="retell-llm", llm_id=LLM, limit=1000, pagination_key=first.pagination_key
    )
    last = await client.tests.list_batch_tests(
        type="retell-llm", llm_id=LLM, limit=1000, pagination_key=rest.pagination_key or ""
    )
    assert (len(rest.items), len(last.items), last.has_more) == (1000, 500, False)


async def test_standalone_process_serves_and_is_steered_by_control_endpoints() -> None:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "bot.testing.retell",
        "--port",
        "0",
        "--api-key",
        API_KEY,
        "--batch-seconds",
        "0",
        stdout=asyncio.subprocess.PIPE,
    )
    try:
        assert process.stdout is not None
        line = await asyncio.wait_for(process.stdout.readline(), timeout=10)
        ready, base_url = line.decode().split()
        assert ready == "READY" and base_url.startswith("http://127.0.0.1:")

        async with aiohttp.ClientSession(base_url=base_url) as http:
            async with http.post("/_control/seed", json={"engine_id": LLM, "count": 2}) as seeded:
                ids = (await seeded.json())["ids"]
            async with http.post(
                "/_control/fail_next", json={"path_prefix": "/create", "status": 503}
            ) as answer:
                assert answer.status == 200
            async with AsyncRetell(api_key=API_KEY, base_url=base_url, max_retries=1) as sdk:
                batch = await sdk.tests.create_batch_test(
                    response_engine=llm(), test_case_definition_ids=ids
                )
                assert (await sdk.tests.get_batch_test(batch.test_case_batch_job_id)).status == (
                    "complete"
                )
            async with http.get("/_control/stats") as answer:
                stats = await answer.json()
        assert stats["requests"]["by_path"] == {"/create-batch-test": 2, "/get-batch-test": 1}
        completed_ms = stats["batches"][batch.test_case_batch_job_id]["completed_ms"]
        assert completed_ms == batch.creation_timestamp
    finally:
        process.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(process.wait(), timeout=10) == 0


async def test_outcomes_set_for_one_engine_version_apply_to_its_batches_only(
    fake: FakeRetell,
) -> None:
    fake.add_engine("retell-llm", LLM, versions=4)
    regressed, flaky, steady = fake.seed(LLM, 3)
    fake.set_outcome(regressed, "fail", "v3 forgets the refund", version=3)
    fake.set_outcome(steady, "error", "down whatever the version")
    fake.set_outcome(steady, "pass", version=2)  # the version's own setting wins
    fake.script_outcomes(flaky, [("fail", "hung up"), ("pass", None)], version=2)

    def outcomes(version: int | None) -> list[str]:
        """What each case resolved to in a new batch of that version (None: unpinned)."""
        batch = fake.batches[fake.create_batch_directly(llm(version=version), cases)]
        return [batch.outcome(index) for index in range(batch.total)]

    cases = [regressed, flaky, steady]
    assert outcomes(2) == ["pass", "fail", "pass"]
    assert outcomes(3) == ["fail", "pass", "error"]  # v2's script is not used up by v3
    assert outcomes(None) == ["fail", "pass", "error"]  # unpinned: the latest, 3
    assert outcomes(2) == ["pass", "pass", "pass"]
    assert outcomes(1) == ["pass", "pass", "error"]
    batch = fake.batches[fake.create_batch_directly(llm(version=3), [regressed])]
    assert batch.explanations == {0: "v3 forgets the refund"}


async def test_engines_are_read_by_version_or_latest(fake: FakeRetell, client: AsyncRetell) -> None:
    flow = "conversation_flow_billing"
    fake.add_engine("retell-llm", LLM, versions=3)
    fake.add_engine("conversation-flow", flow, versions=2)

    latest = await client.llm.retrieve(LLM)
    assert (latest.llm_id, latest.version, latest.is_published) == (LLM, 2, False)
    older = await client.llm.retrieve(LLM, version=1)
    assert (older.version, older.is_published) == (1, True)
    assert older.last_modification_timestamp > 0
    assert (await client.conversation_flow.retrieve(flow)).version == 1
    first = await client.conversation_flow.retrieve(flow, version=0)
    assert (first.conversation_flow_id, first.version) == (flow, 0)

    with pytest.raises(retell.NotFoundError, match="Version 3 of llm_support") as missing:
        await client.llm.retrieve(LLM, version=3)
    assert missing.value.body == {
        "status": "error",
        "message": "Version 3 of llm_support not found (latest is 2).",
    }
    with pytest.raises(retell.NotFoundError, match="llm_nope"):
        await client.llm.retrieve("llm_nope")
    with pytest.raises(retell.NotFoundError, match="Retell LLM conversation_flow_billing"):
        await client.llm.retrieve(flow)  # an engine of the other type
    with pytest.raises(retell.NotFoundError, match="Conversation flow llm_support"):
        await client.conversation_flow.retrieve(LLM, version=0)
    assert fake.stats()["requests"]["by_path"] == {
        "/get-retell-llm": 5,
        "/get-conversation-flow": 3,
    }


def agent_versions(*published: bool, engine_id: str = LLM) -> list[FakeAgentVersion]:
    """Versions 0..n of an agent, version i answering with the engine's version i."""
    return [
        FakeAgentVersion("retell-llm", engine_id, number, is_published)
        for number, is_published in enumerate(published)
    ]


async def test_agents_list_with_their_versions_and_publish_one_version(
    fake: FakeRetell, client: AsyncRetell
) -> None:
    fake.add_engine("retell-llm", LLM, versions=4)
    fake.add_agent("agent_support", "Support line", agent_versions(True, True, False))
    fake.add_agent("agent_sales", "Sales line", agent_versions(True))
    fake.add_agent("agent_billing", "Billing line", agent_versions(False, False, False, False))

    names: list[str] = []
    key: str | None = None
    while True:
        page = await client.agent.list(limit=2, pagination_key=key or retell.omit)
        names.extend(item.agent_name for item in page.items)
        assert "response_engine" not in page.items[0].model_dump()
        if not page.has_more:
            break
        key = page.pagination_key
    assert names == ["Support line", "Sales line", "Billing line"]
    newest = await client.agent.list(sort_order="descending", limit=1)
    assert [item.agent_id for item in newest.items] == ["agent_billing"]

    versions = await client.agent.list_versions("agent_support", limit=2)
    rest = await client.agent.list_versions(
        "agent_support", limit=2, pagination_key=versions.pagination_key or ""
    )
    assert [(v.version, v.is_published) for v in [*versions.items, *rest.items]] == [
        (0, True),
        (1, True),
        (2, False),
    ]
    assert rest.has_more is False

    draft = await client.agent.retrieve("agent_support")
    assert (draft.agent_name, draft.version, draft.is_published) == ("Support line", 2, False)
    assert draft.response_engine.model_dump(exclude_none=True) == llm(version=2)
    first = await client.agent.retrieve("agent_support", version=0)
    assert (first.version, first.is_published) == (0, True)

    await client.agent.publish("agent_support", version=2)
    await client.agent.publish("agent_support", version=2)  # already published: accepted
    assert (await client.agent.retrieve("agent_support", version=2)).is_published is True
    await client.agent.publish("agent_billing", version=1)  # not the latest: exactly that one
    billing = await client.agent.list_versions("agent_billing")
    assert [v.is_published for v in billing.items] == [False, True, False, False]
    assert fake.publishes == [("agent_support", 2), ("agent_support", 2), ("agent_billing", 1)]
    assert fake.stats()["publishes"][-1] == {"agent_id": "agent_billing", "version": 1}

    with pytest.raises(retell.NotFoundError, match="Agent agent_nope not found"):
        await client.agent.retrieve("agent_nope")
    with pytest.raises(retell.NotFoundError, match="Version 3 of agent agent_support"):
        await client.agent.retrieve("agent_support", version=3)
    with pytest.raises(retell.NotFoundError, match="Version 9 of agent agent_sales"):
        await client.agent.publish("agent_sales", version=9)
    with pytest.raises(retell.NotFoundError):
        await client.agent.list_versions("agent_nope")
    assert len(fake.publishes) == 3


async def test_agent_routes_meet_the_same_faults_auth_and_recording(
    fake: FakeRetell, client: AsyncRetell
) -> None:
    fake.add_engine("retell-llm", LLM, versions=2)
    fake.add_agent("agent_support", "Support line", agent_versions(True, False))
    fake.fail_next("/publish-agent-version", 422, message="Version 1 has no voice.")
    with pytest.raises(retell.UnprocessableEntityError, match="Version 1 has no voice"):
        await client.agent.publish("agent_support", version=1)
    assert fake.publishes == []
    fake.fail_next("/v2/list-agents", 429, retry_after=0)
    with pytest.raises(retell.RateLimitError):
        await client.agent.list()
    await client.agent.list()
    await client.agent.list_versions("agent_support")
    await client.agent.retrieve("agent_support", version=1)
    await client.agent.publish("agent_support", version=1)
    async with AsyncRetell(api_key="wrong", base_url=fake.base_url, max_retries=0) as stranger:
        with pytest.raises(retell.AuthenticationError):
            await stranger.agent.publish("agent_support", version=0)
    assert fake.publishes == [("agent_support", 1)]
    assert fake.stats()["requests"]["by_path"] == {
        "/publish-agent-version": 3,
        "/v2/list-agents": 2,
        "/list-agent-versions": 1,
        "/get-agent": 1,
    }
    assert [r.body for r in fake.requests if r.path.startswith("/publish")] == [
        {"version": 1},
        {"version": 1},
        {"version": 0},
    ]

    with pytest.raises(ValueError, match="already exists"):
        fake.add_agent("agent_support", "Again", agent_versions(True))
    with pytest.raises(ValueError, match="no version 5"):
        fake.add_agent("agent_new", "New", [FakeAgentVersion("retell-llm", LLM, 5)])
    with pytest.raises(KeyError, match="llm_nope"):
        fake.add_agent("agent_new", "New", agent_versions(False, engine_id="llm_nope"))


async def test_control_endpoints_seed_agents_and_version_outcomes(fake: FakeRetell) -> None:
    fake.add_engine("conversation-flow", "conversation_flow_billing", versions=3)
    [case_id] = fake.seed("conversation_flow_billing", 1)
    engine = {"type": "conversation-flow", "conversation_flow_id": "conversation_flow_billing"}
    async with aiohttp.ClientSession(base_url=fake.base_url) as http:
        versions = [
            {"response_engine": {**engine, "version": 1}, "is_published": True},
            {"response_engine": {**engine, "version": 2}},
        ]
        body = {"agent_id": "agent_billing", "name": "Billing line", "versions": versions}
        async with http.post("/_control/agent", json=body) as answer:
            assert answer.status == 200
        async with http.post("/_control/agent", json=body) as answer:
            assert answer.status == 400  # a duplicate, refused as the seeding helpers do
        unversioned = {**body, "agent_id": "agent_other", "versions": [{"response_engine": engine}]}
        async with http.post("/_control/agent", json=unversioned) as answer:
            assert (answer.status, (await answer.json())["message"]) == (
                400,
                "response_engine.version is required.",
            )
        outcome = {"case_id": case_id, "status": "fail", "explanation": "v2 loops", "version": 2}
        async with http.post("/_control/outcome", json=outcome) as answer:
            assert answer.status == 200

    async with AsyncRetell(api_key=API_KEY, base_url=fake.base_url, max_retries=0) as sdk:
        draft = await sdk.agent.retrieve("agent_billing")
        published = await sdk.agent.retrieve("agent_billing", version=0)
    assert draft.response_engine.model_dump(exclude_none=True) == {**engine, "version": 2}
    assert (draft.is_published, published.is_published) == (False, True)
    v1 = fake.batches[fake.create_batch_directly({**engine, "version": 1}, [case_id])]
    v2 = fake.batches[fake.create_batch_directly({**engine, "version": 2}, [case_id])]
    assert (v1.outcome(0), v2.outcome(0), v2.explanations) == ("pass", "fail", {0: "v2 loops"})
