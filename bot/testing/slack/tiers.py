"""Slack's published rate-limit tiers, as token buckets per workspace (or channel) and method.

Slack limits the Web API "per API method per app per workspace" in tiers: Tier 1 1+ calls a
minute, Tier 2 20+, Tier 3 50+ ("sporadic bursts are welcome"), Tier 4 100+ ("generous burst
behavior"); chat.postMessage is special, about one message a second per channel with short
bursts. A call beyond the allowance gets HTTP 429, ``Retry-After`` (whole seconds) and
``{"ok": false, "error": "ratelimited"}``.

Each `Bucket` is a token bucket: it holds up to `burst` calls and refills at `per_minute`, so a
quiet workspace can spend `burst` at once and then `per_minute` a minute. A refused call does not
use the allowance. Slack does not publish burst sizes; the defaults here (half a minute's worth
for Tiers 2-4) are this stand-in's choice, and every number can be overridden.

Off unless asked for: ``FakeSlack(rate_limits=SlackTiers())``, `FakeSlack.set_rate_limits`,
``POST /_control/rate_limits`` or ``python -m bot.testing.slack --rate-limits slack``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from types import MappingProxyType
from typing import Any, Literal

Scope = Literal["workspace", "channel"]


@dataclass(frozen=True)
class Bucket:
    """`per_minute` calls a minute sustained, up to `burst` at once, per workspace or channel.

    ``per="channel"`` counts each conversation (for response_url: each URL) on its own.
    """

    per_minute: float
    burst: float
    per: Scope = "workspace"

    def __post_init__(self) -> None:
        if self.per_minute <= 0:
            raise ValueError("per_minute must be positive")
        if self.burst < 1:
            raise ValueError("burst must be at least 1")
        if self.per not in ("workspace", "channel"):
            raise ValueError("per must be 'workspace' or 'channel'")

    @property
    def per_second(self) -> float:
        return self.per_minute / 60

    def scaled(self, factor: float) -> Bucket:
        return replace(self, per_minute=self.per_minute * factor, burst=self.burst * factor)

    def to_json(self) -> dict[str, Any]:
        return {"per_minute": self.per_minute, "burst": self.burst, "per": self.per}

    @classmethod
    def from_json(cls, data: Any) -> Bucket:
        if not isinstance(data, Mapping):
            raise ValueError(f"a bucket is an object, not {data!r}")
        unknown = set(data) - {"per_minute", "burst", "per"}
        if unknown:
            raise ValueError(f"unknown bucket fields: {sorted(unknown)}")
        return cls(
            per_minute=float(data["per_minute"]),
            burst=float(data.get("burst", 1)),
            per=data.get("per", "workspace"),
        )


TIER_1 = Bucket(per_minute=1, burst=2)
TIER_2 = Bucket(per_minute=20, burst=10)
TIER_3 = Bucket(per_minute=50, burst=25)
TIER_4 = Bucket(per_minute=100, burst=50)
# chat.postMessage: "one message per second per channel", "short bursts >1 allowed".
POST_MESSAGE = Bucket(per_minute=60, burst=4, per="channel")
# response_url posts follow incoming webhooks (1 a second, short bursts), per URL; the five
# uses a URL takes are enforced apart, with or without rate limits.
RESPONSE_URL = Bucket(per_minute=60, burst=4, per="channel")

# The methods FakeSlack serves, with the tier Slack's method reference gives them. "Special"
# methods other than chat.postMessage (auth.test, chat.getPermalink) are modelled as Tier 4.
SLACK_METHOD_TIERS: Mapping[str, tuple[Bucket, ...]] = MappingProxyType(
    {
        "auth.test": (TIER_4,),
        "chat.postMessage": (POST_MESSAGE,),
        "chat.update": (TIER_3,),
        "chat.delete": (TIER_3,),
        "chat.postEphemeral": (TIER_4,),
        "chat.getPermalink": (TIER_4,),
        "users.info": (TIER_4,),
        "conversations.join": (TIER_3,),
        "conversations.info": (TIER_3,),
        "conversations.open": (TIER_3,),
        "conversations.history": (TIER_3,),
        "conversations.replies": (TIER_3,),
        "views.open": (TIER_4,),
        "views.publish": (TIER_4,),
        "views.update": (TIER_4,),
        "apps.connections.open": (TIER_1,),
        "files.getUploadURLExternal": (TIER_4,),
        "files.completeUploadExternal": (TIER_4,),
        "response_url": (RESPONSE_URL,),
    }
)


def _buckets(value: Bucket | tuple[Bucket, ...] | list[Bucket]) -> tuple[Bucket, ...]:
    return (value,) if isinstance(value, Bucket) else tuple(value)


@dataclass(frozen=True)
class SlackTiers:
    """Which methods are limited, and how: Slack's published tiers unless told otherwise.

    ``SlackTiers()`` limits every method as Slack does; ``SlackTiers.only({"chat.update":
    Bucket(600, burst=2)})`` limits just those; `override` changes some and keeps the rest;
    `scaled` multiplies every rate and burst (a benchmark compressing time). Methods not
    listed are not limited. `whole_seconds` sends ``Retry-After`` in whole seconds, at least 1,
    as Slack does; False sends the exact wait ("0.083"), for tests that cannot wait seconds.
    """

    methods: Mapping[str, tuple[Bucket, ...]] = field(default_factory=lambda: SLACK_METHOD_TIERS)
    whole_seconds: bool = True

    def __post_init__(self) -> None:
        normalised = {name: _buckets(value) for name, value in self.methods.items()}
        for name, buckets in normalised.items():
            if not buckets or not all(isinstance(b, Bucket) for b in buckets):
                raise ValueError(f"{name}: give one Bucket or a tuple of them")
        object.__setattr__(self, "methods", MappingProxyType(normalised))

    @classmethod
    def only(
        cls,
        methods: Mapping[str, Bucket | tuple[Bucket, ...]],
        *,
        whole_seconds: bool = True,
    ) -> SlackTiers:
        """Limit only these methods."""
        return cls({name: _buckets(value) for name, value in methods.items()}, whole_seconds)

    def override(self, methods: Mapping[str, Bucket | tuple[Bucket, ...]]) -> SlackTiers:
        """These methods limited so, the others as before."""
        merged = {**self.methods, **{name: _buckets(value) for name, value in methods.items()}}
        return replace(self, methods=merged)

    def scaled(self, factor: float) -> SlackTiers:
        """Every rate and burst multiplied by `factor` (time compressed `factor` times)."""
        if factor <= 0:
            raise ValueError("factor must be positive")
        return replace(
            self,
            methods={n: tuple(b.scaled(factor) for b in bs) for n, bs in self.methods.items()},
        )

    def retry_after(self, seconds: float) -> str:
        """The ``Retry-After`` header for a wait of `seconds`."""
        if self.whole_seconds:
            return str(max(1, math.ceil(seconds - 1e-9)))
        return f"{max(seconds, 0.001):.3f}"

    def to_json(self) -> dict[str, Any]:
        return {
            "methods": {n: [b.to_json() for b in bs] for n, bs in self.methods.items()},
            "whole_seconds": self.whole_seconds,
        }

    @classmethod
    def from_json(cls, data: Any) -> SlackTiers:
        """What ``/_control/rate_limits`` and ``--rate-limits`` accept.

        ``"slack"`` (or ``{}``): Slack's tiers. An object may say ``"base": "slack"`` (the
        default) or ``"none"`` (start from no limits), ``"methods": {name: bucket or [buckets]}``
        to override (a bucket: ``{"per_minute": 50, "burst": 25, "per": "workspace"}``),
        ``"scale": 10`` and ``"whole_seconds": false``.
        """
        if data == "slack":
            data = {}
        if not isinstance(data, Mapping):
            raise ValueError('rate limits are "slack" or an object')
        unknown = set(data) - {"base", "methods", "scale", "whole_seconds"}
        if unknown:
            raise ValueError(f"unknown rate-limit fields: {sorted(unknown)}")
        base = data.get("base", "slack")
        if base not in ("slack", "none"):
            raise ValueError('base must be "slack" or "none"')
        raw = data.get("methods", {})
        if not isinstance(raw, Mapping):
            raise ValueError("methods must be an object")
        methods = {
            str(name): tuple(
                Bucket.from_json(item) for item in (value if isinstance(value, list) else [value])
            )
            for name, value in raw.items()
        }
        whole = data.get("whole_seconds", True)
        if not isinstance(whole, bool):
            raise ValueError("whole_seconds must be true or false")
        tiers = cls({} if base == "none" else SLACK_METHOD_TIERS, whole).override(methods)
        scale = data.get("scale")
        return tiers if scale is None else tiers.scaled(float(scale))


@dataclass
class _Level:
    tokens: float
    at: float


@dataclass
class TierMeter:
    """The buckets' levels under one `SlackTiers`, keyed by method, bucket and team/channel."""

    tiers: SlackTiers
    _levels: dict[tuple[str, int, str], _Level] = field(default_factory=dict)

    def take(self, method: str, team_id: str, channel: str | None, now: float) -> float | None:
        """Spend one call of `method` now; None if allowed, else seconds until it would be.

        Every bucket of the method must have room; none is spent unless all do.
        """
        buckets = self.tiers.methods.get(method)
        if not buckets:
            return None
        levels: list[_Level] = []
        wait = 0.0
        for index, bucket in enumerate(buckets):
            key = team_id if bucket.per == "workspace" else f"{team_id}/{channel or '-'}"
            level = self._levels.get((method, index, key))
            if level is None:
                level = self._levels[(method, index, key)] = _Level(bucket.burst, now)
            level.tokens = min(bucket.burst, level.tokens + (now - level.at) * bucket.per_second)
            level.at = now
            if level.tokens < 1 - 1e-9:
                wait = max(wait, (1 - level.tokens) / bucket.per_second)
            levels.append(level)
        if wait > 0:
            return wait
        for level in levels:
            level.tokens -= 1
        return None
