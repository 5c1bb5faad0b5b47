"""What the report chart shows, as plain values: built from the reports on the event loop, drawn by
``handlers.reports.charts`` in a worker thread (which imports matplotlib, so only the commands that draw pay for it)."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class ChartData:
    """The funnel now, each metric per period and the reps' ranking; nothing here reads the database."""

    title: str
    funnel: list[tuple[str, int]] = field(default_factory=list)  # stage label, deals there now
    periods: list[str] = field(default_factory=list)  # trend x labels, oldest first
    trend: dict[str, list[float | None]] = field(default_factory=dict)  # metric label → value per period (%/points)
    ranking: list[tuple[str, int | None]] = field(default_factory=list)  # rep name, health score
