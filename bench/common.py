"""What the benchmarks share: the stand-ins as separate processes, load, statistics, tables.

Every benchmark in bench/ measures the real server (`retell-bot serve`, started with
`bot.testing.process.BotProcess`) on loopback, with the fakes of Slack and Retell in their own
processes so that their CPU is not the bot's (nor the load generator's). The conventions:

- a benchmark is a module `bench/<name>.py` exposing `main(argv) -> int` (sync or async), taking
  `--smoke` for a seconds-long version, printing its results with `print_table`, and returning
  non-zero when a check (not a performance target) failed;
- `bench/run.py` lists the modules and runs them in sequence (`python -m bench`).
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import inspect
import math
import os
import shutil
import signal
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import IO, Any, Self

import aiohttp

from bot.store import Run, RunState
from bot.testing.process import bot_environment
from bot.testing.slack import signed_headers, slash_command_body

SIGNING_SECRET = "secret"
BOT_TOKEN = "xoxb-test"
RETELL_API_KEY = "key_test"
TEAM_ID = "T0001"
SLACK_ACK_DEADLINE_MS = 3000.0  # Slack shows the user an error when an ack takes longer
REPO_ROOT = Path(__file__).resolve().parents[1]

BenchMain = Callable[[list[str]], int | Awaitable[int]]


# -- child processes ------------------------------------------------------------------------------


class ServiceProcess:
    """A child process that prints `READY <url>` on stdout once it listens.

    The stand-ins (`python -m bot.testing.slack|retell`) and `bench.bare_bolt` follow that
    convention. stderr goes to `log_path` (or nowhere).
    """

    def __init__(
        self,
        name: str,
        module: str,
        *args: str,
        log_path: Path | None = None,
        environment: dict[str, str] | None = None,
    ) -> None:
        self.name = name
        self._command = [sys.executable, "-m", module, *args]
        self._log_path = log_path
        self._environment = environment
        self._log: IO[bytes] | None = None
        self._process: asyncio.subprocess.Process | None = None
        self._url: str | None = None

    @property
    def url(self) -> str:
        if self._url is None:
            raise RuntimeError(f"{self.name} is not started")
        return self._url

    @property
    def pid(self) -> int:
        assert self._process is not None
        return self._process.pid

    async def start(self, *, timeout: float = 30.0) -> str:
        """Spawn the process and return the URL it announced."""
        self._log = open(self._log_path, "ab") if self._log_path else None  # noqa: SIM115, ASYNC230
        self._process = await asyncio.create_subprocess_exec(
            *self._command,
            stdout=asyncio.subprocess.PIPE,
            stderr=self._log or asyncio.subprocess.DEVNULL,
            env=self._environment,
            cwd=REPO_ROOT,  # so that `-m bench.<module>` resolves wherever we were started
        )
        assert self._process.stdout is not None
        try:
            async with asyncio.timeout(timeout):
                while line := (await self._process.stdout.readline()).decode():
                    if line.startswith("READY "):
                        self._url = line.split(maxsplit=1)[1].strip()
                        return self._url
        except TimeoutError:
            await self.stop()
            raise TimeoutError(f"{self.name} did not say READY within {timeout:g}s") from None
        code = await self._process.wait()
        raise RuntimeError(f"{self.name} exited with {code} before it was ready")

    async def stop(self, *, timeout: float = 10.0) -> int:
        """SIGTERM, then SIGKILL after `timeout`; returns the exit code."""
        process, self._process = self._process, None
        code = 0
        if process is not None:
            if process.returncode is None:
                process.send_signal(signal.SIGTERM)
            try:
                code = await asyncio.wait_for(process.wait(), timeout)
            except TimeoutError:
                process.kill()
                code = await process.wait()
        if self._log is not None:
            self._log.close()
            self._log = None
        return code

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.stop()


@dataclass
class Standins:
    """Fake Slack and fake Retell, each in its own process, and their control endpoints."""

    slack: ServiceProcess
    retell: ServiceProcess
    session: aiohttp.ClientSession

    @property
    def slack_api_url(self) -> str:
        return f"{self.slack.url}/api/"

    @property
    def retell_base_url(self) -> str:
        return self.retell.url

    def bot_environment(self, database_url: str, **extra: str) -> dict[str, str]:
        """The environment of a `retell-bot serve` that talks to these stand-ins."""
        return bot_environment(
            slack_api_url=self.slack_api_url,
            retell_base_url=self.retell_base_url,
            database_url=database_url,
            signing_secret=SIGNING_SECRET,
            bot_token=BOT_TOKEN,
            retell_api_key=RETELL_API_KEY,
            **extra,
        )

    # fake Retell's /_control endpoints

    async def seed(self, engine_id: str, count: int, *, prefix: str = "tc_") -> list[str]:
        """Create `engine_id` (if new) with `count` test case definitions; returns their ids."""
        body = {"engine_id": engine_id, "count": count, "prefix": prefix}
        answer = await self._control(self.retell.url, "POST", "/_control/seed", body)
        return [str(case_id) for case_id in answer["ids"]]

    async def create_batch(
        self, engine_id: str, case_ids: Sequence[str], *, seconds: float | None = None
    ) -> str:
        """A batch created at the fake Retell directly (not through the bot); returns its id.

        `seconds`: how long it takes (simulated), instead of the fake's configured spread.
        """
        body: dict[str, Any] = {
            "response_engine": {"type": "retell-llm", "llm_id": engine_id},
            "test_case_definition_ids": list(case_ids),
        }
        if seconds is not None:
            body["duration"] = seconds
        answer = await self._control(self.retell.url, "POST", "/_control/create_batch", body)
        return str(answer["test_case_batch_job_id"])

    async def post_message(self, channel: str, text: str) -> str:
        """A message posted with the bot's token (as the bot would); returns its ts."""
        async with self.session.post(
            f"{self.slack_api_url}chat.postMessage",
            data={"channel": channel, "text": text},
            headers={"Authorization": f"Bearer {BOT_TOKEN}"},
        ) as response:
            answer = await response.json()
        if not answer.get("ok"):
            raise RuntimeError(f"chat.postMessage: {answer}")
        return str(answer["ts"])

    async def delay(self, path_prefix: str, seconds: float, *, times: int | None = None) -> None:
        """Hold matching Retell requests for `seconds` (every one of them if `times` is None)."""
        body: dict[str, Any] = {"path_prefix": path_prefix, "seconds": seconds}
        if times is not None:
            body["times"] = times
        await self._control(self.retell.url, "POST", "/_control/delay", body)

    async def retell_stats(self) -> dict[str, Any]:
        """Requests per path and per minute, and every batch with its creation/completion."""
        return await self._control(self.retell.url, "GET", "/_control/stats")

    # fake Slack's /_control endpoints

    async def response_url(self, channel: str) -> str:
        """Mint a response_url for a slash command typed in `channel`."""
        answer = await self._control(
            self.slack.url, "POST", "/_control/response-url", {"channel": channel}
        )
        return str(answer["url"])

    async def slack_stats(self) -> dict[str, Any]:
        """Web API calls per method, and every message with its timing."""
        return await self._control(self.slack.url, "GET", "/_control/stats")

    async def slack_responses(self) -> dict[str, Any]:
        """What reached response_urls, and every ephemeral message."""
        return await self._control(self.slack.url, "GET", "/_control/responses")

    async def _control(
        self, base: str, method: str, path: str, body: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        async with self.session.request(method, base + path, json=body) as response:
            if response.status != 200:
                raise RuntimeError(f"{method} {path}: {response.status} {await response.text()}")
            answer = await response.json()
        if not isinstance(answer, dict):
            raise RuntimeError(f"{method} {path}: expected a JSON object, got {answer!r:.200}")
        return answer


@contextlib.asynccontextmanager
async def standins(
    workdir: Path, *, batch_seconds: float = 1.0, time_scale: float = 1.0
) -> AsyncIterator[Standins]:
    """Start fake Slack and fake Retell as processes (logs in `workdir`); stop them after."""
    slack = ServiceProcess(
        "fake Slack",
        "bot.testing.slack",
        "--port",
        "0",
        "--bot-token",
        BOT_TOKEN,
        "--signing-secret",
        SIGNING_SECRET,
        "--team-id",
        TEAM_ID,
        log_path=workdir / "fake-slack.log",
    )
    retell = ServiceProcess(
        "fake Retell",
        "bot.testing.retell",
        "--port",
        "0",
        "--api-key",
        RETELL_API_KEY,
        "--batch-seconds",
        f"{batch_seconds}",
        "--time-scale",
        f"{time_scale}",
        log_path=workdir / "fake-retell.log",
    )
    async with slack, retell, aiohttp.ClientSession() as session:
        yield Standins(slack=slack, retell=retell, session=session)


async def in_workdir(prefix: str, keep: Path | None, body: Callable[[Path], Awaitable[int]]) -> int:
    """Run `body(directory)`: in `keep` if given, else in a temporary directory that is removed
    afterwards unless `body` failed (non-zero or raised), so the logs are there to read."""
    if keep is not None:
        await asyncio.to_thread(keep.mkdir, parents=True, exist_ok=True)
        return await body(keep)
    directory = Path(tempfile.mkdtemp(prefix=prefix))
    code = 1
    try:
        code = await body(directory)
    finally:
        if code == 0:
            shutil.rmtree(directory, ignore_errors=True)
        else:
            print(f"  files kept in {directory} (server logs)", flush=True)
    return code


@contextlib.asynccontextmanager
async def py_spy(
    pid: int, output: Path | None, *, rate: int = 500, native: bool = False
) -> AsyncIterator[None]:
    """Sample process `pid` with py-spy while the block runs; a no-op when `output` is None.

    `output` ending in .svg gets a flame graph, .json speedscope, anything else py-spy's raw
    collapsed stacks (one line per stack with its sample count: easy to grep and sum).
    Install it with `.venv/bin/pip install py-spy`.
    """
    if output is None:
        yield
        return
    executable = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    kind = {".svg": "flamegraph", ".json": "speedscope"}.get(output.suffix, "raw")
    # --native (C frames too: the garbage collector, sqlite3) needs py-spy to pause the process
    # for each sample; without it, sampling does not pause it (--nonblocking).
    how = ["--native"] if native else ["--nonblocking"]
    command = ["record", "--pid", str(pid), "--rate", str(rate), "--format", kind, *how]
    process = await asyncio.create_subprocess_exec(
        executable,
        *command,
        "--output",
        str(output),
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    await asyncio.sleep(1.0)  # py-spy attaches
    if process.returncode is not None:
        assert process.stderr is not None
        problem = (await process.stderr.read()).decode().strip()
        raise RuntimeError(f"py-spy exited with {process.returncode}: {problem}")
    try:
        yield
    finally:
        if process.returncode is None:
            process.send_signal(signal.SIGINT)  # py-spy writes its output on SIGINT
        await process.communicate()


def vm_kib(pid: int, field_name: str = "VmRSS") -> int:
    """A `VmRSS`/`VmHWM` line of /proc/<pid>/status, in KiB (0 if unreadable)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(field_name + ":"):
                return int(line.split()[1])
    except (OSError, ValueError):
        pass
    return 0


def cpu_seconds(pid: int) -> float:
    """User + system CPU time a process has used so far (/proc/<pid>/stat), in seconds."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return math.nan
    # after the command name: state is fields[0], so utime (14th) and stime (15th) are 11, 12
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def machine() -> str:
    """One line about where (and how busy the machine was when) the figures were measured."""
    model = "unknown CPU"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    load = os.getloadavg()[0]
    return (
        f"{os.cpu_count()} cores ({model}), Python {sys.version.split()[0]}, "
        f"load {load:.1f}, {time.strftime('%Y-%m-%d %H:%M %Z')}"
    )


# -- load -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SignedRequest:
    """A request exactly as Slack would POST it to /slack/events."""

    body: bytes
    headers: dict[str, str]


@dataclass(frozen=True)
class Timed:
    """One request's outcome: HTTP status (-1: no answer), milliseconds to the response, and
    when it was sent (seconds after the first one)."""

    status: int
    ms: float
    sent_at: float
    error: str = ""


def slash_command(text: str, *, user_id: str, channel_id: str, response_url: str) -> SignedRequest:
    """`/retell-test <text>`, form-encoded and signed now (valid for Slack's 5 minutes)."""
    body = slash_command_body(
        text=text,
        user_id=user_id,
        channel_id=channel_id,
        team_id=TEAM_ID,
        response_url=response_url,
    )
    headers = {
        "Content-Type": "application/x-www-form-urlencoded",
        **signed_headers(SIGNING_SECRET, body),
    }
    return SignedRequest(body.encode(), headers)


async def post_concurrently(
    url: str, requests: Sequence[SignedRequest], *, concurrency: int, timeout: float = 30.0
) -> list[Timed]:
    """POST every request with at most `concurrency` in flight (closed loop); in input order.

    The clock runs from just before the request is written until its body is read, so it is
    the ack latency Slack would see, plus loopback. Connections are kept alive, as a busy
    Slack-to-app path would; the requests are built (and signed) beforehand.
    """
    results: list[Timed | None] = [None] * len(requests)
    queue: asyncio.Queue[int] = asyncio.Queue()
    for index in range(len(requests)):
        queue.put_nowait(index)
    connector = aiohttp.TCPConnector(limit=concurrency)
    client_timeout = aiohttp.ClientTimeout(total=timeout)

    async def worker(session: aiohttp.ClientSession) -> None:
        while not queue.empty():
            index = queue.get_nowait()
            request = requests[index]
            started = time.perf_counter()
            try:
                async with session.post(url, data=request.body, headers=request.headers) as reply:
                    await reply.read()
                    status = reply.status
                error = ""
            except (aiohttp.ClientError, TimeoutError) as exc:
                status, error = -1, repr(exc)
            results[index] = Timed(
                status, (time.perf_counter() - started) * 1000, started - first, error
            )

    # The load generator's own garbage collections would be counted as the server's latency.
    gc.collect()
    gc.disable()
    first = time.perf_counter()
    try:
        async with aiohttp.ClientSession(connector=connector, timeout=client_timeout) as session:
            await asyncio.gather(*(worker(session) for _ in range(concurrency)))
    finally:
        gc.enable()
    return [result for result in results if result is not None]


async def wait_until(
    predicate: Callable[[], Awaitable[bool]], *, timeout: float, every: float = 0.25
) -> bool:
    """Poll `predicate` until it holds (True) or `timeout` passes (False)."""
    deadline = time.monotonic() + timeout
    while True:
        if await predicate():
            return True
        if time.monotonic() >= deadline:
            return False
        await asyncio.sleep(every)


# -- statistics and tables ------------------------------------------------------------------------


def percentile(values: Iterable[float], fraction: float) -> float:
    """Nearest-rank percentile (`fraction` 0.99 for p99): a value that was actually observed."""
    ordered = sorted(values)
    if not ordered:
        return math.nan
    rank = max(1, math.ceil(fraction * len(ordered)))
    return ordered[rank - 1]


def median(values: Iterable[float]) -> float:
    return percentile(values, 0.5)


def print_table(
    title: str, columns: Sequence[str], rows: Iterable[Sequence[object]], *, note: str = ""
) -> None:
    """A plain-text table: numeric columns right-aligned, floats to one decimal, NaN as "-"."""
    cells = [[_cell(value) for value in row] for row in rows]
    right = [all(_numeric(row[i]) for row in cells) for i in range(len(columns))]
    widths = [
        max([len(column), *(len(row[i]) for row in cells)]) for i, column in enumerate(columns)
    ]

    def line(values: Sequence[str]) -> str:
        parts = [
            value.rjust(width) if align_right else value.ljust(width)
            for value, width, align_right in zip(values, widths, right, strict=True)
        ]
        return "  " + "  ".join(parts).rstrip()

    print(f"\n{title}")
    print(line(list(columns)))
    print(line(["-" * width for width in widths]))
    for row in cells:
        print(line(row))
    if note:
        print(f"  {note}")
    print(flush=True)


def _cell(value: object) -> str:
    if isinstance(value, float):
        return "-" if math.isnan(value) else f"{value:.1f}"
    return str(value)


def _numeric(text: str) -> bool:
    if text == "-":
        return True
    try:
        float(text.rstrip("x%"))
    except ValueError:
        return False
    return True


# -- running --------------------------------------------------------------------------------------


def run_main(main: BenchMain, argv: list[str]) -> int:
    """Call a benchmark's `main(argv)`, running it on a fresh event loop if it is async."""
    result = main(argv)
    if inspect.isawaitable(result):
        return int(asyncio.run(_awaited(result)))
    return int(result)


async def _awaited(awaitable: Awaitable[int]) -> int:
    return await awaitable


def in_flight_run(
    *,
    team_id: str,
    channel_id: str,
    user_id: str,
    engine: str,
    case_ids: list[str],
    batch_id: str,
    status_ts: str,
    check_interval: float,
) -> Run:
    """A run whose batch is in flight, as the bot keeps it after a restart: the row the
    benchmarks preload instead of starting thousands of batches by command."""
    now = datetime.now(UTC)
    return Run(
        team_id=team_id,
        channel_id=channel_id,
        user_id=user_id,
        engine_type="retell-llm",
        engine_id=engine,
        case_ids=case_ids,
        case_count=len(case_ids),
        state=RunState.RUNNING.value,
        batch_id=batch_id,
        total=len(case_ids),
        status_ts=status_ts,
        shown_counts=f"0/0/0/{len(case_ids)}",
        created_at=now,
        started_at=now,
        next_check_at=now,
        check_interval=check_interval,
    )


async def start_standin_processes(
    workdir: Path, *, slack_args: Sequence[str] = (), retell_args: Sequence[str] = ()
) -> tuple[ServiceProcess, ServiceProcess]:
    """Fake Slack and fake Retell in processes of their own, with the benchmarks' token,
    signing secret, team and key, plus what a benchmark adds (`*_args`)."""
    slack = ServiceProcess(
        "fake Slack",
        "bot.testing.slack",
        *("--port", "0", "--bot-token", BOT_TOKEN, "--signing-secret", SIGNING_SECRET),
        *("--team-id", TEAM_ID, *slack_args),
        log_path=workdir / "fake-slack.log",
    )
    retell = ServiceProcess(
        "fake Retell",
        "bot.testing.retell",
        *("--port", "0", "--api-key", RETELL_API_KEY, *retell_args),
        log_path=workdir / "fake-retell.log",
    )
    await slack.start()
    await retell.start()
    return slack, retell
