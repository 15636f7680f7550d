"""Logging set-up: plain text or one JSON object per line, with secrets masked everywhere.

Lines logged while the workflow works on a run carry that run's id and batch id (`about_run`),
so `LOG_FORMAT=json` lets an operator follow one run across replicas with a single filter.
"""

from __future__ import annotations

import contextlib
import json
import logging
import sys
from collections.abc import Iterable, Iterator
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import Protocol, TextIO

from bot.text import printable


class LoggedRun(Protocol):
    id: int
    batch_id: str | None


_current_run: ContextVar[LoggedRun | None] = ContextVar("current_run", default=None)


@contextlib.contextmanager
def about_run(run: LoggedRun) -> Iterator[None]:
    """Tag every log line written inside the block (in this task) with the run and its batch.

    The ids are read when a line is written, so a batch id learnt midway shows from then on.
    """
    token = _current_run.set(run)
    try:
        yield
    finally:
        _current_run.reset(token)


class RunFields(logging.Filter):
    """Copy the current run's ids onto each record (`run_id`, `batch_id`)."""

    def filter(self, record: logging.LogRecord) -> bool:
        run = _current_run.get()
        if run is not None:
            record.run_id = run.id
            if run.batch_id is not None:
                record.batch_id = run.batch_id
        return True


class SecretMask(logging.Filter):
    """Replace any configured secret that slips into a log record with `***`."""

    def __init__(self, secrets: Iterable[str]) -> None:
        super().__init__()
        self._secrets = sorted({s for s in secrets if len(s) >= 6}, key=len, reverse=True)

    def mask(self, text: str) -> str:
        for secret in self._secrets:
            text = text.replace(secret, "***")
        return text

    def filter(self, record: logging.LogRecord) -> bool:
        if self._secrets:
            record.msg = self.mask(record.getMessage())
            record.args = None
            if record.exc_info and record.exc_info[1] is not None:
                record.exc_text = self.mask(logging.Formatter().formatException(record.exc_info))
        return True


class TextFormatter(logging.Formatter):
    """One record per line, whatever text from outside it carries.

    Retell's error messages and ids reach log lines; a newline in one forged a second log line
    and an ANSI escape coloured the operator's terminal. Control characters in the message are
    written as escapes, and a traceback's lines are indented under their record, so every
    line that starts at the margin is a real record.
    """

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        record.message = printable(record.getMessage())
        record.asctime = self.formatTime(record, self.datefmt)
        line = self.formatMessage(record)
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        stack = self.formatStack(record.stack_info) if record.stack_info else None
        for block in (record.exc_text, stack):
            if block:
                line += "".join(f"\n    {printable(part)}" for part in block.splitlines())
        return line


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key in ("run_id", "batch_id"):
            if hasattr(record, key):
                entry[key] = getattr(record, key)
        if record.exc_text or record.exc_info:
            entry["exception"] = record.exc_text or self.formatException(record.exc_info)  # type: ignore[arg-type]
        return json.dumps(entry, ensure_ascii=False)


def configure(
    level: str, fmt: str, secrets: Iterable[str] = (), *, stream: TextIO | None = None
) -> None:
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.addFilter(RunFields())
    handler.addFilter(SecretMask(secrets))
    if fmt == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(TextFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    for noisy in ("apscheduler", "aiohttp.access", "httpx", "httpcore", "alembic.runtime.plugins"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))
