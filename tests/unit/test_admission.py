"""Commands kept before the ack: group commits, duplicates, and a database slow or down."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from datetime import timedelta

import pytest
from sqlalchemy import event, select

from bot.admission import Admission, CommandBook
from bot.store import AckedCommand, Store, create_ack_engine, create_engine, utcnow


def command(key: str, text: str = "llm_abc tc_1") -> AckedCommand:
    now = utcnow()
    return AckedCommand(
        request_key=key,
        team_id="T1",
        channel_id="C1",
        user_id="U1",
        response_url=None,
        text=text,
        received_at=now,
        claimed_until=now + timedelta(seconds=45),
    )


@pytest.fixture
async def store(database_url: str) -> AsyncIterator[Store]:
    store = Store(create_engine(database_url), ack_engine=create_ack_engine(database_url))
    await store.upgrade()
    try:
        yield store
    finally:
        await store.close()


async def kept(store: Store) -> dict[str, str]:
    async with store.engine.connect() as connection:
        rows = await connection.execute(select(AckedCommand.request_key, AckedCommand.text))
        return {key: text for key, text in rows}


async def test_a_burst_of_commands_is_written_in_a_few_transactions(store: Store) -> None:
    transactions = 0

    @event.listens_for(store._ack_engine.sync_engine, "commit")  # type: ignore[union-attr]
    def count(_connection: object) -> None:
        nonlocal transactions
        transactions += 1

    book = CommandBook(store, patience=10)
    admissions = await asyncio.gather(*(book.keep(command(f"t{n}")) for n in range(200)))

    assert set(admissions) == {Admission.KEPT}
    assert len(await kept(store)) == 200
    assert transactions <= 3  # the first alone, then everyone who arrived meanwhile


async def test_a_slack_retry_of_a_kept_command_changes_nothing(store: Store) -> None:
    book = CommandBook(store, patience=10)
    first, again, together = (
        await book.keep(command("t1", "llm_abc tc_1")),
        await book.keep(command("t1", "llm_abc tc_2")),
        await asyncio.gather(book.keep(command("t2")), book.keep(command("t2"))),
    )

    assert first is again is Admission.KEPT
    assert set(together) == {Admission.KEPT}
    assert await kept(store) == {"t1": "llm_abc tc_1", "t2": "llm_abc tc_1"}


class SlowRecords:
    """A database that takes `seconds` per write (no wire: the delay is the point)."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.written: list[str] = []

    async def record_commands(self, commands: Sequence[AckedCommand]) -> None:
        await asyncio.sleep(self.seconds)
        self.written.extend(c.request_key for c in commands)


async def test_a_slow_database_lets_the_command_go_on_unkept_and_the_write_still_lands() -> None:
    records = SlowRecords(seconds=0.5)
    book = CommandBook(records, patience=0.05)
    loop = asyncio.get_running_loop()

    asked = loop.time()
    admission = await book.keep(command("t1"))
    answered_in = loop.time() - asked

    assert admission is Admission.UNKEPT
    assert answered_in < records.seconds  # the ack did not wait for the database
    await book.close()
    assert records.written == ["t1"]


@pytest.mark.parametrize(
    "unreachable",
    ["sqlite:////nonexistent/directory/bot.db", "postgresql://postgres@127.0.0.1:9/closed"],
    ids=["sqlite", "postgresql"],
)
async def test_an_unreachable_database_refuses_every_command_of_the_group(
    unreachable: str,
) -> None:
    store = Store(create_engine(unreachable))
    book = CommandBook(store, patience=10)
    try:
        admissions = await asyncio.gather(*(book.keep(command(f"t{n}")) for n in range(5)))
    finally:
        await store.close()

    assert set(admissions) == {Admission.REFUSED}


class BrokenRecords:
    async def record_commands(self, commands: Sequence[AckedCommand]) -> None:
        raise RuntimeError("a bug, not the database")


async def test_a_bug_in_the_write_leaves_the_command_unkept_and_logs_it(
    caplog: pytest.LogCaptureFixture,
) -> None:
    book = CommandBook(BrokenRecords(), patience=10)

    assert await book.keep(command("t1")) is Admission.UNKEPT
    assert "command not kept: RuntimeError('a bug, not the database')" in caplog.text
