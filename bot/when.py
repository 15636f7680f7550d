"""`<when>` of `schedule add`: the presets and cron expressions of SPEC §3 as APScheduler triggers.

Pure: no I/O, the time zone is passed in (the creator's, from Slack). Cron expressions are parsed
by APScheduler's own `CronTrigger.from_crontab`; the presets only map onto its cron and interval
triggers. Triggers are stateful (`next()` advances them), so a `When` builds a fresh one each time
it is asked.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from apscheduler.abc import Trigger
from apscheduler.triggers.cron import CronTrigger
from apscheduler.triggers.interval import IntervalTrigger

WHEN_FORMS = (
    "a 5-field cron expression (`0 9 * * mon-fri`), `hourly`, `daily HH:MM`, `weekdays HH:MM`, "
    "`weekly <mon..sun> HH:MM` or `every <N>m` / `every <N>h`"
)
# How many upcoming firings are looked at to find the shortest gap of a cron expression: enough
# to cover a day of minute-level fields and the irregular gaps of day-of-month lists.
GAP_SAMPLE = 400
NEXT_SHOWN = 3
MAX_EVERY_MINUTES = 7 * 24 * 60

_DAYS = {
    "mon": "Monday",
    "tue": "Tuesday",
    "wed": "Wednesday",
    "thu": "Thursday",
    "fri": "Friday",
    "sat": "Saturday",
    "sun": "Sunday",
}
_DAY_ALIASES = {name.lower(): key for key, name in _DAYS.items()} | {
    "tues": "tue",
    "thur": "thu",
    "thurs": "thu",
}
_CLOCK = re.compile(r"(?P<hour>[0-9]{1,2}):(?P<minute>[0-9]{2})")
_EVERY = re.compile(r"every\s+(?P<n>[0-9]{1,6})\s*(?P<unit>m|min|mins|minutes?|h|hr|hrs|hours?)")


class WhenError(ValueError):
    """`<when>` that cannot be scheduled; the message says why, for the user."""


@dataclass(frozen=True, slots=True)
class When:
    """A parsed `<when>`: its words for people, and a factory of fresh triggers."""

    text: str
    words: str
    timezone: str
    _build: Callable[[datetime], Trigger]

    def trigger(self, *, start: datetime | None = None) -> Trigger:
        """A new trigger whose first firing is at or after `start` (default: now)."""
        return self._build(start or datetime.now(UTC))

    def next_fires(
        self, count: int = NEXT_SHOWN, *, after: datetime | None = None
    ) -> list[datetime]:
        """The next `count` firings in the schedule's time zone (fewer when it ends)."""
        trigger = self.trigger(start=after)
        fires: list[datetime] = []
        while len(fires) < count and (fire := trigger.next()) is not None:
            fires.append(fire.astimezone(ZoneInfo(self.timezone)))
        return fires

    def shortest_gap(self, *, after: datetime | None = None) -> timedelta | None:
        """The shortest time between two firings among the next few hundred; None if < 2 fire."""
        trigger = self.trigger(start=after)
        previous = trigger.next()
        shortest: timedelta | None = None
        for _ in range(GAP_SAMPLE):
            fire = trigger.next()
            if previous is None or fire is None:
                break
            gap = fire.astimezone(UTC) - previous.astimezone(
                UTC
            )  # wall-clock minus is wrong at DST
            shortest = gap if shortest is None else min(shortest, gap)
            previous = fire
        return shortest


def zone(name: str | None) -> str:
    """A time zone name Python knows; UTC for anything else (Slack users without one)."""
    if name:
        try:
            ZoneInfo(name)
        except (ZoneInfoNotFoundError, ValueError):
            return "UTC"
        return name
    return "UTC"


def parse_when(text: str, timezone: str, *, min_interval: timedelta) -> When:
    """`text` as a `When` in `timezone`, or `WhenError` saying what is wrong with it.

    Refuses expressions that cannot be parsed, that never fire, and that fire more often than
    `min_interval` (SCHEDULE_MIN_INTERVAL_MINUTES).
    """
    when = read_when(text, timezone)
    cleaned = when.text
    if not when.next_fires(1):
        raise WhenError(f"`{cleaned}` never fires: no date matches it. Check the day and month.")
    gap = when.shortest_gap()
    if gap is not None and gap < min_interval:
        raise WhenError(
            f"`{cleaned}` would run every {_span(gap)}; the shortest allowed recurrence is "
            f"{_span(min_interval)} (SCHEDULE_MIN_INTERVAL_MINUTES)."
        )
    return when


def read_when(text: str, timezone: str) -> When:
    """`text` as a `When`, checking only that it parses: for showing a stored schedule."""
    tz = zone(timezone)
    cleaned = " ".join(text.split())
    return _preset(cleaned.lower(), cleaned, tz) or _cron(cleaned, tz)


def _preset(lowered: str, text: str, tz: str) -> When | None:
    words = lowered.split(" ")
    head = words[0]
    if lowered == "hourly":
        return _cron_when(text, "every hour, on the hour", tz, minute=0)
    if head in ("daily", "weekdays") and len(words) == 2:
        hour, minute = _clock(words[1], text)
        days = "mon-fri" if head == "weekdays" else "*"
        label = "every weekday" if head == "weekdays" else "every day"
        return _cron_when(
            text,
            f"{label} at {hour:02d}:{minute:02d}",
            tz,
            day_of_week=days,
            hour=hour,
            minute=minute,
        )
    if head == "weekly" and len(words) == 3:
        day = _DAY_ALIASES.get(words[1]) or (words[1][:3] if words[1][:3] in _DAYS else None)
        if day is None or not _DAYS[day].lower().startswith(words[1]):
            raise WhenError(
                f"`{words[1]}` in `{text}` is not a day of the week; use `mon`, `tue`, `wed`, "
                "`thu`, `fri`, `sat` or `sun`."
            )
        hour, minute = _clock(words[2], text)
        return _cron_when(
            text,
            f"every {_DAYS[day]} at {hour:02d}:{minute:02d}",
            tz,
            day_of_week=day,
            hour=hour,
            minute=minute,
        )
    if head in ("hourly", "daily", "weekdays", "weekly"):
        example = {"hourly": "hourly", "weekly": "weekly mon 09:00"}.get(head, f"{head} 09:00")
        raise WhenError(f"`{text}` is not a schedule; write it like `{example}`.")
    if head == "every":
        match = _EVERY.fullmatch(lowered)
        if match is None:
            raise WhenError(f"`{text}` is not a schedule; write it like `every 30m` or `every 2h`.")
        count = int(match["n"])
        minutes = count * (60 if match["unit"].startswith("h") else 1)
        if not 1 <= minutes <= MAX_EVERY_MINUTES:
            raise WhenError(f"`{text}`: `every` takes 1 minute up to 7 days (`every 168h`).")
        every = timedelta(minutes=minutes)
        return When(
            text,
            f"every {_span(every)}",
            tz,
            lambda start: IntervalTrigger(minutes=minutes, start_time=_next_minute(start) + every),
        )
    return None


def _cron_when(text: str, words: str, tz: str, **fields: object) -> When:
    def build(start: datetime) -> Trigger:
        return CronTrigger(**fields, timezone=tz, start_time=_local(start, tz))  # type: ignore[arg-type]

    return When(text, words, tz, build)


def _cron(text: str, tz: str) -> When:
    if len(text.split(" ")) != 5:
        raise WhenError(f"`{text}` is not a schedule: use {WHEN_FORMS}.")
    try:
        CronTrigger.from_crontab(text, timezone=tz)
    except ValueError as exc:
        raise WhenError(f"`{text}` is not a valid cron expression: {exc}.") from None

    def build(start: datetime) -> Trigger:
        return CronTrigger.from_crontab(text, timezone=tz, start_time=_local(start, tz))

    return When(text, f"cron `{text}`", tz, build)


def _local(moment: datetime, tz: str) -> datetime:
    """`moment` in the trigger's own zone.

    APScheduler 4.0.0a6's `CronTrigger` reads a start time's clock fields as if they were in the
    trigger's zone: started at 08:36 UTC, `daily 09:00` in Europe/Berlin (09:36 there) first
    fired at 09:00 Berlin, already past, so a new schedule fired at once; `daily 07:00` in New
    York (03:36 there) skipped to tomorrow.
    """
    return moment.astimezone(ZoneInfo(tz))


def _next_minute(moment: datetime) -> datetime:
    """Intervals count from a whole minute, so their firings read as `10:15`, not `10:14:37`."""
    return moment.replace(second=0, microsecond=0) + timedelta(minutes=1)


def _clock(value: str, text: str) -> tuple[int, int]:
    match = _CLOCK.fullmatch(value)
    if match is None or int(match["hour"]) > 23 or int(match["minute"]) > 59:
        raise WhenError(
            f"`{value}` in `{text}` is not a time of day; use 24-hour `HH:MM`, e.g. `09:00`."
        )
    return int(match["hour"]), int(match["minute"])


def _span(delta: timedelta) -> str:
    minutes = round(delta.total_seconds() / 60, 2)
    if minutes >= 60 and minutes % 60 == 0:
        hours = int(minutes // 60)
        return f"{hours} hour" if hours == 1 else f"{hours} hours"
    shown = int(minutes) if minutes == int(minutes) else minutes
    return f"{shown} minute" if shown == 1 else f"{shown} minutes"
