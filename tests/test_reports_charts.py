"""The report chart on a fresh machine: the shipped font has every character a report draws (rare name characters
included), matplotlib finds each glyph (no "Glyph … missing" warning), and the PNG is a picture of the right size."""

from __future__ import annotations

import struct
import subprocess
import sys
import warnings

from matplotlib.ft2font import FT2Font

from handlers.reports.chartdata import ChartData
from handlers.reports.charts import FONT_PATH, font, render
from handlers.reports.health import FIELD_LABELS, METRIC_LABELS, QUALITY_LABELS
from models.customers import STAGE_LABELS

# Names with characters outside GB 2312 (喆, 堃, 昇, 玥, 赟) as well as common ones.
NAMES = ["张三", "王喆", "李堃", "赵昇", "陈玥", "周赟", "欧阳娜娜"]


def chart() -> ChartData:
    return ChartData(
        title="王经理团队周报 02-23~03-01",
        funnel=[(label, n) for n, label in enumerate(STAGE_LABELS.values())],
        periods=["1月", "2月", "3月"],
        trend={label: [10.0, None, -5.0] for label in METRIC_LABELS.values()},
        ranking=[(name, 90 - 10 * i) for i, name in enumerate(NAMES)],
    )


def test_the_shipped_font_has_every_character_a_report_draws() -> None:
    face = FT2Font(str(FONT_PATH))
    labels = [*METRIC_LABELS.values(), *QUALITY_LABELS.values(), *FIELD_LABELS.values(), *STAGE_LABELS.values()]
    titles = "销售漏斗（进行中商机数）五项指标趋势（%，NPS 为分）销售健康度排名暂无~—·0123456789"
    text = "".join([*labels, *NAMES, titles])
    missing = sorted({c for c in text if not c.isspace() and face.get_char_index(ord(c)) == 0})
    assert missing == []
    # Every CJK Unified Ideograph up to U+9FD0 (all of GBK's and GB 18030's basic block), so any name renders.
    assert [hex(c) for c in range(0x4E00, 0x9FD1) if not face.get_char_index(c)] == []
    assert font().get_file() == str(FONT_PATH)


def test_the_chart_renders_chinese_without_missing_glyphs() -> None:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        png = render(chart())
    assert [str(w.message) for w in caught if "Glyph" in str(w.message) or "missing" in str(w.message)] == []
    assert png.startswith(b"\x89PNG\r\n\x1a\n")
    width, height = struct.unpack(">II", png[16:24])
    assert (width, height) == (768, 1320)  # 6.4 × 11 inches at 120 dpi: a phone's portrait


def test_the_cli_starts_without_matplotlib() -> None:
    """Drawing is the only thing that needs matplotlib: every other command starts without importing it."""
    probe = "import sys, bot.cli, handlers; print('matplotlib' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "False"
