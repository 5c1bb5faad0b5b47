"""Search over years of archive: a word of long ago is found across dozens of months, newest first, with the total
exact up to the bound and estimated beyond it; every hit of a frequent word streams a chunk at a time."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from tortoise import connections

from bot import search
from bot.demo import load_demo
from integrations.wecom.archive_file import import_jsonl
from models.messages import Message
from models.staff import Staff
from tests.helpers import staff_with_account

# Demo owners: 华为 (wmHW001) and 比亚迪 (wmBYD01) are 张三's, 恒力液压 (wmHL001) 李四's.
CONTACTS = ["wmHW001", "wmBYD01", "wmHL001"]
MONTHS = 40  # this month, one ahead, and 38 before: as many partitions as three years of archive


def month_start(offset: int) -> datetime:
    """The first moment of the month ``offset`` months from this one (UTC)."""
    now = datetime.now(UTC)
    month = now.year * 12 + now.month - 1 + offset
    return datetime(month // 12, month % 12 + 1, 1, tzinfo=UTC)


def line(msgid: str, contact: str, at: datetime, text: str) -> str:
    record = {
        "msgid": msgid,
        "from": contact,
        "tolist": ["zhangsan" if contact != "wmHL001" else "lisi"],
        "msgtime": int(at.timestamp() * 1000),
        "msgtype": "text",
        "text": {"content": text},
    }
    return json.dumps(record, ensure_ascii=False)


async def grep(query: str, staff: Staff | None) -> list[str]:
    """What a grep over the archived conversations the staff member may see finds, newest first."""
    scope = await search.Scope.of(staff) if staff is not None else search.Scope(None)
    rows = await Message.filter(to_bot=False).order_by("-sent_at", "-id")
    q = query.lower()
    return [
        m.msgid
        for m in rows
        if q in m.text.lower() and (scope.customer_ids is None or m.customer_id in scope.customer_ids)
    ]


async def test_a_word_of_long_ago_is_found_across_years_of_months(
    make_settings: Any, start_app: Any, tmp_path: Path
) -> None:
    client = await start_app(make_settings())
    await load_demo(client.app)
    lines = []
    for m in range(MONTHS):
        start = month_start(1 - m)
        for i in range(6):
            at = start + timedelta(days=i * 4, hours=m % 7)
            text = f"第{m}月第{i}条：价格已发，交期 15 天"
            if m in (3, 4, 29) and i == 2:
                text += "，型号 QX-9"
            if m % 3 == 0 and i < 2:
                text += "，上批有一台漏油"
            lines.append(line(f"s{m:02d}{i}", CONTACTS[(m + i) % 3], at, text))
    path = tmp_path / "years.jsonl"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    await import_jsonl(client.app, path)
    conn = connections.get("default")
    if search.is_postgres(conn):
        # The partitions' row estimates, which size the spans of months read in one statement.
        await conn.execute_script("ANALYZE search_doc")
        held = await conn.execute_query_dict(
            "SELECT count(DISTINCT d.tableoid) AS n FROM search_doc d WHERE strpos(d.body, '价格已发') > 0"
        )
        assert held[0]["n"] == MONTHS

    zhangsan, lisi = await staff_with_account("wecom", "zhangsan"), await staff_with_account("wecom", "lisi")
    # Queries of more than two bigrams side by side: on PostgreSQL the months' indexes are asked for the rarest of
    # them only (by the share of documents holding each, sampled once the partitions know their rows).
    for query in [
        "QX-9",
        "qx-9",
        "漏油",
        "价格已发",
        "第3",
        "第29月",
        "天",
        "价格已发，交期",
        "上批有一台漏油",
        "月第1条：价格",
    ]:
        for staff in (None, zhangsan, lisi):
            expected = await grep(query, staff)
            for limit in (1, 5, 20):
                found = await search.search(conn, query, staff=staff, limit=limit, count_bound=1_000)
                assert [h.msgid for h in found.hits] == expected[:limit], (query, staff, limit)
                assert (found.total, found.estimated) == (len(expected), False), (query, staff, limit)
    assert len(await grep("QX-9", None)) == 3
    if search.is_postgres(conn):
        assert (await search._sample(conn)).shares  # the rarest-grams path above was taken

    bounded = await search.search(conn, "价格已发", staff=None, limit=5, count_bound=100)
    assert bounded.estimated and bounded.total > 100
    assert [h.msgid for h in bounded.hits] == (await grep("价格已发", None))[:5]
    rep_bounded = await search.search(conn, "价格已发", staff=zhangsan, limit=5, count_bound=50)
    assert rep_bounded.estimated and rep_bounded.total > 50
    # Found mostly in older months: the statement that reads them reads past the bound, and the total is estimated.
    leaks = await search.search(conn, "漏油", staff=None, limit=20, count_bound=20)
    assert leaks.estimated and leaks.total > 20
    assert [h.msgid for h in leaks.hits] == (await grep("漏油", None))[:20]
    more = await search.search(conn, "漏油", staff=None, limit=25, count_bound=20)  # a limit above the bound
    assert [h.msgid for h in more.hits] == (await grep("漏油", None))[:25] and more.estimated


async def test_every_hit_of_a_frequent_word_streams_a_chunk_at_a_time(
    make_settings: Any, start_app: Any, tmp_path: Path
) -> None:
    client = await start_app(make_settings())
    await load_demo(client.app)
    this_month, last_month = month_start(0), month_start(-1)
    lines = [
        line(f"b{i:04d}", CONTACTS[i % 3], (this_month if i % 4 else last_month) + timedelta(minutes=i), f"批次{i}")
        for i in range(2_600)
    ]
    path = tmp_path / "batches.jsonl"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    await import_jsonl(client.app, path)
    conn = connections.get("default")

    chunks = [chunk async for chunk in search.stream(conn, "批次", staff=None)]
    assert all(0 < len(chunk) <= search.CHUNK for chunk in chunks)
    assert len(chunks) >= 3
    assert [h.msgid for chunk in chunks for h in chunk] == await grep("批次", None)
    zhangsan = await staff_with_account("wecom", "zhangsan")
    mine = [h.msgid async for chunk in search.stream(conn, "批次", staff=zhangsan) for h in chunk]
    assert mine == await grep("批次", zhangsan)
    assert len(mine) > search.CHUNK

    # Beyond the bound the total is an estimate from a sample of the documents; this archive is small enough that the
    # sample holds all of them, so the estimate is the count itself (on PostgreSQL, from the sample kept for an hour,
    # once the planner knows the partitions' sizes as autovacuum would have told it).
    if search.is_postgres(conn):
        await conn.execute_script("ANALYZE search_doc")
    found = await search.search(conn, "批次", staff=None, limit=20, count_bound=100)
    assert (found.total, found.estimated) == (2_600, True)
    assert [h.msgid for h in found.hits] == (await grep("批次", None))[:20]
    if search.is_postgres(conn):
        assert len((await search._sample(conn)).docs) >= search.MIN_SAMPLED
    recent = await search.search(conn, "批次", staff=None, limit=20, count_bound=100, since=this_month)
    assert (recent.total, recent.estimated) == (2_000, True)  # 1,950 of them, to two significant digits
