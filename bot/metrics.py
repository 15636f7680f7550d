"""Prometheus metrics (`GET /metrics`): what operators watch to know the bot is doing its job.

One `Metrics` per application, in a registry of its own, so that tests (and several apps in one
process) never share counters.
"""

from __future__ import annotations

import httpx
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram
from prometheus_client.exposition import generate_latest

# Slack gives an app 3 s to ack; the buckets resolve the part that matters, well under that.
ACK_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 3.0, 5.0)


class Metrics:
    """Counters and histograms of runs, follow-ups, errors and ack latency."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        registry = self.registry
        self.runs_started = Counter(
            "retell_bot_runs_started",
            "Runs with a batch the bot follows, by how they began (command, rerun, watch).",
            ["source"],
            registry=registry,
        )
        self.runs_finished = Counter(
            "retell_bot_runs_finished",
            "Runs that reached a final state (complete, timed_out, failed to start).",
            ["state"],
            registry=registry,
        )
        self.follow_up_checks = Counter(
            "retell_bot_follow_up_checks",
            "Follow-up checks of running batches.",
            registry=registry,
        )
        self.retell_requests = Counter(
            "retell_bot_retell_requests",
            "HTTP requests to Retell (retries included), by call and HTTP status.",
            ["call", "status"],
            registry=registry,
        )
        self.retell_errors = Counter(
            "retell_bot_retell_errors",
            "Retell calls that failed after their retries, by kind of problem.",
            ["kind"],
            registry=registry,
        )
        self.slack_errors = Counter(
            "retell_bot_slack_errors",
            "Slack Web API calls that failed after their retries, by Slack error code.",
            ["code"],
            registry=registry,
        )
        self.status_edits_coalesced = Counter(
            "retell_bot_status_edits_coalesced",
            "Progress edits skipped to stay within Slack's chat.update limit (shown later).",
            registry=registry,
        )
        self.rejected_requests = Counter(
            "retell_bot_rejected_requests",
            "Requests to /slack/events refused before Bolt: signature (401) or malformed (400).",
            ["reason"],
            registry=registry,
        )
        self.job_errors = Counter(
            "retell_bot_job_errors",
            "Scheduled jobs (the follow-up sweep, schedule firings) that failed; retried later.",
            ["task"],
            registry=registry,
        )
        self.scheduler_restarts = Counter(
            "retell_bot_scheduler_restarts",
            "Times the scheduler stopped by itself and was started again.",
            registry=registry,
        )
        self.ack_latency = Histogram(
            "retell_bot_ack_latency_seconds",
            "Time from receiving a Slack request on /slack/events to answering it.",
            buckets=ACK_BUCKETS,
            registry=registry,
        )

    def exposition(self) -> tuple[bytes, str]:
        """The text format Prometheus scrapes, and its content type."""
        return generate_latest(self.registry), CONTENT_TYPE_LATEST

    async def count_retell_response(self, response: httpx.Response) -> None:
        """httpx response hook: one count per HTTP exchange with Retell."""
        self.retell_requests.labels(
            _call(response.request.url.path), str(response.status_code)
        ).inc()


def _call(path: str) -> str:
    """`/get-batch-test/tcbj_1` → `get-batch-test`: the call, without ids (bounded labels)."""
    parts = [part for part in path.split("/") if part]
    if parts[:1] == ["v2"]:
        parts = parts[1:]
    return parts[0] if parts else "/"
