"""The digest's pass-rate trend chart, drawn as a PNG with matplotlib's Agg backend.

Imported only when a report is drawn (matplotlib costs ~0.3 s and ~25 MiB to import), and drawn
off the event loop by the caller (`asyncio.to_thread`): rendering takes tens of milliseconds.
"""

from __future__ import annotations

import io

from bot.history import Digest

WIDTH_INCHES, HEIGHT_INCHES, DPI = 8.0, 3.2, 110


def pass_rate_png(digest: Digest, *, title: str) -> bytes:
    """Daily pass rate (%) over the digest's period; days without runs are gaps, not zeros."""
    from matplotlib.figure import Figure  # Figure, not pyplot: no global state, thread-safe

    days = [day for day, _ in digest.daily]
    rates = [float("nan") if rate is None else rate for _, rate in digest.daily]
    figure = Figure(figsize=(WIDTH_INCHES, HEIGHT_INCHES), dpi=DPI, layout="constrained")
    axes = figure.add_subplot()
    axes.plot(days, rates, marker="o", color="#2e7d32", linewidth=2)  # type: ignore[arg-type]
    if digest.pass_rate is not None:
        axes.axhline(digest.pass_rate, color="#9e9e9e", linestyle="--", linewidth=1)
    axes.set_ylim(0, 105)
    axes.set_ylabel("pass rate (%)")
    axes.set_title(title)
    axes.grid(axis="y", alpha=0.3)
    figure.autofmt_xdate()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    return buffer.getvalue()
