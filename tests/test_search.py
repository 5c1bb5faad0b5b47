"""Search: a rep types 搜 … in WeCom and finds every fragment a grep would find, within their data scope."""

from __future__ import annotations

import json
import random
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from tortoise import connections
from tortoise.transactions import in_transaction

from bot import search
from bot.demo import load_demo
from bot.keys import BOT
from bot.types import IncomingMessage
from integrations.wecom.archive_file import import_jsonl
from models.messages import Message
from models.staff import Staff
from tests.helpers import deliver_all, post_wecom, staff_with_account, text_xml

T0 = datetime(2026, 3, 1, 9, 0, tzinfo=UTC)

# (external contact of the customer, staff userid, text). Demo owners: 华为/比亚迪 张三, 恒力液压 李四.
LINES = [
    ("wmHW001", "zhangsan", "您好，我们的耐高温材料样品已经寄出，请查收"),
    ("wmHW001", "zhangsan", "高温材料的报价单稍后发您，含税价 128.5 元/kg"),
    ("wmBYD01", "zhangsan", "液压元件这周能交货吗？急用"),
    ("wmHL001", "lisi", "恒力这边液压元件订单 300 套，交期 15 天"),
    ("wmHL001", "lisi", "Model HX-3000 的 O 型圈是否耐高温？"),
    ("wmHW001", "zhangsan", "材料的耐温等级：高温 350℃，耐高温材料 A 级"),
    ("wmBYD01", "zhangsan", "上次的 hx-3000 漏油了，麻烦售后看看 !!!"),
    ("wmHL001", "lisi", "好的 好的，谢谢"),
]


def record(i: int, external: str, staff: str, text: str, from_customer: bool) -> dict[str, Any]:
    sender, receiver = (external, staff) if from_customer else (staff, external)
    return {
        "msgid": f"m{i:04d}",
        "action": "send",
        "from": sender,
        "tolist": [receiver],
        "roomid": "",
        "msgtime": int((T0 + timedelta(hours=i)).timestamp() * 1000),
        "msgtype": "text",
        "text": {"content": text},
    }


async def archive_lines(app: Any, tmp_path: Path) -> list[dict[str, Any]]:
    records = [record(i, ext, staff, text, i % 2 == 0) for i, (ext, staff, text) in enumerate(LINES)]
    path = tmp_path / "chat.jsonl"
    path.write_text("\n".join(json.dumps(r, ensure_ascii=False) for r in records) + "\n", encoding="utf-8")
    await import_jsonl(app, path)
    return records


BEFORE_DEMO = T0 + timedelta(days=1)  # the demo's own conversations are of the last weeks


async def hit_ids(query: str, staff: Staff | None = None, **filters: Any) -> list[str]:
    found = await search.search(connections.get("default"), query, staff=staff, limit=0, **filters)
    assert found.total == len(found.hits)
    return [h.msgid for h in found.hits]


async def grep(query: str) -> list[str]:
    """What a grep over every archived conversation message finds, newest first."""
    q = query.lower()
    rows = await Message.filter(to_bot=False).order_by("-sent_at", "-id")
    return [m.msgid for m in rows if q in m.text.lower()]


async def test_every_substring_is_found_exactly_as_grep_finds_it(
    make_settings: Any, start_app: Any, tmp_path: Path
) -> None:
    client = await start_app(make_settings())
    await load_demo(client.app)
    records = await archive_lines(client.app, tmp_path)
    texts = [r["text"]["content"] for r in records]
    queries = {t[i : i + n] for t in texts for n in (1, 2, 3, 4, 7) for i in range(len(t) - n + 1)}
    queries |= {"高温材料", "HX-3000", "hx-3000", "Hx", "!!!", "128.5", "好的 好的", " ", "不存在的词", "温 3"}
    for query in sorted(queries):
        if not query.strip():
            continue
        assert await hit_ids(query) == await grep(query), query


async def test_random_queries_match_grep(make_settings: Any, start_app: Any) -> None:
    """Random texts over a small alphabet (CJK, ASCII of both cases, digits, punctuation, spaces), with what the
    index's copy format and array literals must escape: backslashes, quotes, braces, commas, tabs and line ends."""
    client = await start_app(make_settings())
    bot = client.app[BOT]
    rng = random.Random(7)
    alphabet = "耐高温材料液压元件aAbB12.-% ，\\\"{},'\t\n\r"
    records = []
    for i in range(150):
        text = "".join(rng.choice(alphabet) for _ in range(rng.randint(1, 30)))
        records.append({"msgid": f"r{i}", "msgtime": i, "text": {"content": text}})
        await bot.archive(
            IncomingMessage(
                platform="wecom",
                msgid=f"r{i}",
                sender="wmX",
                text=text,
                sent_at=T0 + timedelta(minutes=i),
                to_bot=False,
            )
        )
    stored = {m.msgid: m.text for m in await Message.filter(msgid__startswith="r")}
    assert stored == {r["msgid"]: r["text"]["content"] for r in records}  # written through COPY intact
    for _ in range(300):
        source = rng.choice(records)["text"]["content"]
        start = rng.randrange(len(source))
        query = source[start : start + rng.randint(1, 5)]
        if rng.random() < 0.3:
            query = "".join(rng.choice(alphabet) for _ in range(rng.randint(1, 3)))
        if query.strip():
            assert await hit_ids(query) == await grep(query), query


async def test_a_rep_sees_own_customers_a_manager_the_team_an_admin_everything(
    make_settings: Any, start_app: Any, tmp_path: Path
) -> None:
    client = await start_app(make_settings())
    await load_demo(client.app)
    await archive_lines(client.app, tmp_path)
    zhangsan, lisi = await staff_with_account("wecom", "zhangsan"), await staff_with_account("wecom", "lisi")
    manager, admin = await staff_with_account("wecom", "wangjl"), await staff_with_account("wecom", "admin")

    assert await hit_ids("液压元件", zhangsan, until=BEFORE_DEMO) == ["m0002"]
    assert await hit_ids("液压元件", lisi, until=BEFORE_DEMO) == ["m0003"]
    assert await hit_ids("液压元件", manager, until=BEFORE_DEMO) == ["m0003", "m0002"]
    assert await hit_ids("液压元件", admin, until=BEFORE_DEMO) == ["m0003", "m0002"]
    assert await hit_ids("HX-3000", zhangsan) == ["m0006"]
    chengong = await staff_with_account("wecom", "chengong")  # a rep with no customers
    assert await hit_ids("的", chengong) == []


async def test_filters_customer_time_and_sender(make_settings: Any, start_app: Any, tmp_path: Path) -> None:
    client = await start_app(make_settings())
    await load_demo(client.app)
    await archive_lines(client.app, tmp_path)
    huawei = await Message.get(msgid="m0000")
    assert await hit_ids("高温", customer_id=huawei.customer_id, until=BEFORE_DEMO) == ["m0005", "m0001", "m0000"]
    assert await hit_ids("高温", since=T0 + timedelta(hours=1), until=BEFORE_DEMO) == ["m0005", "m0004", "m0001"]
    assert await hit_ids("高温", until=T0 + timedelta(hours=1)) == ["m0000"]
    assert await hit_ids("高温", sender="zhangsan", until=BEFORE_DEMO) == ["m0005", "m0001"]


async def test_newest_first_with_a_highlighted_snippet_and_the_total(
    make_settings: Any, start_app: Any, tmp_path: Path
) -> None:
    client = await start_app(make_settings())
    await load_demo(client.app)
    await archive_lines(client.app, tmp_path)
    found = await search.search(connections.get("default"), "耐高温材料", staff=None, limit=1, until=BEFORE_DEMO)
    assert found.total == 2
    [hit] = found.hits
    assert hit.msgid == "m0005"
    assert hit.customer == "华为技术有限公司"
    assert hit.sender == "张三"  # the rep who wrote it, by name
    assert "【耐高温材料】" in hit.snippet
    assert hit.time == T0 + timedelta(hours=5)


def test_snippet_marks_the_hit_in_about_forty_characters() -> None:
    text = "前" * 50 + "耐高温材料" + "后" * 50
    cut = search.snippet(text, "耐高温材料")
    assert "【耐高温材料】" in cut
    assert cut.startswith("…") and cut.endswith("…")
    assert 38 <= len(cut) <= 48


async def test_a_rep_searches_in_wecom_and_gets_the_top_fragments(
    make_settings: Any, start_app: Any, wecom_sim: Any, tmp_path: Path
) -> None:
    client = await start_app(make_settings())
    await load_demo(client.app)
    await client.app[BOT].understanding.refresh()
    for i in range(8):
        await client.app[BOT].archive(
            IncomingMessage(
                platform="wecom",
                msgid=f"x{i}",
                sender="zhangsan",
                receivers=("wmHW001",),
                text=f"第{i}批耐高温材料已发货",
                sent_at=T0 + timedelta(days=i),
                to_bot=False,
            )
        )
    await post_wecom(client, text_xml("zhangsan", "搜 批耐高温材料", 9101))
    await post_wecom(client, text_xml("lisi", "搜 批耐高温材料", 9102))
    await post_wecom(client, text_xml("zhangsan", "搜 不存在的东西", 9103))
    await deliver_all(client.app)

    answers = wecom_sim.texts_to("zhangsan")  # in any order, with the keyword rules' pushes
    [reply] = [t for t in answers if "找到 8 条" in t]
    assert "华为技术有限公司" in reply
    assert "第7【批耐高温材料】已发货" in reply
    assert reply.index("2026-03-08") < reply.index("2026-03-07")  # newest first, in local time
    assert "还有 3 条" in reply
    assert "没有找到包含「批耐高温材料」的聊天记录" in "\n".join(wecom_sim.texts_to("lisi"))
    assert "没有找到包含「不存在的东西」的聊天记录" in "\n".join(answers)


async def test_the_customer_filter_in_chat(make_settings: Any, start_app: Any, wecom_sim: Any, tmp_path: Path) -> None:
    client = await start_app(make_settings())
    await load_demo(client.app)
    await client.app[BOT].understanding.refresh()
    await archive_lines(client.app, tmp_path)
    await post_wecom(client, text_xml("lisi", "搜 液压元件 客户:恒力液压", 9201))
    await post_wecom(client, text_xml("lisi", "搜 液压元件 客户:比亚迪", 9202))
    await deliver_all(client.app)
    texts = wecom_sim.texts_to("lisi")  # two answers, in either order
    assert any("找到 2 条" in t and "恒力液压有限公司" in t for t in texts)  # mine and the demo's own
    assert any("「比亚迪股份有限公司」不是您或您团队的客户" in t for t in texts)


async def test_months_far_apart_land_and_are_found_newest_first(
    make_settings: Any, start_app: Any, tmp_path: Path
) -> None:
    """An archive spanning decades: a message of 1999 and one of 2041 land (on PostgreSQL in partitions of their
    months, created as they come) and every search reads the months newest first."""
    client = await start_app(make_settings())
    moments = [
        datetime(1999, 12, 31, 23, 59, tzinfo=UTC),
        datetime(2026, 1, 15, tzinfo=UTC),
        datetime(2026, 2, 1, tzinfo=UTC),
        datetime(2026, 2, 28, 23, 59, 59, tzinfo=UTC),
        datetime(2041, 6, 1, tzinfo=UTC),
    ]
    path = tmp_path / "years.jsonl"
    records = [
        {
            "msgid": f"y{i}",
            "from": "wmX",
            "tolist": ["zhangsan"],
            "msgtime": int(at.timestamp() * 1000),
            "msgtype": "text",
            "text": {"content": f"第{i}条：耐高温材料"},
        }
        for i, at in enumerate(moments)
    ]
    path.write_text("\n".join(json.dumps(r, ensure_ascii=False) for r in records) + "\n", encoding="utf-8")
    await import_jsonl(client.app, path)
    conn = connections.get("default")

    assert await hit_ids("耐高温材料") == ["y4", "y3", "y2", "y1", "y0"] == await grep("耐高温材料")
    top = await search.search(conn, "耐高温材料", staff=None, limit=2)
    assert ([h.msgid for h in top.hits], top.total, top.estimated) == (["y4", "y3"], 5, False)
    before_2030 = await search.search(conn, "材料", staff=None, limit=3, until=datetime(2030, 1, 1, tzinfo=UTC))
    assert [h.msgid for h in before_2030.hits] == ["y3", "y2", "y1"]
    assert [h.time for h in before_2030.hits] == moments[3:0:-1]
    streamed = [hit.msgid async for chunk in search.stream(conn, "温", staff=None) for hit in chunk]
    assert streamed == ["y4", "y3", "y2", "y1", "y0"]
    if search.is_postgres(conn):
        held = await conn.execute_query_dict(
            "SELECT c.relname AS name FROM search_doc d JOIN pg_class c ON c.oid = d.tableoid ORDER BY d.key"
        )
        assert [r["name"] for r in held] == [
            "search_doc_y1999m12",
            "search_doc_y2026m01",
            "search_doc_y2026m02",
            "search_doc_y2026m02",
            "search_doc_y2041m06",
        ]
        # Every partition, those made ahead at start-up and those made as the months came, plans its gram arrays
        # with the smaller statistics target.
        targets = await conn.execute_query_dict(
            "SELECT c.relname AS name, a.attstattarget AS target FROM pg_inherits i"
            " JOIN pg_class c ON c.oid = i.inhrelid JOIN pg_attribute a ON a.attrelid = c.oid AND a.attname = 'grams'"
            " WHERE i.inhparent = 'search_doc'::regclass AND c.relname LIKE 'search_doc_y%'"
        )
        assert len(targets) > 5 and {int(r["target"]) for r in targets} == {search.GRAM_STATISTICS}


async def test_beyond_the_count_bound_the_total_is_an_estimate(
    make_settings: Any, start_app: Any, wecom_sim: Any, tmp_path: Path
) -> None:
    client = await start_app(make_settings(search={"count_bound": 20}))
    await load_demo(client.app)
    await client.app[BOT].understanding.refresh()
    path = tmp_path / "many.jsonl"
    records = [
        {
            "msgid": f"e{i}",
            "from": "zhangsan",
            "tolist": ["wmHW001"],
            "msgtime": int((T0 + timedelta(days=i * 2)).timestamp() * 1000),
            "msgtype": "text",
            "text": {"content": f"第{i}批耐高温材料已发货"},
        }
        for i in range(45)
    ]
    path.write_text("\n".join(json.dumps(r, ensure_ascii=False) for r in records) + "\n", encoding="utf-8")
    await import_jsonl(client.app, path)
    conn = connections.get("default")

    bounded = await search.search(conn, "批耐高温材料", staff=None, limit=5, count_bound=20)
    assert bounded.estimated and bounded.total > 20
    assert [h.msgid for h in bounded.hits] == ["e44", "e43", "e42", "e41", "e40"]
    exact = await search.search(conn, "批耐高温材料", staff=None, limit=5, count_bound=100)
    assert (exact.total, exact.estimated) == (45, False)

    await post_wecom(client, text_xml("zhangsan", "搜 批耐高温材料", 9301))
    await deliver_all(client.app)
    [reply] = [t for t in wecom_sim.texts_to("zhangsan") if "批耐高温材料" in t and "找到" in t]
    assert f"找到{search.about(bounded.total)}条包含「批耐高温材料」的聊天记录" in reply
    assert "还有约" in reply
    assert search.about(351_055) == "约 35 万" and search.about(12_345) == "约 1.2 万"


async def test_two_messages_whose_order_keys_collide_are_both_found(make_settings: Any, start_app: Any) -> None:
    """Messages sent in the same millisecond whose ids agree in their low 20 bits share an order key; the second
    one's key steps down, and a search finds both."""
    client = await start_app(make_settings())
    bot = client.app[BOT]

    async def archive(msgid: str, text: str) -> int:
        msg = IncomingMessage(platform="wecom", msgid=msgid, sender="wmX", text=text, sent_at=T0, to_bot=False)
        assert await bot.archive(msg)
        return int((await Message.get(msgid=msgid)).id)

    first = await archive("k1", "碰撞的订单号 A")
    conn = connections.get("default")
    next_id = first + (1 << search.KEY_SHIFT)
    if search.is_postgres(conn):
        await conn.execute_query("SELECT setval('message_id_seq', $1)", [next_id - 1])
    else:  # the next row id follows the largest one there
        await Message.create(id=next_id - 1, platform="wecom", msgid="filler", to_bot=True, sender="u", sent_at=T0)
    second = await archive("k2", "碰撞的订单号 B")
    assert second == next_id
    assert search.order_key(T0, first) == search.order_key(T0, second)
    assert await hit_ids("碰撞的订单号") == ["k1", "k2"]
    assert await hit_ids("订单号 B") == ["k2"]


async def test_a_year_of_a_reps_archive_counted_and_walked_alike_in_or_out_of_a_transaction(
    make_settings: Any, start_app: Any, wecom_sim: Any, tmp_path: Path
) -> None:
    """A year of one customer's conversations, a month's partition each on PostgreSQL: a word in the older months,
    more of it each month, and a word only in the oldest one. The rep's search counts and walks the whole year: on
    the pool (as `crmbot search` runs it) on PostgreSQL two halves of it at once, inside a transaction (one
    connection, as a search in chat runs in the handling's) in one go. Both give the hits and totals a grep gives,
    exact, or past the bound an estimate from the months counted, and so does the search in chat."""
    client = await start_app(make_settings())
    await load_demo(client.app)
    await client.app[BOT].understanding.refresh()
    start = datetime(2025, 1, 3, tzinfo=UTC)
    records = []
    for month in range(12):
        for day in range(10):
            at = start + timedelta(days=month * 30.4 + day)
            # Statements from January to August only, more of them each month: 36 in all, unevenly spread.
            text = f"{month + 1}月第{day}份对账单已发" if day <= month < 8 else f"{month + 1}月的例行沟通{day}"
            if month == 0 and day in (5, 6):
                text = f"停产通知：旧型号 {day} 号起不再供货"
            records.append(
                {
                    "msgid": f"y{month:02d}{day}",
                    "from": "wmHW001" if day % 2 else "zhangsan",
                    "tolist": ["zhangsan" if day % 2 else "wmHW001"],
                    "msgtime": int(at.timestamp() * 1000),
                    "msgtype": "text",
                    "text": {"content": text},
                }
            )
    path = tmp_path / "year.jsonl"
    path.write_text("\n".join(json.dumps(r, ensure_ascii=False) for r in records) + "\n", encoding="utf-8")
    await import_jsonl(client.app, path)
    rep = await staff_with_account("wecom", "zhangsan")
    conn = connections.get("default")
    if search.is_postgres(conn):  # the months' row estimates, as the autovacuum daemon keeps them
        await conn.execute_script("ANALYZE search_doc")

    for query, grepped in (("对账单", 36), ("停产通知", 2), ("的例", 82)):
        expected = await grep(query)
        assert len(expected) == grepped
        for bound in (1_000, 30, 20):
            outside = await search.search(conn, query, staff=rep, limit=5, count_bound=bound)
            async with in_transaction() as tx:
                inside = await search.search(tx, query, staff=rep, limit=5, count_bound=bound)
            assert [h.msgid for h in outside.hits] == [h.msgid for h in inside.hits] == expected[:5]
            assert (outside.total, outside.estimated) == (inside.total, inside.estimated)
            if grepped <= bound:
                assert (outside.total, outside.estimated) == (grepped, False)
            else:
                assert outside.estimated and outside.total > bound
        assert await hit_ids(query, rep) == expected

    await post_wecom(client, text_xml("zhangsan", "搜 停产通知", 9401))
    await post_wecom(client, text_xml("zhangsan", "搜 对账单", 9402))
    await deliver_all(client.app)
    answers = wecom_sim.texts_to("zhangsan")
    [rare] = [t for t in answers if "停产通知" in t and "找到" in t]
    assert "找到 2 条" in rare and rare.index("6 号起") < rare.index("5 号起")
    [common] = [t for t in answers if "对账单" in t and "找到" in t]
    assert "找到 36 条" in common and "8月第7份【对账单】已发" in common
