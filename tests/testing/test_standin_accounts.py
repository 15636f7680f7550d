"""The Retell stand-in's accounts: each API key sees only its own engines and batches."""

from __future__ import annotations

from collections.abc import AsyncIterator

import aiohttp
import pytest
import retell
from retell import AsyncRetell

from bot.testing.retell import FakeRetell

DEFAULT_KEY = "key_default"
OTHER_KEY = "key_other_account"
LLM = "llm_theirs"


@pytest.fixture
async def fake() -> AsyncIterator[FakeRetell]:
    async with FakeRetell(api_key=DEFAULT_KEY, batch_seconds=5.0) as server:
        yield server


def sdk(fake: FakeRetell, key: str) -> AsyncRetell:
    return AsyncRetell(api_key=key, base_url=fake.base_url, max_retries=0)


async def test_a_batch_of_one_account_is_404_for_another(fake: FakeRetell) -> None:
    other = fake.add_account(OTHER_KEY)
    other.add_engine("retell-llm", LLM)
    other.add_definition(LLM, "tc_1", "Refund")
    theirs, ours = sdk(fake, OTHER_KEY), sdk(fake, DEFAULT_KEY)
    try:
        created = await theirs.tests.create_batch_test(
            response_engine={"type": "retell-llm", "llm_id": LLM},
            test_case_definition_ids=["tc_1"],
        )
        batch_id = created.test_case_batch_job_id
        assert (await theirs.tests.get_batch_test(batch_id)).total_count == 1
        with pytest.raises(retell.NotFoundError):
            await ours.tests.get_batch_test(batch_id)
        with pytest.raises(retell.NotFoundError):  # the engine is theirs too
            await ours.tests.list_test_case_definitions(type="retell-llm", llm_id=LLM)
        assert batch_id in other.batches and batch_id not in fake.batches
        assert other.count("/create-batch-test") == 1 and fake.count("/create-batch-test") == 0
        assert other.base_url == fake.base_url
    finally:
        await theirs.close()
        await ours.close()


async def test_get_concurrency_tells_a_good_key_from_a_refused_one(fake: FakeRetell) -> None:
    fake.add_account(OTHER_KEY)
    for key in (DEFAULT_KEY, OTHER_KEY):
        client = sdk(fake, key)
        try:
            answer = await client.concurrency.retrieve()
            assert answer.concurrency_limit == 20
        finally:
            await client.close()
    stranger = sdk(fake, "key_nobody")
    try:
        with pytest.raises(retell.AuthenticationError):
            await stranger.concurrency.retrieve()
    finally:
        await stranger.close()


async def test_control_endpoints_add_and_seed_an_account(fake: FakeRetell) -> None:
    async with aiohttp.ClientSession(fake.base_url) as http:
        added = await http.post("/_control/account", json={"api_key": OTHER_KEY})
        assert added.status == 200
        seeded = await http.post(
            "/_control/seed",
            params={"account": OTHER_KEY},
            json={"engine_id": LLM, "count": 3, "versions": 1},
        )
        assert seeded.status == 200
        assert (await seeded.json())["ids"] == ["tc_1", "tc_2", "tc_3"]
        again = await http.post("/_control/account", json={"api_key": OTHER_KEY})
        assert again.status == 400
    theirs = sdk(fake, OTHER_KEY)
    try:
        page = await theirs.tests.list_test_case_definitions(type="retell-llm", llm_id=LLM)
        assert [item.test_case_definition_id for item in page.items] == ["tc_1", "tc_2", "tc_3"]
    finally:
        await theirs.close()
    with pytest.raises(KeyError):
        fake.account("key_nobody")
    assert fake.account(OTHER_KEY) is not fake and fake.account(DEFAULT_KEY) is fake
