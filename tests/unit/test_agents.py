"""`bot.agents` against the Retell stand-in over real HTTP: engine versions, drafts, publishing.

What a scan costs is read from the stand-in's recorded requests, and time from a hand-moved
clock, so no test sleeps.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from bot.agents import AgentDirectory, AgentDraft, EngineVersions
from bot.metrics import Metrics
from bot.retell import RetellGateway, RetellProblem
from bot.suite import Engine
from bot.testing.retell import FakeAgentVersion, FakeRetell
from tests.helpers import ENGINE, FLOW

OTHER = "llm_other"
TTL = 60.0


class FakeClock:
    """A clock the test moves by hand, so the cache expires without sleeping."""

    def __init__(self) -> None:
        self.now = 1_000.0

    def __call__(self) -> float:
        return self.now


def llm(version: int, published: bool = False, engine_id: str = ENGINE) -> FakeAgentVersion:
    return FakeAgentVersion("retell-llm", engine_id, version, published)


def flow(version: int, published: bool = False) -> FakeAgentVersion:
    return FakeAgentVersion("conversation-flow", FLOW, version, published)


@pytest.fixture
def agents(retell: FakeRetell) -> FakeRetell:
    """The conftest stand-in (llm_abc at versions 0..3) with more engines and six agents."""
    retell.add_engine("retell-llm", OTHER, versions=2)
    retell.add_engine("conversation-flow", FLOW, versions=3)
    retell.add_agent("agent_support", "Support line", [llm(2, published=True), llm(3)])
    retell.add_agent("agent_sales", "Sales line", [llm(3, published=True)])
    retell.add_agent("agent_old", "Old line", [llm(3), llm(2)])  # its draft is at @2
    retell.add_agent("agent_other", "Other line", [llm(1, engine_id=OTHER)])
    retell.add_agent("agent_flow", "Flow line", [flow(1, published=True), flow(2)])
    retell.add_agent("agent_twin", "Twin line", [llm(3)])
    retell.page_cap = 1  # every listing takes several pages
    return retell


@pytest.fixture
def metrics() -> Metrics:
    return Metrics()


@pytest.fixture
async def gateway(retell: FakeRetell, metrics: Metrics) -> AsyncIterator[RetellGateway]:
    connected = RetellGateway.connect(
        api_key=retell.api_key, base_url=retell.base_url, max_retries=2, metrics=metrics
    )
    yield connected
    await connected.close()


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def directory(agents: FakeRetell, gateway: RetellGateway, clock: FakeClock) -> AgentDirectory:
    return AgentDirectory(gateway, ttl=TTL, clock=clock)


SUPPORT = AgentDraft("agent_support", "Support line", 1)
TWIN = AgentDraft("agent_twin", "Twin line", 0)


# ----- drafts --------------------------------------------------------------------------------


async def test_drafts_are_agents_whose_unpublished_latest_version_answers_with_the_engine(
    directory: AgentDirectory, agents: FakeRetell
) -> None:
    assert await directory.drafts_of(Engine("retell-llm", ENGINE, 3)) == [SUPPORT, TWIN]
    assert await directory.drafts_of(Engine("retell-llm", ENGINE, 2)) == [
        AgentDraft("agent_old", "Old line", 1)
    ]
    assert await directory.drafts_of(Engine("retell-llm", ENGINE, 1)) == []
    assert await directory.drafts_of(Engine("retell-llm", OTHER, 1)) == [
        AgentDraft("agent_other", "Other line", 0)
    ]
    assert await directory.drafts_of(Engine("conversation-flow", FLOW, 2)) == [
        AgentDraft("agent_flow", "Flow line", 1)
    ]
    assert await directory.drafts_of(Engine("conversation-flow", FLOW, 1)) == []
    assert await directory.drafts_of(Engine("conversation-flow", ENGINE, 3)) == []

    # One scan for all of the above: the agents one page at a time, every agent's versions,
    # and the draft of each agent whose latest version is unpublished (not the Sales line's).
    assert agents.count("/v2/list-agents") == 6
    assert agents.count("/list-agent-versions") == 2 + 1 + 2 + 1 + 2 + 1  # a page per version
    drafts_read = {
        (r.path, r.query["version"]) for r in agents.requests if r.path.startswith("/get-agent")
    }  # a set: the agents are read several at once
    assert drafts_read == {
        ("/get-agent/agent_support", "1"),
        ("/get-agent/agent_old", "1"),
        ("/get-agent/agent_other", "0"),
        ("/get-agent/agent_flow", "1"),
        ("/get-agent/agent_twin", "0"),
    }
    assert agents.count("/get-agent") == 5


async def test_drafts_need_a_concrete_engine_version(directory: AgentDirectory) -> None:
    with pytest.raises(ValueError, match="engine_version"):
        await directory.drafts_of(Engine("retell-llm", ENGINE))


async def test_the_scan_is_kept_for_the_ttl_then_read_again(
    directory: AgentDirectory, agents: FakeRetell, clock: FakeClock
) -> None:
    engine = Engine("retell-llm", ENGINE, 3)
    await directory.drafts_of(engine)
    scanned = len(agents.requests)

    clock.now += TTL - 1
    assert await directory.drafts_of(engine) == [SUPPORT, TWIN]
    assert await directory.drafts_of(Engine("conversation-flow", FLOW, 2)) != []
    assert len(agents.requests) == scanned  # within the TTL: nothing asked of Retell

    clock.now += 1
    await directory.drafts_of(engine)
    assert agents.count("/v2/list-agents") == 2 * 6

    directory.forget()
    await directory.drafts_of(engine)
    assert agents.count("/v2/list-agents") == 3 * 6


async def test_concurrent_callers_share_one_scan(
    directory: AgentDirectory, agents: FakeRetell
) -> None:
    engines = [Engine("retell-llm", ENGINE, 3), Engine("conversation-flow", FLOW, 2)] * 5
    found = await asyncio.gather(*(directory.drafts_of(engine) for engine in engines))
    assert found[0] == found[2] == [SUPPORT, TWIN]
    assert agents.count("/v2/list-agents") == 6  # one walk of the pages, not ten
    assert agents.count("/get-agent/agent_support") == 1


async def test_a_scan_begun_before_forget_is_not_kept(
    directory: AgentDirectory, agents: FakeRetell
) -> None:
    engine = Engine("retell-llm", ENGINE, 3)
    under_way = asyncio.create_task(directory.drafts_of(engine))
    await agents.wait_for(lambda: agents.count("/v2/list-agents") == 1, timeout=5.0)
    directory.forget()  # e.g. a publish landed while the scan was reading
    assert await under_way == [SUPPORT, TWIN]
    await directory.drafts_of(engine)
    assert agents.count("/v2/list-agents") == 2 * 6


async def test_a_failed_scan_propagates_and_is_not_kept(
    directory: AgentDirectory, agents: FakeRetell, metrics: Metrics
) -> None:
    agents.fail_next("/list-agent-versions/agent_old", 401)
    with pytest.raises(RetellProblem) as failed:
        await directory.drafts_of(Engine("retell-llm", ENGINE, 3))
    assert failed.value.kind == "unauthorized"
    assert metrics.retell_errors.labels("unauthorized")._value.get() == 1
    assert await directory.drafts_of(Engine("retell-llm", ENGINE, 3)) == [SUPPORT, TWIN]


# ----- publishing ----------------------------------------------------------------------------


async def test_publish_publishes_exactly_that_version_in_one_request(
    directory: AgentDirectory, agents: FakeRetell
) -> None:
    engine = Engine("retell-llm", ENGINE, 3)
    assert await directory.drafts_of(engine) == [SUPPORT, TWIN]
    await directory.publish("agent_support", 1)
    assert agents.publishes == [("agent_support", 1)]
    published = [r for r in agents.requests if r.path.startswith("/publish-agent-version")]
    assert [(r.path, r.body, r.status) for r in published] == [
        ("/publish-agent-version/agent_support", {"version": 1}, 200)
    ]
    assert await directory.drafts_of(engine) == [TWIN]  # forgotten, scanned again


async def test_a_refused_publish_says_what_retell_said(
    directory: AgentDirectory, agents: FakeRetell
) -> None:
    await directory.drafts_of(Engine("retell-llm", ENGINE, 3))  # knows the agents' names
    agents.fail_next("/publish-agent-version", 422, message="Version 1 has no voice.")
    with pytest.raises(RetellProblem) as refused:
        await directory.publish("agent_support", 1)
    assert refused.value.message == (
        "Retell refused to publish version 1 of Support line (422): Version 1 has no voice."
    )
    assert (refused.value.kind, refused.value.uncertain) == ("invalid", False)
    with pytest.raises(RetellProblem) as missing:
        await directory.publish("agent_support", 5, name="Support (EU)")
    assert missing.value.message.startswith(
        "Retell refused to publish version 5 of Support (EU) (404): Version 5 of agent"
    )
    assert agents.publishes == []


async def test_an_unanswered_publish_is_not_retried(
    directory: AgentDirectory, agents: FakeRetell
) -> None:
    agents.fail_next("/publish-agent-version", 500, times=3)  # the gateway retries twice elsewhere
    with pytest.raises(RetellProblem) as unconfirmed:
        await directory.publish("agent_twin", 0)
    assert unconfirmed.value.uncertain
    assert unconfirmed.value.message.startswith(
        "Retell did not confirm publishing version 0 of agent_twin (500): it may have been"
    )
    assert agents.count("/publish-agent-version") == 1


# ----- engine versions -----------------------------------------------------------------------


async def test_engine_version_is_the_pinned_one_or_the_latest(
    agents: FakeRetell, gateway: RetellGateway
) -> None:
    versions = EngineVersions(gateway)
    assert await versions.engine_version(Engine("retell-llm", ENGINE)) == 3
    assert await versions.engine_version(Engine("retell-llm", ENGINE, 1)) == 1
    assert await versions.engine_version(Engine("conversation-flow", FLOW)) == 2
    assert await versions.engine_version(Engine("conversation-flow", FLOW, 0)) == 0
    assert [(r.path, r.query) for r in agents.requests] == [
        (f"/get-retell-llm/{ENGINE}", {}),
        (f"/get-retell-llm/{ENGINE}", {"version": "1"}),
        (f"/get-conversation-flow/{FLOW}", {}),
        (f"/get-conversation-flow/{FLOW}", {"version": "0"}),
    ]


async def test_a_missing_engine_or_version_is_named(
    agents: FakeRetell, gateway: RetellGateway
) -> None:
    versions = EngineVersions(gateway)
    with pytest.raises(RetellProblem) as no_version:
        await versions.engine_version(Engine("retell-llm", ENGINE, 7))
    assert no_version.value.kind == "not_found"
    assert no_version.value.message.startswith("Retell has no version 7 of llm_abc (404).")
    with pytest.raises(RetellProblem) as no_engine:
        await versions.engine_version(Engine("retell-llm", "llm_nope"))
    assert no_engine.value.message.startswith("Retell has no Retell LLM llm_nope (404).")
    with pytest.raises(RetellProblem) as no_flow:
        await versions.engine_version(Engine("conversation-flow", "conversation_flow_nope", 2))
    assert no_flow.value.message.startswith(
        "Retell has no version 2 of conversation_flow_nope (404)."
    )
    agents.fail_next("/get-retell-llm", 402)
    with pytest.raises(RetellProblem) as unpaid:
        await versions.engine_version(Engine("retell-llm", ENGINE))
    assert unpaid.value.kind == "payment"
