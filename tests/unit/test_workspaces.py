"""Distribution mode's pure parts: the scopes asked for, the authorize URL, signed states,
and the installation tables as slack-sdk defines them."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from sqlalchemy import MetaData, inspect
from sqlalchemy.ext.asyncio import create_async_engine

from bot.settings import Settings
from bot.store import Store, async_database_url
from bot.workspaces.installations import SCOPES, SignedStates
from bot.workspaces.oauth import authorization_url

ROOT = Path(__file__).resolve().parents[2]


def test_the_install_asks_for_exactly_the_manifests_bot_scopes() -> None:
    manifest = yaml.safe_load((ROOT / "manifest.yml").read_text())
    assert sorted(SCOPES) == sorted(manifest["oauth_config"]["scopes"]["bot"])


@pytest.mark.parametrize(
    ("api_url", "authorize"),
    [
        ("https://slack.com/api/", "https://slack.com/oauth/v2/authorize"),
        ("https://slack-gov.com/api/", "https://slack-gov.com/oauth/v2/authorize"),
        ("http://127.0.0.1:4000/api/", "http://127.0.0.1:4000/oauth/v2/authorize"),
    ],
)
def test_slacks_authorize_page_is_found_beside_its_web_api(api_url: str, authorize: str) -> None:
    assert authorization_url(api_url) == authorize


class MemoryStates:
    """A state store in memory (single-use), for `SignedStates` to wrap."""

    def __init__(self) -> None:
        self.issued: set[str] = set()

    async def async_issue(self, *args: object, **kwargs: object) -> str:
        state = f"s{len(self.issued)}"
        self.issued.add(state)
        return state

    async def async_consume(self, state: str) -> bool:
        if state in self.issued:
            self.issued.discard(state)
            return True
        return False


async def test_signed_states_refuse_what_the_bot_did_not_sign_and_are_single_use() -> None:
    inner = MemoryStates()
    states = SignedStates(inner, "state-secret")  # type: ignore[arg-type]
    state = await states.async_issue()
    raw = state.rpartition(".")[0]
    assert raw in inner.issued
    assert not await states.async_consume(raw), "unsigned: refused"
    assert not await states.async_consume(raw + ".0123456789abcdef0123456789abcdef")
    assert raw in inner.issued, "a refused state is not used up"
    assert await states.async_consume(state)
    assert not await states.async_consume(state), "single-use"


async def test_the_migrated_installation_tables_are_slack_sdks(tmp_path: Path) -> None:
    """Migration 0011 builds slack-sdk's tables with slack-sdk's own builders; this fails if
    an upgrade of slack-sdk changes them, which then needs a migration of its own."""
    from slack_sdk.oauth.installation_store.sqlalchemy import SQLAlchemyInstallationStore
    from slack_sdk.oauth.state_store.sqlalchemy import SQLAlchemyOAuthStateStore

    url = f"sqlite:///{tmp_path / 'bot.db'}"
    store = Store(create_async_engine(async_database_url(url)))
    try:
        await store.upgrade()
        async with store.engine.connect() as conn:
            migrated = await conn.run_sync(
                lambda sync: {
                    table: {c["name"] for c in inspect(sync).get_columns(table)}
                    for table in ("slack_installations", "slack_bots", "slack_oauth_states")
                }
            )
    finally:
        await store.close()
    expected = MetaData()
    SQLAlchemyInstallationStore.build_installations_table(expected, "slack_installations")
    SQLAlchemyInstallationStore.build_bots_table(expected, "slack_bots")
    SQLAlchemyOAuthStateStore.build_oauth_states_table(expected, "slack_oauth_states")
    assert migrated == {
        name: {column.name for column in table.columns} for name, table in expected.tables.items()
    }


def test_distribution_mode_is_many_workspaces_without_a_bot_token() -> None:
    many = Settings(
        _env_file=None,  # type: ignore[call-arg]
        slack_client_id="1.2",
        slack_client_secret="s",
        encryption_keys="",
    )
    one = Settings(_env_file=None, slack_bot_token="xoxb-1", slack_client_id="1.2")  # type: ignore[call-arg]
    assert many.distribution and not one.distribution
