"""RetellKeys over a migrated database (SQLite and PostgreSQL): encrypted at rest, cached
briefly, unreadable tokens treated as not connected, rotation to a new first key."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator

import pytest
from cryptography.fernet import Fernet
from retell import AsyncRetell
from sqlalchemy import select

from bot.followup import BatchRefresher, Followed
from bot.runs.sweep import budget_floors
from bot.store import Store, Workspace, create_engine
from bot.suite import Engine
from bot.testing.retell import FakeRetell
from bot.workspaces.accounts import RetellAccounts
from bot.workspaces.keys import RetellKeys

OLD, NEW = Fernet.generate_key().decode(), Fernet.generate_key().decode()
TEAM, OTHER_TEAM = "T0001", "T0002"
SECRET = "key_5up3r53cr3t_abcd"


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
async def store(database_url: str) -> AsyncIterator[Store]:
    opened = Store(create_engine(database_url))
    await opened.upgrade()
    yield opened
    await opened.close()


async def stored_tokens(store: Store) -> list[str | None]:
    async with store.engine.connect() as conn:
        return list((await conn.execute(select(Workspace.retell_key))).scalars())


async def test_a_key_is_stored_encrypted_and_read_back_with_its_hint(store: Store) -> None:
    keys = RetellKeys(store.engine, [OLD])
    assert await keys.key_for(TEAM) is None and await keys.hint(TEAM) is None
    await keys.connect(TEAM, SECRET, user_id="U0001")
    assert await keys.key_for(TEAM) == SECRET
    assert await keys.key_for(OTHER_TEAM) is None
    hint = await keys.hint(TEAM)
    assert hint is not None and (hint.hint, hint.by) == ("abcd", "U0001") and hint.at is not None
    [token] = await stored_tokens(store)
    assert token is not None and SECRET not in token and "abcd" not in token
    assert Fernet(OLD.encode()).decrypt(token.encode()).decode() == SECRET

    await keys.connect(TEAM, "key_replaced_wxyz", user_id="U0002")  # an upsert: one row
    assert await keys.key_for(TEAM) == "key_replaced_wxyz"
    assert len(await stored_tokens(store)) == 1
    assert await keys.remove(TEAM) is True
    assert await keys.key_for(TEAM) is None and await keys.hint(TEAM) is None
    assert await keys.remove(TEAM) is False


async def test_another_replicas_change_is_seen_within_the_cache_ttl(store: Store) -> None:
    clock = Clock()
    here = RetellKeys(store.engine, [OLD], ttl=5.0, clock=clock)
    there = RetellKeys(store.engine, [OLD], ttl=5.0, clock=clock)
    assert await here.key_for(TEAM) is None
    await there.connect(TEAM, SECRET, user_id="U0001")
    assert await here.key_for(TEAM) is None, "cached: no query per call"
    clock.now += 5.1
    assert await here.key_for(TEAM) == SECRET
    await here.remove(TEAM)
    assert await here.key_for(TEAM) is None, "a change in this process is seen at once"


async def test_a_token_no_key_decrypts_is_not_connected_and_logged_without_it(
    store: Store, caplog: pytest.LogCaptureFixture
) -> None:
    await RetellKeys(store.engine, [OLD]).connect(TEAM, SECRET, user_id="U0001")
    stranger = RetellKeys(store.engine, [NEW])
    with caplog.at_level(logging.WARNING, logger="bot.workspaces.keys"):
        assert await stranger.key_for(TEAM) is None
        assert await stranger.hint(TEAM) is None
    assert "none of ENCRYPTION_KEYS" in caplog.text
    [token] = await stored_tokens(store)
    assert SECRET not in caplog.text and str(token) not in caplog.text
    accounts = RetellAccounts(unused_client(), keys=stranger, default_key=None)
    assert await accounts.connected(TEAM) is False
    await accounts.close()


async def test_rotate_re_encrypts_every_key_with_the_new_first_key(store: Store) -> None:
    old = RetellKeys(store.engine, [OLD])
    await old.connect(TEAM, SECRET, user_id="U0001")
    await old.connect(OTHER_TEAM, "key_other_9876", user_id="U0002")
    both = RetellKeys(store.engine, [NEW, OLD])
    assert await both.key_for(TEAM) == SECRET, "old rows still decrypt under the new list"
    assert await both.rotate() == 2
    only_new = RetellKeys(store.engine, [NEW])
    assert await only_new.key_for(TEAM) == SECRET
    assert await only_new.key_for(OTHER_TEAM) == "key_other_9876"
    assert await RetellKeys(store.engine, [OLD]).key_for(TEAM) is None
    assert all(SECRET not in str(token) for token in await stored_tokens(store))


async def test_budget_scopes_tell_accounts_apart_without_the_key(store: Store) -> None:
    keys = RetellKeys(store.engine, [OLD])
    await keys.connect(TEAM, SECRET, user_id="U0001")
    accounts = RetellAccounts(unused_client(), keys=keys, default_key="key_deployment")
    own, shared = await accounts.budget_scope(TEAM), await accounts.budget_scope(OTHER_TEAM)
    assert own and shared == "" and SECRET not in own
    assert await accounts.key_of(TEAM) == SECRET
    assert await accounts.key_of(OTHER_TEAM) == "key_deployment"
    await accounts.close()


def unused_client() -> AsyncRetell:
    """A client these tests never send with (nothing listens on port 9)."""
    return AsyncRetell(api_key="unused", base_url="http://127.0.0.1:9")


async def test_follow_ups_list_each_accounts_batches_with_its_own_key(store: Store) -> None:
    """Two workspaces on one engine id, one with its own key: one list call per account, each
    seeing only its own batches (a single list for both would miss the other's)."""
    async with FakeRetell(api_key="key_deployment", batch_seconds=60) as retell:
        theirs = retell.add_account(SECRET)
        engine = {"type": "retell-llm", "llm_id": "llm_abc"}
        for account in (retell, theirs):
            account.add_engine("retell-llm", "llm_abc")
            account.add_definition("llm_abc", "tc_1", "Case")
        ours_batch = retell.create_batch_directly(engine, ["tc_1"])
        their_batch = theirs.create_batch_directly(engine, ["tc_1"])
        keys = RetellKeys(store.engine, [OLD])
        await keys.connect(TEAM, SECRET, user_id="U0001")
        base = AsyncRetell(api_key="key_deployment", base_url=retell.base_url, max_retries=0)
        accounts = RetellAccounts(base, keys=keys, default_key="key_deployment")
        refresher = BatchRefresher(accounts)
        found = await refresher.refresh(
            [
                Followed(their_batch, Engine.from_id("llm_abc"), due=True, team_id=TEAM),
                Followed(ours_batch, Engine.from_id("llm_abc"), due=True, team_id=OTHER_TEAM),
            ]
        )
        listed = await refresher.refresh(  # not due themselves: only their engines' lists
            [
                Followed(their_batch, Engine.from_id("llm_abc"), due=False, team_id=TEAM),
                Followed(ours_batch, Engine.from_id("llm_abc"), due=False, team_id=OTHER_TEAM),
            ]
        )
        await accounts.close()
    assert set(found.batches) == {ours_batch, their_batch} and not found.problems
    assert retell.count("/get-batch-test") == 1 and theirs.count("/get-batch-test") == 1
    assert set(listed.batches) == {ours_batch, their_batch}
    assert retell.count("/v2/list-batch-tests") == 1 and theirs.count("/v2/list-batch-tests") == 1


def test_each_retell_account_has_a_follow_up_budget_of_its_own() -> None:
    a, b = Engine.from_id("llm_a"), Engine.from_id("llm_b")
    floors = budget_floors(
        [("", a, 600), ("", a, 600), ("", b, 10), ("k1", a, 5), ("k2", b, 2_500)],
        per_minute=60.0,
    )
    # The deployment's key: llm_a's 1,200 batches take 2 pages, llm_b 1: 3 a minute -> 3 s.
    assert floors == {"": 3.0, "k1": 1.0, "k2": 3.0}
