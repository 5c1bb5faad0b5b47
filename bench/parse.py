"""Parse benchmark: how long ``Understanding.parse`` takes per line, after warm-up, with a realistic vocabulary.

The vocabulary is ``--customers`` generated company names (city + brand + trade + legal suffix, each with its
short alias) and 60 staff names — the size of the typical buyer (~900 customers). The lines are the phrasing table
(tests/data/phrasings.tsv) with every demo customer name swapped for a random generated one, so each line is
different and the names come from the big vocabulary. The first ``--warmup`` lines are not timed (jieba's
dictionary and jionlp's tables load lazily); then every line is timed on its own with ``perf_counter_ns``.

``--cli N`` also runs ``crmbot parse`` once with N lines as arguments in a fresh demo database (one process for
many lines) and reports the wall time of the whole process, start-up included.

Run::

    .venv/bin/python -m bench.parse
    .venv/bin/python -m bench.parse --customers 5000 --lines 20000 --cli 500
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

ROOT = Path(__file__).resolve().parent.parent
TABLE = ROOT / "tests" / "data" / "phrasings.tsv"
NOW = datetime.fromisoformat("2026-11-18T10:00:00+08:00")
DEMO_NAMES = ["恒力液压", "金风科技", "比亚迪", "三一重工", "华为", "恒力", "金风", "三一"]
CITIES = [
    "苏州",
    "无锡",
    "宁波",
    "佛山",
    "东莞",
    "合肥",
    "济南",
    "长沙",
    "郑州",
    "成都",
    "重庆",
    "天津",
    "大连",
    "厦门",
]
BRANDS = list("恒泰华宏瑞鑫达通盛祥隆远创新联科德丰和信凯安博")
TRADES = ["液压", "机械", "电气", "自动化", "精密", "重工", "材料", "电子", "能源", "环保", "智能", "化工"]
SUFFIXES = ["有限公司", "股份有限公司", "集团有限公司", "科技有限公司"]
SURNAMES = list("王李张刘陈杨黄赵吴周徐孙马朱胡郭何高林罗")
GIVEN = list("伟芳娜敏静丽强磊军洋勇艳杰娟涛明超秀霞平刚")


def vocabulary(n: int, rng: random.Random) -> tuple[list[tuple[str, list[str]]], list[str]]:
    customers: dict[str, list[str]] = {}
    while len(customers) < n:
        brand = "".join(rng.sample(BRANDS, 2))
        short = brand + rng.choice(TRADES)
        name = rng.choice(CITIES) + short + rng.choice(SUFFIXES)
        if name not in customers:
            customers[name] = [short]
    staff = sorted({rng.choice(SURNAMES) + "".join(rng.sample(GIVEN, rng.choice((1, 2)))) for _ in range(80)})[:60]
    return list(customers.items()), [*staff, "张三", "李四", "陈工", "王经理"]


def lines(customers: list[tuple[str, list[str]]], count: int, rng: random.Random) -> list[str]:
    table = [
        row.split("\t")[0]
        for row in TABLE.read_text(encoding="utf-8").splitlines()
        if row.strip() and not row.startswith("##")
    ]
    out = []
    for i in range(count):
        text = table[i % len(table)]
        for demo in DEMO_NAMES:
            if demo in text:
                name, aliases = rng.choice(customers)
                text = text.replace(demo, rng.choice([name, *aliases]), 1)
                break
        out.append(text)
    return out


def percentile(sorted_values: list[float], p: float) -> float:
    index = min(len(sorted_values) - 1, max(0, round(p / 100 * len(sorted_values)) - 1))
    return sorted_values[index]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--customers", type=int, default=900)
    parser.add_argument("--lines", type=int, default=5000)
    parser.add_argument("--warmup", type=int, default=200)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--cli", type=int, default=0, help="also time one `crmbot parse` process with N lines")
    args = parser.parse_args()
    rng = random.Random(args.seed)

    from bot.capability import Registry
    from bot.understanding import Understanding
    from handlers import CAPABILITIES

    customers, staff = vocabulary(args.customers, rng)
    registry = Registry(CAPABILITIES)
    understanding = Understanding(ZoneInfo("Asia/Shanghai"), registry.commands, registry.phrases)
    started = time.perf_counter()
    understanding.load(customers, staff)
    build_ms = (time.perf_counter() - started) * 1000
    work = lines(customers, args.warmup + args.lines, rng)
    started = time.perf_counter()
    understanding.warm_up()
    for text in work[: args.warmup]:
        understanding.parse(text, NOW)
    warm_ms = (time.perf_counter() - started) * 1000

    timings: list[float] = []
    intents: dict[str, int] = {}
    for text in work[args.warmup :]:
        t0 = time.perf_counter_ns()
        parsed = understanding.parse(text, NOW)
        timings.append((time.perf_counter_ns() - t0) / 1e6)
        intents[parsed.intent] = intents.get(parsed.intent, 0) + 1
    timings.sort()
    print(f"vocabulary: {len(customers)} customers, {len(staff)} staff, built in {build_ms:.0f} ms")
    print(f"warm-up: {args.warmup} lines in {warm_ms:.0f} ms (jieba + jionlp load)")
    print(
        f"parse, {len(timings)} lines: mean {statistics.fmean(timings):.3f} ms, p50 {percentile(timings, 50):.3f} ms, "
        f"p95 {percentile(timings, 95):.3f} ms, p99 {percentile(timings, 99):.3f} ms, max {timings[-1]:.3f} ms"
    )
    print("intents: " + ", ".join(f"{k}={v}" for k, v in sorted(intents.items())))
    if args.cli:
        cli(work[: args.cli])


def cli(texts: list[str]) -> None:
    crmbot = str(Path(sys.executable).parent / "crmbot")
    with tempfile.TemporaryDirectory() as tmp:
        env = {**os.environ, "CRMBOT_DATABASE__URL": f"sqlite://{tmp}/bench.sqlite3"}
        subprocess.run([crmbot, "demo"], env=env, check=True, capture_output=True, cwd=tmp)
        started = time.perf_counter()
        done = subprocess.run(
            [crmbot, "parse", *texts, "--now", NOW.isoformat(), "--json"],
            env=env, check=True, capture_output=True, cwd=tmp,
        )  # fmt: skip
        wall = time.perf_counter() - started
    printed = len(done.stdout.decode().splitlines())
    print(f"crmbot parse: {printed} lines in one process, {wall:.2f} s wall including start-up")


if __name__ == "__main__":
    main()
