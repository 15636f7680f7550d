"""Which Retell account a workspace's calls go to: its own key, else the deployment's.

`RetellAccounts.of(team_id)` is the gateway of one workspace. It finds the key in force at each
call (the workspace's own, from `RetellKeys`, else `RETELL_API_KEY`), so call sites hold no
key and a key replaced in App Home applies to the next call. There is one SDK client per key,
made with `with_options(api_key=...)` from the one base client, so every account shares the
base client's connection pool. Without `ENCRYPTION_KEYS` nothing is looked up: a
single-workspace deployment talks to Retell exactly as before.
"""

from __future__ import annotations

import hashlib

from retell import AsyncRetell

from bot.agents import AgentDirectory
from bot.batches import RetellProblem
from bot.metrics import Metrics
from bot.retell import KeyCheck, RetellGateway, sdk_client
from bot.settings import Settings
from bot.store import Store
from bot.workspaces.keys import RetellKeys

NOT_CONNECTED = (
    "Retell is not connected to this workspace yet: an admin of this workspace connects Retell "
    "in the app's Home tab (open the app in Slack's sidebar, then **Connect Retell**)."
)
MAX_CLIENTS = 4096  # SDK clients kept, one per key; past this the cache starts over


class RetellAccounts:
    """The Retell account of each workspace, as gateways the workflow calls as before."""

    def __init__(
        self,
        base: AsyncRetell,
        *,
        keys: RetellKeys | None = None,
        default_key: str | None = None,
        metrics: Metrics | None = None,
        create_retries: int = 4,
    ) -> None:
        self._base = base
        self._keys = keys
        self._default_key = default_key or None
        self._metrics = metrics
        self._create_retries = create_retries
        self._clients: dict[str, AsyncRetell] = {}
        self._directories: dict[str, AgentDirectory] = {}
        self._deployment = RetellGateway(base, metrics=metrics, create_retries=create_retries)

    @classmethod
    def connect(
        cls, settings: Settings, store: Store, *, metrics: Metrics | None = None
    ) -> RetellAccounts:
        """From the settings: `RETELL_API_KEY` as the default, `ENCRYPTION_KEYS` for the
        workspaces' own keys (none looked up without it)."""
        default = settings.retell_api_key.get_secret_value() if settings.retell_api_key else ""
        base = sdk_client(
            api_key=default,
            base_url=settings.retell_base_url,
            timeout=settings.retell_timeout_seconds,
            max_retries=settings.retell_max_retries,
            metrics=metrics,
        )
        encryption = [key.get_secret_value() for key in settings.encryption_keys]
        keys = RetellKeys(store.engine, encryption) if encryption else None
        return cls(
            base,
            keys=keys,
            default_key=default,
            metrics=metrics,
            create_retries=settings.retell_max_retries,
        )

    @property
    def keys(self) -> RetellKeys | None:
        """The workspaces' own keys; None when `ENCRYPTION_KEYS` is not set."""
        return self._keys

    @property
    def has_default(self) -> bool:
        """Whether a workspace with no key of its own still has one (`RETELL_API_KEY`)."""
        return self._default_key is not None

    def of(self, team_id: str) -> RetellGateway:
        """The gateway of one workspace's Retell account."""
        if self._keys is None and self._default_key is not None:
            return self._deployment  # one account for all: exactly as before workspaces

        async def account() -> AsyncRetell:
            return self._client(await self.key_of(team_id))

        return RetellGateway(account, metrics=self._metrics, create_retries=self._create_retries)

    def agents(self, team_id: str) -> AgentDirectory:
        """Which agents of the workspace's account answer with which engine (kept briefly)."""
        directory = self._directories.get(team_id)
        if directory is None:
            if len(self._directories) >= MAX_CLIENTS:
                self._directories.clear()
            directory = self._directories[team_id] = AgentDirectory(self.of(team_id))
        return directory

    async def key_of(self, team_id: str) -> str:
        """The key in force for a workspace; `RetellProblem("not_connected")` when none."""
        own = await self._keys.key_for(team_id) if self._keys is not None else None
        key = own or self._default_key
        if key is None:
            raise RetellProblem("not_connected", NOT_CONNECTED)
        return key

    async def connected(self, team_id: str) -> bool:
        """Whether calls for this workspace have a key to go with."""
        if self.has_default:
            return True
        try:
            await self.key_of(team_id)
        except RetellProblem:
            return False
        return True

    async def budget_scope(self, team_id: str) -> str:
        """Which Retell account's request budget a workspace's follow-ups spend: a digest of
        its key (never the key itself), "" for the deployment's own."""
        if self._keys is None:
            return ""
        try:
            key = await self.key_of(team_id)
        except RetellProblem:
            return "none"
        if key == self._default_key:
            return ""
        return hashlib.sha256(key.encode()).hexdigest()[:16]

    def changed(self, team_id: str) -> None:
        """The workspace's key was connected, replaced or removed: forget what its old
        account told (the agents' drafts)."""
        self._directories.pop(team_id, None)

    def forget(self, team_id: str) -> None:
        """The workspace uninstalled: its key and what its account told, gone from memory."""
        self.changed(team_id)
        if self._keys is not None:
            self._keys.forget(team_id)

    async def check_key(self, key: str, *, timeout: float = 5.0) -> KeyCheck:
        """Whether Retell takes `key` (one cheap call): before a key is stored."""
        gateway = RetellGateway(self._base, metrics=self._metrics)
        return await gateway.check_key(key, timeout=timeout)

    @property
    def deployment(self) -> RetellGateway:
        """The gateway of `RETELL_API_KEY`'s account (the base client)."""
        return self._deployment

    async def close(self) -> None:
        """Close the base client, and with it the pool every account's client shares."""
        await self._base.close()

    def _client(self, key: str) -> AsyncRetell:
        client = self._clients.get(key)
        if client is None:
            if len(self._clients) >= MAX_CLIENTS:
                self._clients.clear()
            client = self._clients[key] = self._base.with_options(api_key=key)
        return client
