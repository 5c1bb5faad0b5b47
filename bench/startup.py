"""Start-up benchmark: one-shot commands on a database of many customers, and the vocabulary of names.

A SQLite database gets ``--customers`` customers through ``crmbot import customers`` (the generated list of
``bench.import_customers``), once. Then each round runs, as the admin runs them (the CLI in a subprocess with its
defaults; wall seconds, CPU seconds and peak RSS of the process, taken by ``/usr/bin/time``):

- ``crmbot search 价格 --limit 20`` (nothing in the archive: what the command costs before it searches);
- ``crmbot export customers`` of every customer;
- the baselines in the same round: the interpreter alone (``python -c pass``) and the same search as a plain
  ``LIKE`` over the archive with the sqlite3 module.

``--checkout DIR`` runs the same commands from another checkout of the project (with this interpreter) in the same
rounds, alternating, so that a change is measured against what it replaces on the same machine at the same time.

Then, in this process, the vocabulary at that many names: building it, the first segmentation (jieba's
dictionary), learning one more customer, and the segmentation after that::

    .venv/bin/python -m bench.startup --customers 100000 --rounds 3
"""

from __future__ import annotations

import argparse
import os
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.import_customers import crmbot, staff_csv, write_customers

ROOT = Path(__file__).resolve().parent.parent


def _measured(command: list[str], cwd: Path, env: dict[str, str] | None = None) -> tuple[float, float, float]:
    """(seconds, CPU seconds, peak RSS in MiB) of ``command``. The peak RSS is taken by ``/usr/bin/time``, a small
    program of its own: a child's ``ru_maxrss`` counts the memory of this process at the fork as well."""
    started = time.perf_counter()
    proc = subprocess.run(
        ["/usr/bin/time", "-f", "%M %U %S", *command],
        cwd=cwd,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        check=False,
    )
    seconds = time.perf_counter() - started
    err = proc.stderr.decode(errors="replace")
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed: {err}")
    rss_kib, user, system = err.split()[-3:]
    return seconds, float(user) + float(system), int(rss_kib) / 1024


def run(checkout: Path, config: Path, *args: str) -> tuple[float, float, float]:
    """``crmbot ARGS`` from ``checkout``: (seconds, CPU seconds, peak RSS in MiB)."""
    command = [sys.executable, "-m", "bot.cli", *args, "--config", str(config)]
    return _measured(command, checkout, {**os.environ, "PYTHONPATH": str(checkout)})


def bare_interpreter() -> tuple[float, float, float]:
    return _measured([sys.executable, "-c", "pass"], ROOT)


def like_search(db: Path) -> float:
    started = time.perf_counter()
    with sqlite3.connect(db) as conn:
        conn.execute(
            "SELECT id FROM message WHERE lower(text) LIKE ? ORDER BY sent_at DESC LIMIT 20", ("%价格%",)
        ).fetchall()
    return time.perf_counter() - started


def vocabulary(count: int) -> dict[str, float]:
    """Seconds of each step of the vocabulary at ``count`` customer names (two names each: name and alias)."""
    from bot.nlu.vocabulary import Vocabulary

    customers = [(f"测试{i}科技有限公司", [f"测{i}"]) for i in range(count)]
    steps: dict[str, float] = {}
    started = time.perf_counter()
    vocab = Vocabulary.build(customers, ["张三", "李四"])
    steps["build"] = time.perf_counter() - started
    started = time.perf_counter()
    vocab.words("预热")
    steps["first segmentation"] = time.perf_counter() - started
    started = time.perf_counter()
    vocab.learn_customer("新来的客户有限公司", ["新来的"])
    steps["learn one customer"] = time.perf_counter() - started
    started = time.perf_counter()
    vocab.words("拜访新来的客户")
    steps["segmentation after learning"] = time.perf_counter() - started
    return steps


def _span(values: list[float], fmt: str) -> str:
    return f"{fmt.format(min(values))}–{fmt.format(max(values))}"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--customers", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--checkout", type=Path, default=None, help="another checkout, run alternately")
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="crmbot-startup-") as tmp:
        workdir = Path(tmp)
        db = workdir / "crm.db"
        config = workdir / "crmbot.toml"
        config.write_text(f'[database]\nurl = "sqlite://{db}"\n', encoding="utf-8")
        crmbot(config, "import", "staff", str(staff_csv(workdir / "staff.csv")))
        seconds, *_ = crmbot(config, "import", "customers", str(write_customers(workdir / "c.csv", args.customers)))
        print(f"{args.customers:,} customers imported in {seconds:.0f} s")

        checkouts = {"this checkout": ROOT} | ({"other checkout": args.checkout} if args.checkout else {})
        commands = {
            "search 价格 --limit 20": ("search", "价格", "--limit", "20"),
            "export customers": ("export", "customers", str(workdir / "out.xlsx")),
        }
        results: dict[str, list[tuple[float, float, float]]] = {}
        likes: list[float] = []
        for n in range(args.rounds):
            bare = bare_interpreter()
            results.setdefault("python -c pass", []).append(bare)
            likes.append(like_search(db))
            for label, checkout in checkouts.items():
                for name, command in commands.items():
                    measured = run(checkout, config, *command)
                    results.setdefault(f"{name} ({label})", []).append(measured)
                    wall, cpu, rss = measured
                    print(f"round {n + 1}: {name} ({label}): {wall:.2f} s, {cpu:.2f} CPU-s, {rss:.0f} MiB")
            print(f"load average {os.getloadavg()[0]:.1f}")
        print()
        print(f"LIKE over the archive (sqlite3, in this process): {_span([s * 1000 for s in likes], '{:.1f}')} ms")
        for name, values in results.items():
            wall, cpu, rss = zip(*values, strict=True)
            print(
                f"{name}: {_span(list(wall), '{:.2f}')} s, {_span(list(cpu), '{:.2f}')} CPU-s, "
                f"peak RSS {_span(list(rss), '{:.0f}')} MiB"
            )

    steps = [vocabulary(args.customers) for _ in range(args.rounds)]
    for step in steps[0]:
        values = [s[step] for s in steps]
        median = statistics.median(values)
        print(f"vocabulary of {args.customers:,}: {step} {_span(values, '{:.3f}')} s (median {median:.3f})")


if __name__ == "__main__":
    main()
