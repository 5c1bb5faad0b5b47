"""Benchmark: import throughput of the archive path and keyword-search latency and recall, SQLite and PostgreSQL.

Generates N messages of Chinese B2B chat (greetings, products and model numbers, quantities, prices, delivery,
complaints) between 900 customers and 60 reps, writes them as the WeCom chat-archive JSON Lines export, imports the
file with ``import_jsonl`` (the same path as ``crmbot import messages``: parse, normalize, link, insert, index),
then times ``bot.search.search`` (top 20 newest, with and without the total) for rare, common and two-character
queries, as an admin (no scope) and as a rep (own customers), and checks recall and precision of every query
against a LIKE scan of the same database in the same run.

    .venv/bin/python bench/search.py --n 1000000 --db sqlite
    .venv/bin/python bench/search.py --n 1000000 --db postgres --pg postgres://postgres@127.0.0.1:5432/test
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tortoise import connections

from bot import search
from bot.app import create_app, load_settings
from bot.keys import BOT
from integrations.wecom.archive_file import import_jsonl
from models.customers import Contact, Customer
from models.staff import Role
from tests.helpers import staff_member, staff_with_account

CUSTOMERS = 900
REPS = 60
TEAM = 10
START = datetime(2024, 1, 1, tzinfo=UTC)
SPAN_SECONDS = 3 * 365 * 86400

PRODUCTS = [
    "耐高温材料",
    "液压元件",
    "密封圈",
    "伺服电机",
    "深沟球轴承",
    "不锈钢管",
    "电磁控制阀",
    "PLC模块",
    "行星减速机",
    "变频器",
    "齿轮泵",
    "液压油缸",
    "气动接头",
    "橡胶密封件",
    "陶瓷纤维板",
    "碳化硅涂层",
    "导热硅脂",
    "编码器",
    "直线导轨",
    "滚珠丝杠",
    "同步带",
    "联轴器",
    "冷却风扇",
    "防爆电机",
    "耐磨衬板",
]
UNITS = ["件", "套", "台", "吨", "米", "箱", "kg"]
GREETINGS = ["您好", "早上好", "王总好", "李工您好", "在吗", "打扰一下", "辛苦了", "收到", "好的，谢谢", "明白"]
ASKS = [
    "{p}现在什么价格？",
    "请报一下 {q} {u}{p}的价格",
    "{p}的交期大概多久？",
    "{p}有现货吗？我们急用",
    "能不能把{p}的样品寄一份过来",
    "{p}的技术参数发我一下",
    "上次的{p}能再便宜点吗",
    "{p}支持定制吗，尺寸 {n}mm",
    "这批{p}的质保期是多久",
    "{p}能不能月底前到货",
]
ANSWERS = [
    "{p}含税价 {price} 元/{u}，{q} {u}以上可以再谈",
    "{p}目前有现货，今天下单明天发货",
    "{p}交期 {d} 天左右",
    "样品已经寄出，顺丰单号 SF{sf}",
    "{p}规格书已发邮箱，请查收",
    "{p}质保一年，终身维护",
    "型号 {model} 的{p}库存充足",
    "给您申请了 {disc} 折的优惠",
    "合同已经盖章回传了，请确认",
    "{p}的报价单稍后发您",
    "月底前可以安排 {q} {u}",
]
COMPLAINTS = [
    "上批{p}有一台漏油，麻烦安排售后看看",
    "{p}坏了，产线停了，急！",
    "收到的{p}尺寸不对，要投诉",
    "{p}质量有问题，噪音很大",
    "发货太慢了，{p}说好上周到的",
    "{p}表面有划痕，需要换货",
]
CLOSINGS = ["好的", "谢谢", "没问题", "嗯嗯", "我跟领导汇报一下", "下周再联系", "OK", "👍", "明天给您答复"]
RARE = [f"{prefix}-{n}" for prefix in ("HX", "GB", "ZK", "TY") for n in range(7000, 7005)]  # inserted rarely


def phrase(rng: random.Random) -> str:
    p = rng.choice(PRODUCTS)
    kind = rng.random()
    if kind < 0.15:
        pool = GREETINGS
    elif kind < 0.45:
        pool = ASKS
    elif kind < 0.8:
        pool = ANSWERS
    elif kind < 0.9:
        pool = COMPLAINTS
    else:
        pool = CLOSINGS
    text = rng.choice(pool).format(
        p=p,
        q=rng.choice([10, 50, 100, 200, 500, 1000, 2000, 5000]),
        u=rng.choice(UNITS),
        n=rng.randint(5, 900),
        price=f"{rng.randint(3, 9000)}.{rng.randint(0, 9)}",
        d=rng.choice([3, 7, 15, 30, 45]),
        sf=rng.randint(10**11, 10**12 - 1),
        model=f"{rng.choice('ABCDEFHKMXZ')}{rng.choice('ABCDEFHKMXZ')}-{rng.randint(100, 9999)}",
        disc=rng.choice([9.5, 9, 8.8, 8.5, 8]),
    )
    if rng.random() < 0.25:
        text = rng.choice(GREETINGS) + "，" + text
    if rng.random() < 0.0002:
        text += f"，型号 {rng.choice(RARE)}"
    return text


def generate(path: Path, n: int, seed: int = 1) -> None:
    rng = random.Random(seed)
    with path.open("w", encoding="utf-8") as f:
        for i in range(n):
            customer = rng.randrange(CUSTOMERS)
            rep = f"rep{customer % REPS:03d}"
            contact = f"wmC{customer:05d}"
            sender, to = (contact, rep) if rng.random() < 0.5 else (rep, contact)
            at = START + timedelta(seconds=rng.randrange(SPAN_SECONDS))
            record = {
                "msgid": f"b{seed}-{i:08d}",
                "action": "send",
                "from": sender,
                "tolist": [to],
                "roomid": "",
                "msgtime": int(at.timestamp() * 1000),
                "msgtype": "text",
                "text": {"content": phrase(rng)},
            }
            f.write(json.dumps(record, ensure_ascii=False) + "\n")


async def seed_people() -> None:
    managers = [
        await staff_member(name=f"经理{t}", wecom=f"mgr{t:02d}", role=Role.MANAGER) for t in range(REPS // TEAM)
    ]
    await staff_member(name="管理员", wecom="admin", role=Role.ADMIN)
    reps = {
        f"rep{r:03d}": (
            await staff_member(
                name=f"销售{r:03d}", wecom=f"rep{r:03d}", role=Role.REP, manager_id=managers[r // TEAM].id
            )
        ).id
        for r in range(REPS)
    }
    await Customer.bulk_create(
        [Customer(name=f"客户{c:04d}有限公司", owner_id=reps[f"rep{c % REPS:03d}"]) for c in range(CUSTOMERS)]
    )
    ids = {c.name: c.id for c in await Customer.all()}
    await Contact.bulk_create(
        [
            Contact(customer_id=ids[f"客户{c:04d}有限公司"], name=f"联系人{c}", external_userid=f"wmC{c:05d}")
            for c in range(CUSTOMERS)
        ]
    )


QUERIES = {
    "rare": [*RARE[:8], "SF1234567", "9876.5", "尺寸 77mm", "HX-70"],
    "common": ["耐高温材料", "价格", "您好", "交期大概多久", "有现货", "含税价", "发货", "液压元件", "报价单", "的"],
    "two-char": ["液压", "漏油", "轴承", "样品", "质保", "投诉", "顺丰", "折的", "料的", "到货"],
}


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


async def like_ids(conn: Any, postgres: bool, query: str) -> set[str]:
    escaped = query.lower().replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    if postgres:
        sql = "SELECT msgid FROM message WHERE NOT to_bot AND lower(text) LIKE $1 ESCAPE '\\'"
    else:
        sql = "SELECT msgid FROM message WHERE to_bot = 0 AND lower(text) LIKE ? ESCAPE '\\'"
    return {str(r["msgid"]) for r in await conn.execute_query_dict(sql, [f"%{escaped}%"])}


async def search_ids(conn: Any, query: str) -> set[str]:
    """Every hit of the index query (no limit), as the search runs it."""
    found = await search.search(conn, query, staff=None, limit=0, count=False)
    return {h.msgid for h in found.hits}


async def run(args: argparse.Namespace) -> dict[str, Any]:
    workdir = Path(tempfile.mkdtemp(prefix="crmbot-bench-"))
    data = Path(args.file) if args.file else workdir / "chat.jsonl"
    if not args.file and not args.reuse:
        t = time.perf_counter()
        generate(data, args.n)
        print(f"generated {args.n} messages in {time.perf_counter() - t:.1f}s ({data.stat().st_size >> 20} MiB)")
    if args.reuse:
        url = args.reuse
    elif args.db == "postgres":
        url = await fresh_pg(args.pg, args.db_name)
    else:
        url = f"sqlite://{workdir}/bench.sqlite3"
    settings = load_settings(os.devnull, database={"url": url})
    app = create_app(settings, run_dispatcher=False, run_scheduler=False)
    if args.without_keyword_rules:
        from handlers.keywords import on_archived

        app[BOT].archive_hooks.remove(on_archived)
    from aiohttp import web

    runner = web.AppRunner(app, handle_signals=False)
    await runner.setup()
    result: dict[str, Any] = {"db": args.db, "n": args.n, "keyword_rules": not args.without_keyword_rules}
    try:
        if args.fast_fill:
            await seed_people()
            t = time.perf_counter()
            filled = await fast_fill(url, data, args.fast_fill)
            print(f"filled {filled} messages in {time.perf_counter() - t:.1f}s", flush=True)
        elif not args.reuse:
            await seed_people()
            t, cpu = time.perf_counter(), time.process_time()
            summary = await import_jsonl(app, data)
            elapsed, cpu = time.perf_counter() - t, time.process_time() - cpu
            print(summary.splitlines()[0])
            result["import_seconds"] = round(elapsed, 1)
            result["import_per_second"] = round(args.n / elapsed)
            result["import_cpu_seconds"] = round(cpu, 1)
            print(
                f"import: {args.n} in {elapsed:.1f}s = {args.n / elapsed:.0f} msg/s (this process: {cpu:.1f} CPU-s"
                f" = {args.n / cpu:.0f} msg per CPU-second; load {os.getloadavg()[0]:.1f})",
                flush=True,
            )
        if args.import_only:
            return result
        conn = connections.get("default")
        if not search.is_postgres(conn):
            await conn.execute_script("ANALYZE")
        else:
            await conn.execute_script("VACUUM ANALYZE")
        rep = await staff_with_account("wecom", "rep007")
        result["latency_ms"] = {}
        for kind, queries in QUERIES.items():
            for who, staff in (("admin", None), ("rep", rep)):
                for count in (False, True):
                    times = []
                    for _ in range(args.rounds):
                        for q in queries:
                            t = time.perf_counter()
                            await search.search(conn, q, staff=staff, limit=20, count=count)
                            times.append((time.perf_counter() - t) * 1000)
                    label = f"{kind} {who} {'top20+total' if count else 'top20'}"
                    result["latency_ms"][label] = {"p50": round(pct(times, 0.5), 2), "p95": round(pct(times, 0.95), 2)}
                    print(f"{label:32s} p50 {pct(times, 0.5):8.2f} ms  p95 {pct(times, 0.95):8.2f} ms")
        if args.skip_recall:
            return result
        recall: dict[str, Any] = {}
        for queries in QUERIES.values():
            for q in queries:
                expected = await like_ids(conn, search.is_postgres(conn), q)
                got = await search_ids(conn, q)
                recall[q] = {
                    "like": len(expected),
                    "index": len(got),
                    "missed": len(expected - got),
                    "extra": len(got - expected),
                }
        result["recall"] = recall
        misses = sum(r["missed"] for r in recall.values())
        extras = sum(r["extra"] for r in recall.values())
        total = sum(r["like"] for r in recall.values())
        print(
            f"recall vs LIKE: {total - misses}/{total} hits found, {extras} extra, per query: "
            + ", ".join(f"{q}={r['like']}" for q, r in recall.items())
        )
        result["recall_total"] = {"like_hits": total, "missed": misses, "extra": extras}
    finally:
        await runner.cleanup()
        if args.db == "postgres" and not args.reuse:
            await drop_pg(args.pg, url)
        if not os.environ.get("BENCH_KEEP_DB"):
            shutil.rmtree(workdir, ignore_errors=True)
    return result


FILL_CHUNK = 20_000
DOC_COLUMNS = ["key", "message_id", "customer_id", "body", "grams"]


async def fast_fill(url: str, data: Path, workers: int) -> int:
    """PostgreSQL only, for runs at 10M: fill ``message`` and ``search_doc`` with the rows the archive path would
    write for ``data`` (the same normalization, customer and rep links, payload, order keys and grams), copied in
    by ``workers`` processes with the GIN index dropped and built afterwards. Returns the number of messages."""
    import multiprocessing

    import asyncpg

    conn = connections.get("default")
    first, last = (
        search.month_of(search.time_key(START)),
        search.month_of(search.time_key(START) + (SPAN_SECONDS * 1000 << 20)),
    )
    await search.ensure_partitions(range(first, last + 1))
    contacts = {
        str(r["e"]): int(r["c"])
        for r in await conn.execute_query_dict("SELECT external_userid AS e, customer_id AS c FROM contact")
    }
    staff = {
        str(r["u"]): int(r["s"])
        for r in await conn.execute_query_dict(
            "SELECT user_id AS u, staff_id AS s FROM staff_account WHERE platform = 'wecom'"
        )
    }
    await conn.execute_script("DROP INDEX IF EXISTS search_doc_grams")
    context = multiprocessing.get_context("fork")
    procs = [
        context.Process(target=_fill_worker, args=(url, data, w, workers, contacts, staff)) for w in range(workers)
    ]
    for proc in procs:
        proc.start()
    for proc in procs:
        await asyncio.to_thread(proc.join)
        if proc.exitcode:
            raise RuntimeError(f"fill worker failed ({proc.exitcode})")
    raw = await asyncpg.connect(url.replace("postgres://", "postgresql://"))
    try:
        await raw.execute("SET maintenance_work_mem = '1GB'")
        await raw.execute("SELECT setval('message_id_seq', (SELECT max(id) FROM message))")
        await raw.execute("CREATE INDEX search_doc_grams ON search_doc USING GIN (grams)")
        return int(await raw.fetchval("SELECT count(*) FROM message"))
    finally:
        await raw.close()


def _fill_worker(
    url: str, data: Path, worker: int, workers: int, contacts: dict[str, int], staff: dict[str, int]
) -> None:
    asyncio.run(_fill(url, data, worker, workers, contacts, staff))


async def _fill(
    url: str,
    data: Path,
    worker: int,
    workers: int,
    contacts: dict[str, int],
    staff: dict[str, int],
    resume: tuple[int, int] = (0, 0),
) -> None:
    """Every ``workers``-th line from ``worker`` on; ``resume``: the last message and document ids already there."""
    import asyncpg

    from bot.jsontext import compact_json
    from bot.messages import payload_of
    from integrations.wecom.archive import normalize_record

    raw = await asyncpg.connect(url.replace("postgres://", "postgresql://"))
    now = datetime.now(UTC)
    messages: list[tuple[Any, ...]] = []
    docs: list[tuple[Any, ...]] = []

    async def flush() -> None:
        if messages:
            await raw.copy_records_to_table(
                "message",
                records=messages,
                columns=[
                    "id",
                    "platform",
                    "msgid",
                    "to_bot",
                    "sender",
                    "receivers",
                    "room_id",
                    "msgtype",
                    "text",
                    "payload",
                    "staff_id",
                    "customer_id",
                    "sent_at",
                    "received_at",
                ],
            )
        # Two messages of the same millisecond whose ids agree in their low 20 bits would share an order key: the
        # archive path steps such a key down (search._free_keys), and so does this.
        await raw.execute("CREATE TEMP TABLE IF NOT EXISTS fill_docs (LIKE search_doc INCLUDING DEFAULTS)")
        await raw.copy_records_to_table("fill_docs", records=docs, columns=DOC_COLUMNS)
        placed = await raw.fetch(
            "WITH d AS (DELETE FROM fill_docs RETURNING *) INSERT INTO search_doc SELECT * FROM d"
            " ON CONFLICT (key) DO NOTHING RETURNING message_id"
        )
        left = {r[1]: r for r in docs}
        for r in placed:
            del left[r["message_id"]]
        for key, mid, customer, body, tokens in left.values():
            while not await raw.fetchval(
                "INSERT INTO search_doc (key, message_id, customer_id, body, grams) VALUES ($1, $2, $3, $4, $5)"
                " ON CONFLICT (key) DO NOTHING RETURNING key",
                key,
                mid,
                customer,
                body,
                tokens,
            ):
                key -= 1
        messages.clear()
        docs.clear()

    try:
        with data.open("rb") as f:
            for i, line in enumerate(f):
                if i % workers != worker or i + 1 <= resume[1]:
                    continue
                m = normalize_record(json.loads(line))
                people = (m.sender, *m.receivers)
                customer = next((contacts[u] for u in people if u in contacts), None)
                rep = next((staff[u] for u in people if u in staff), None)
                mid = i + 1
                if mid > resume[0]:
                    messages.append(
                        (
                            mid,
                            "wecom",
                            m.msgid,
                            False,
                            m.sender,
                            compact_json(list(m.receivers)),
                            "",
                            m.msgtype,
                            m.text,
                            compact_json(payload_of(m)),
                            rep,
                            customer,
                            m.sent_at,
                            now,
                        )
                    )
                body = search.normalize(m.text)
                tokens = search.index_grams(body) + ([search.customer_token(customer)] if customer is not None else [])
                docs.append((search.order_key(m.sent_at, mid), mid, customer, body, tokens))
                if len(docs) >= FILL_CHUNK:
                    await flush()
        if docs:
            await flush()
    finally:
        await raw.close()


async def fresh_pg(admin_url: str, name: str = "crmbot_bench") -> str:
    import asyncpg

    conn = await asyncpg.connect(admin_url.replace("postgres://", "postgresql://"))
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    return urlunsplit(urlsplit(admin_url)._replace(path="/" + name))


async def drop_pg(admin_url: str, url: str) -> None:
    import asyncpg

    if os.environ.get("BENCH_KEEP_DB"):
        return
    conn = await asyncpg.connect(admin_url.replace("postgres://", "postgresql://"))
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{urlsplit(url).path[1:]}" WITH (FORCE)')
    finally:
        await conn.close()


COLLECT_ALL = """
import asyncio, json, sys
from tortoise import connections
from bot import search
from bot.app import load_settings
from bot.cli import parse_now, running_app
settings = load_settings(sys.argv[1])
async def go():
    async with running_app(settings):
        found = await search.search(
            connections.get("default"), sys.argv[2], staff=None, since=parse_now(sys.argv[3] or None, settings),
            limit=0,
        )
        hits = [h.as_json(settings.tz) for h in found.hits]
        print(json.dumps({"query": sys.argv[2], "total": found.total, "hits": hits}, ensure_ascii=False))
asyncio.run(go())
"""


def every_hit(url: str, query: str, since: str, rounds: int) -> None:
    """``crmbot search QUERY --limit 0 --json`` (streamed) against the same hits gathered in one list first and then
    printed (what the command did before it streamed), each a subprocess: seconds and peak RSS."""
    workdir = Path(tempfile.mkdtemp(prefix="crmbot-every-hit-"))
    config = workdir / "config.toml"
    config.write_text(f'[database]\nurl = "{url}"\n', encoding="utf-8")
    commands = {
        "streamed (crmbot search --limit 0)": [
            sys.executable,
            "-m",
            "bot.cli",
            "search",
            query,
            "--limit",
            "0",
            "--json",
            "--config",
            str(config),
            *(["--since", since] if since else []),
        ],
        "gathered first (before)": [sys.executable, "-c", COLLECT_ALL, str(config), query, since],
    }
    for _ in range(rounds):
        for label, command in commands.items():
            t = time.perf_counter()
            with (workdir / "out.json").open("w") as out:
                proc = subprocess.Popen(command, stdout=out, cwd=Path(__file__).resolve().parent.parent)
                _, status, usage = os.wait4(proc.pid, 0)
            elapsed = time.perf_counter() - t
            hits = json.loads((workdir / "out.json").read_text())["total"] if status == 0 else -1
            print(
                f"{label:36s} {hits} hits in {elapsed:.1f}s, peak RSS {usage.ru_maxrss / 1024:.0f} MB"
                f" (load {os.getloadavg()[0]:.1f})",
                flush=True,
            )
    shutil.rmtree(workdir, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=100_000)
    parser.add_argument("--db", choices=["sqlite", "postgres"], default="sqlite")
    parser.add_argument("--pg", default="postgres://postgres@127.0.0.1:5432/test")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--json", dest="json_out", default="")
    parser.add_argument("--file", default="", help="import this JSON Lines file (of --n lines) instead of generating")
    parser.add_argument("--db-name", default="crmbot_bench", help="PostgreSQL: the database to create")
    parser.add_argument(
        "--fast-fill", type=int, default=0, metavar="WORKERS", help="PostgreSQL: fill by COPY (see fast_fill)"
    )
    parser.add_argument("--import-only", action="store_true", help="stop after the import (with BENCH_KEEP_DB=1)")
    parser.add_argument("--reuse", default="", help="database URL of an earlier run (BENCH_KEEP_DB=1): only query")
    parser.add_argument(
        "--without-keyword-rules",
        action="store_true",
        help="time the archive path without the keyword-rules hook (handlers.keywords.on_archived)",
    )
    parser.add_argument(
        "--skip-recall",
        action="store_true",
        help="time the queries only (the recall check reads every hit: about 40 minutes at 10M on 2 cores)",
    )
    parser.add_argument("--every-hit", default="", metavar="QUERY", help="with --reuse: time --limit 0 for QUERY")
    parser.add_argument("--since", default="", help="with --every-hit: only hits since this date")
    args = parser.parse_args()
    if args.every_hit:
        every_hit(args.reuse, args.every_hit, args.since, args.rounds)
        return
    result = asyncio.run(run(args))
    if args.json_out:
        Path(args.json_out).write_text(json.dumps(result, ensure_ascii=False, indent=1))


if __name__ == "__main__":
    main()
