"""The report chart: one PNG (matplotlib, Agg) with the funnel, the trend of the five metrics over recent periods and
the reps' ranking, drawn for a phone screen.

Chinese is set in the font shipped next to this module, a subset of Noto Sans CJK SC (SIL Open Font License 1.1,
``fonts/OFL.txt``) covering the CJK Unified Ideographs U+4E00–U+9FD0, so a fresh machine draws names and labels without
missing-glyph boxes whatever fonts it has. The figure is built with the object-oriented API (no pyplot state), so
``render`` is safe in a worker thread; ``render_in_thread`` keeps it off the event loop.
"""

from __future__ import annotations

import asyncio
import functools
import io
from pathlib import Path

from matplotlib import font_manager
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from handlers.reports.chartdata import ChartData

FONT_PATH = Path(__file__).with_name("fonts") / "NotoSansCJKsc-Regular-subset.otf"
COLORS = ("#3370ff", "#34c724", "#ff8800", "#f54a45", "#7f3bf5")
MISSING = float("nan")


@functools.cache
def font() -> font_manager.FontProperties:
    """The shipped CJK font, registered with matplotlib once per process."""
    font_manager.fontManager.addfont(str(FONT_PATH))
    return font_manager.FontProperties(fname=str(FONT_PATH))


def _style(ax: Axes, title: str) -> None:
    fp = font()
    ax.set_title(title, fontproperties=fp, fontsize=13, loc="left")
    for label in (*ax.get_xticklabels(), *ax.get_yticklabels()):
        label.set_fontproperties(fp)
        label.set_fontsize(10)
    for side in ("top", "right"):
        ax.spines[side].set_visible(False)


def _funnel(ax: Axes, rows: list[tuple[str, int]]) -> None:
    labels = [label for label, _ in rows]
    counts = [n for _, n in rows]
    positions = list(range(len(rows)))[::-1]
    ax.barh(positions, counts, color=COLORS[0])
    ax.set_yticks(positions, labels)
    for y, n in zip(positions, counts, strict=True):
        ax.text(n, y, f" {n}", va="center", fontproperties=font(), fontsize=10)
    ax.set_xlim(0, max([*counts, 1]) * 1.2)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # deals are counted whole
    _style(ax, "销售漏斗（进行中商机数）")


def _trend(ax: Axes, periods: list[str], trend: dict[str, list[float | None]]) -> None:
    xs = list(range(len(periods)))
    for color, (label, values) in zip(COLORS, trend.items(), strict=False):
        ys = [MISSING if v is None else v for v in values]
        ax.plot(xs, ys, marker="o", color=color, label=label)
    ax.set_xticks(xs, periods)
    seen = [v for values in trend.values() for v in values if v is not None]
    ax.set_ylim(min([-10.0, *seen]) - 5, max([100.0, *seen]) + 5)  # the scale of a rate, whatever the data
    ax.axhline(0, color="#c0c4cc", linewidth=0.8)
    ax.legend(prop=font(), fontsize=9, loc="upper left", bbox_to_anchor=(0, -0.12), ncol=3, frameon=False)
    _style(ax, "五项指标趋势（%，NPS 为分）")


def _ranking(ax: Axes, rows: list[tuple[str, int | None]]) -> None:
    names = [name for name, _ in rows] or ["暂无销售"]
    scores = [score or 0 for _, score in rows] or [0]
    positions = list(range(len(names)))[::-1]
    colors = ["#34c724" if s >= 80 else "#ff8800" if s >= 60 else "#f54a45" for s in scores]
    ax.barh(positions, scores, color=colors)
    ax.set_yticks(positions, names)
    ax.set_xlim(0, 110)
    for y, (_, score) in zip(positions, rows, strict=False):
        ax.text(score or 0, y, f" {'—' if score is None else score}", va="center", fontproperties=font(), fontsize=10)
    _style(ax, "销售健康度排名")


def render(data: ChartData) -> bytes:
    """The chart as PNG bytes."""
    figure = Figure(figsize=(6.4, 11.0), dpi=120, layout="constrained")
    FigureCanvasAgg(figure)
    figure.suptitle(data.title, fontproperties=font(), fontsize=15)
    funnel_ax, trend_ax, ranking_ax = figure.subplots(3, 1, height_ratios=[1.0, 1.3, 1.0])
    _funnel(funnel_ax, data.funnel)
    _trend(trend_ax, data.periods, data.trend)
    _ranking(ranking_ax, data.ranking)
    out = io.BytesIO()
    figure.savefig(out, format="png")
    return out.getvalue()


async def render_in_thread(data: ChartData) -> bytes:
    """``render`` in a worker thread: drawing takes a CPU-bound fraction of a second the event loop cannot spare."""
    return await asyncio.to_thread(render, data)
