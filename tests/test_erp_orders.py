"""Orders the ERP pushes to ``POST /erp/orders``: a signed event or batch is written once, anything forged, stale,
replayed, malformed or over-large is refused with nothing written; the owner hears once per order and status, an
unpaid invoice once, and a customer who reorders every 11 months ±25 days is remembered at the end of month 10.
Rules run as the scheduler runs them (``run_rules`` at a fixed clock, then the outbox drains to the WeCom
simulator)."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

from aiohttp import web

from bot.clock import Clock
from bot.keys import CLOCK
from handlers.orders import import_orders
from handlers.orders.webhook import sign
from models.orders import Order, OrderEventSeen, OrderLine, OrderStatusChange, Repurchase
from models.staff import Role
from tests.driver import Client, WeComChat
from tests.helpers import in_pieces, staff_member
from tests.test_reminders import customer, rules_of, tick

SECRET = "erp-shared-secret"
# 2026-12-01 10:00 in Shanghai.
NOW = datetime(2026, 12, 1, 2, 0, tzinfo=UTC)


async def start(start_app: Any, make_settings: Any, clock: Clock, **erp: Any) -> Client:
    # The follow-up ladder stays quiet: these stories are about orders alone.
    quiet = {"ladder_warn_days": 100_000, "ladder_handover_days": 100_000}
    settings = make_settings(erp={"webhook_secret": SECRET, **erp}, rules=quiet)
    client: Client = await start_app(settings, clock=clock, run_scheduler=False, run_dispatcher=False)
    rep = await staff_member(name="张三", wecom="zhangsan", role=Role.REP)
    await customer("华为技术有限公司", rep, "华为")
    return client


def event(event_id: str, status: str, at: datetime = NOW, order_no: str = "SO-42", **fields: Any) -> dict[str, Any]:
    base = {"event_id": event_id, "order_no": order_no, "customer": "华为", "status": status, "at": at.isoformat()}
    return base | fields


async def post(
    client: Client,
    body: Any,
    *,
    secret: str = SECRET,
    timestamp: int | None = None,
    raw: bytes | None = None,
    pieces: bool = False,
) -> web.Response:
    data = raw if raw is not None else json.dumps(body, ensure_ascii=False).encode()
    ts = str(timestamp if timestamp is not None else int(client.app[CLOCK].now().timestamp()))
    headers = {"X-Crmbot-Timestamp": ts, "X-Crmbot-Signature": sign(secret, ts, data)}
    sent = in_pieces(data) if pieces else data
    resp: web.Response = await client.post("/erp/orders", data=sent, headers=headers)
    return resp


async def counts() -> tuple[int, int, int, int]:
    return (
        await Order.all().count(),
        await OrderLine.all().count(),
        await OrderStatusChange.all().count(),
        await OrderEventSeen.all().count(),
    )


PLACED = event(
    "e1",
    "下单",
    NOW - timedelta(days=10),
    order_date="2026-11-21",
    total=12000,
    lines=[
        {"product": "液压缸 HC-80", "quantity": 10, "amount": 9000},
        {"product": "密封件", "quantity": 30, "amount": 3000},
    ],
)


async def test_a_signed_batch_is_written_once_and_the_rep_can_ask_where_the_goods_are(
    start_app: Any, make_settings: Any, wecom_sim: Any
) -> None:
    client = await start(start_app, make_settings, Clock(NOW))
    shipped = event("e2", "shipped", carrier="顺丰速运", tracking_no="SF1234567890")
    resp = await post(client, {"events": [PLACED, event("e3", "production", NOW - timedelta(days=5)), shipped]})
    assert resp.status == 200, await resp.text()
    assert await resp.json() == {"accepted": 3, "orders": 1, "statuses": 3, "repeats": 0}

    order = await Order.get(order_no="SO-42")
    assert (order.source, str(order.total), order.order_date, order.status) == (
        "erp",
        "12000.00",
        date(2026, 11, 21),
        "shipped",
    )
    assert (order.carrier, order.tracking_no) == ("顺丰速运", "SF1234567890")
    assert sorted(str(x) for x in await OrderLine.filter(order_id=order.id).values_list("product", flat=True)) == [
        "密封件",
        "液压缸 HC-80",
    ]
    timeline = await OrderStatusChange.filter(order_id=order.id).order_by("at").values_list("status", flat=True)
    assert [str(s) for s in timeline] == ["placed", "production", "shipped"]

    # The ERP says "shipped" again (a new event id): known order and status, nothing new.
    resp = await post(client, event("e4", "已发货"))
    assert resp.status == 200 and (await resp.json())["repeats"] == 1
    assert await counts() == (1, 2, 3, 4)

    chat = WeComChat(client, wecom_sim)
    await chat.say("zhangsan", "华为的货发了吗")
    [answer] = chat.sent_to("zhangsan")
    assert "SO-42" in answer and "已发货" in answer and "SF1234567890" in answer
    await chat.say("zhangsan", "订单 华为")
    assert "SO-42" in chat.sent_to("zhangsan")[-1]
    await chat.say("zhangsan", "客户 华为")
    assert "进行中订单" in chat.sent_to("zhangsan")[-1] and "SF1234567890" in chat.sent_to("zhangsan")[-1]


async def test_forged_stale_replayed_malformed_and_oversized_requests_write_nothing(
    start_app: Any, make_settings: Any
) -> None:
    client = await start(start_app, make_settings, Clock(NOW), max_body_bytes=4096)
    assert (await post(client, PLACED)).status == 200
    before = await counts()
    now = int(NOW.timestamp())
    new = event("e9", "production")
    cases: list[tuple[int, dict[str, Any]]] = [
        (403, {"body": new, "secret": "guessed"}),
        (401, {"body": new, "timestamp": now - 301}),
        (401, {"body": new, "timestamp": now + 301}),
        (409, {"body": PLACED}),
        (409, {"body": {"events": [new, PLACED]}}),
        (400, {"body": None, "raw": b"{not json"}),
        # half a UTF-16 pair, escaped as JSON allows: no column can store it
        (400, {"body": None, "raw": json.dumps(event("e17", "production", note="备注\ud800")).encode()}),
        (400, {"body": {"events": []}}),
        (400, {"body": [new]}),
        (400, {"body": {"events": [new, event("e10", "teleported")]}}),
        (400, {"body": event("e11", "production", total=-5)}),
        (400, {"body": event("e12", "production", lines=[{"product": "泵", "quantity": -1, "amount": 0}])}),
        (400, {"body": event("e13", "production", total=100, lines=[{"product": "泵", "quantity": 1, "amount": 98}])}),
        (400, {"body": event("e14", "production") | {"at": "yesterday"}}),
        (400, {"body": event("e15", "production", customer="不存在的公司")}),
        (400, {"body": {k: v for k, v in new.items() if k != "event_id"}}),
        (413, {"body": event("e16", "production", note="x" * 5000)}),
    ]
    for status, request in cases:
        resp = await post(client, **request)
        assert resp.status == status, (request, await resp.text())
        assert await counts() == before, request
    unsigned = await client.post("/erp/orders", data=json.dumps(new).encode())
    assert unsigned.status == 401 and await counts() == before
    ts = str(now)
    for bad_ts, signature in ((ts, "签名" * 32), ("١٧٦٤" + ts[4:], sign(SECRET, ts, json.dumps(new).encode()))):
        headers = {"X-Crmbot-Timestamp": bad_ts, "X-Crmbot-Signature": signature}
        odd = await client.post("/erp/orders", data=json.dumps(new).encode(), headers=headers)
        assert odd.status in (401, 403) and await counts() == before
    # The good one still goes through afterwards.
    assert (await post(client, new)).status == 200
    assert await OrderStatusChange.filter(status="production").count() == 1


async def test_a_signed_batch_that_arrives_in_pieces_is_read_whole(start_app: Any, make_settings: Any) -> None:
    client = await start(start_app, make_settings, Clock(NOW))
    batch = {"events": [PLACED, event("e2", "production", note="分批到达的请求体" * 20)]}
    resp = await post(client, batch, pieces=True)
    assert resp.status == 200, await resp.text()
    assert await OrderStatusChange.filter(status="production").count() == 1


async def test_without_a_secret_the_endpoint_refuses_everything(start_app: Any, make_settings: Any) -> None:
    client = await start(start_app, make_settings, Clock(NOW), webhook_secret="")
    assert (await post(client, PLACED, secret="")).status == 403
    assert await counts() == (0, 0, 0, 0)


async def test_the_owner_hears_once_per_order_and_status(start_app: Any, make_settings: Any, wecom_sim: Any) -> None:
    clock = Clock(NOW)
    client = await start(start_app, make_settings, clock)
    app = client.app
    assert (await post(client, {"events": [PLACED, event("e2", "production")]})).status == 200
    assert await tick(app, clock) == []  # 下单 and 生产中 are not announced

    clock.advance(timedelta(hours=1))
    packed = event("e3", "包装待发", clock.now(), carrier="顺丰速运", tracking_no="SF1234567890")
    assert (await post(client, packed)).status == 200
    assert rules_of(await tick(app, clock)) == [("order_notice", "张三", "华为技术有限公司")]
    [text] = wecom_sim.texts_to("zhangsan")
    assert "订单包装待发" in text and "SO-42" in text and "SF1234567890" in text

    clock.advance(timedelta(hours=1))
    assert (await post(client, event("e4", "包装待发", clock.now()))).status == 200  # said twice by the ERP
    assert await tick(app, clock) == []
    assert (await post(client, event("e5", "shipped", clock.now()))).status == 200
    clock.advance(timedelta(minutes=1))
    assert rules_of(await tick(app, clock)) == [("order_notice", "张三", "华为技术有限公司")]
    clock.advance(timedelta(days=1))
    assert await tick(app, clock) == []
    assert len(wecom_sim.texts_to("zhangsan")) == 2 and "订单已发货" in wecom_sim.texts_to("zhangsan")[-1]


async def test_an_old_shipment_learned_late_is_not_announced(
    start_app: Any, make_settings: Any, wecom_sim: Any
) -> None:
    clock = Clock(NOW)
    client = await start(start_app, make_settings, clock)
    assert (await post(client, {"events": [PLACED, event("e2", "shipped", NOW - timedelta(days=4))]})).status == 200
    assert await tick(client.app, clock) == []


async def test_an_unpaid_invoice_reaches_the_owner_once(start_app: Any, make_settings: Any, wecom_sim: Any) -> None:
    clock = Clock(NOW)
    client = await start(start_app, make_settings, clock, payment_overdue_days=30, notify_statuses=[])
    app = client.app
    invoiced = event("e2", "已开票", NOW, invoice_no="INV-0099")
    assert (await post(client, {"events": [PLACED, invoiced]})).status == 200
    clock.set(NOW + timedelta(days=30) - timedelta(minutes=1))
    assert await tick(app, clock) == []
    clock.set(NOW + timedelta(days=30))
    assert rules_of(await tick(app, clock)) == [("payment_overdue", "张三", "华为技术有限公司")]
    clock.advance(timedelta(days=1))
    assert await tick(app, clock) == []
    [text] = wecom_sim.texts_to("zhangsan")
    assert "回款逾期" in text and "INV-0099" in text

    # Another order invoiced and then paid in time is never chased.
    second = [event(f"p{i}", s, clock.now(), order_no="SO-43", total=500) for i, s in enumerate(("placed", "invoiced"))]
    assert (await post(client, {"events": second})).status == 200
    clock.advance(timedelta(days=10))
    assert (await post(client, event("p9", "已回款", clock.now(), order_no="SO-43"))).status == 200
    clock.advance(timedelta(days=40))
    assert await tick(app, clock) == []


async def test_a_customer_reordering_every_11_months_is_remembered_at_the_end_of_month_10(
    start_app: Any, make_settings: Any, wecom_sim: Any
) -> None:
    clock = Clock(NOW.replace(year=2025, month=10, day=11))
    client = await start(start_app, make_settings, clock)
    app = client.app
    # Orders 310, 335 and 360 days apart: typically 335 days (11 months), give or take 25.
    days = [date(2023, 1, 10), date(2023, 11, 16), date(2024, 10, 16), date(2025, 10, 11)]
    history = [
        event(f"o{i}", "下单", datetime(d.year, d.month, d.day, 1, tzinfo=UTC), order_no=f"SO-{i}", total=10000)
        for i, d in enumerate(days)
    ]
    assert (await post(client, {"events": history})).status == 200
    window = await Repurchase.get(customer__name="华为技术有限公司")
    assert (window.interval_days, window.spread_days, window.predicted_on) == (335, 25, date(2026, 9, 11))

    # Reminded 335 − 25 − 7 = 303 days after the last order: 2026-08-10, local midnight.
    clock.set(datetime(2026, 8, 9, 15, 59, tzinfo=UTC))
    assert await tick(app, clock) == []
    clock.set(datetime(2026, 8, 10, 1, 0, tzinfo=UTC))
    assert rules_of(await tick(app, clock)) == [("repurchase_due", "张三", "华为技术有限公司")]
    for _ in range(3):
        clock.advance(timedelta(days=1))
        assert await tick(app, clock) == []
    [text] = wecom_sim.texts_to("zhangsan")
    assert "复购提醒" in text and "预计 2026-09 复购，±25 天" in text

    chat = WeComChat(client, wecom_sim)
    await chat.say("zhangsan", "客户 华为")
    assert "复购：预计 2026-09 复购，±25 天" in chat.sent_to("zhangsan")[-1]

    # The next order starts a new cycle, with a reminder of its own.
    assert (await post(client, event("o9", "下单", clock.now(), order_no="SO-9", total=8000))).status == 200
    window = await Repurchase.get(customer__name="华为技术有限公司")
    assert window.predicted_on > date(2027, 6, 1)
    clock.set(window.remind_at + timedelta(hours=1))
    assert rules_of(await tick(app, clock)) == [("repurchase_due", "张三", "华为技术有限公司")]


async def test_too_few_orders_make_no_prediction(start_app: Any, make_settings: Any) -> None:
    client = await start(start_app, make_settings, Clock(NOW))
    two = [event(f"o{i}", "下单", NOW - timedelta(days=300 * i), order_no=f"SO-{i}") for i in range(2)]
    assert (await post(client, {"events": two})).status == 200
    assert await Repurchase.all().count() == 0


async def test_the_import_takes_the_webhook_fields_with_chinese_or_english_headers(
    start_app: Any, make_settings: Any, tmp_path: Path
) -> None:
    client = await start(start_app, make_settings, Clock(NOW))
    english = tmp_path / "orders.csv"
    english.write_text(
        "order_no,customer,order_date,status,at,total,product,quantity,line_amount,carrier,tracking_no\n"
        "SO-7,华为,2026-11-02,placed,,12000,液压缸 HC-80,10,9000,,\n"
        "SO-7,华为,2026-11-02,placed,,12000,密封件,30,3000,,\n"
        "SO-7,华为,2026-11-02,shipped,2026-11-20,,,,,顺丰速运,SF777\n"
        "SO-8,华为,2026-11-03,placed,,-100,,,,,\n"
        "SO-9,华为,2026-11-03,placed,,100,泵,1,90,,\n",
        encoding="utf-8",
    )
    report = await import_orders(client.app, english)
    assert "新增 added 1" in report and "拒绝 rejected 2" in report, report
    assert "第 5 行" in report and "第 6 行" in report
    order = await Order.get(order_no="SO-7")
    assert (str(order.total), order.status, order.tracking_no) == ("12000.00", "shipped", "SF777")
    assert await OrderLine.filter(order_id=order.id).count() == 2

    chinese = tmp_path / "订单.csv"
    chinese.write_text(
        "订单号,客户名称,下单日期,状态,金额,发票号\nSO-7,华为技术有限公司,2026-11-02,已开票,12000,INV-7\n",
        encoding="utf-8",
    )
    assert "已存在 already there 0" in await import_orders(client.app, chinese)
    assert (await Order.get(order_no="SO-7")).invoice_no == "INV-7"
    assert "新增 added 0，已存在 already there 1" in await import_orders(client.app, chinese)  # again: nothing new
    assert await OrderStatusChange.filter(order__order_no="SO-7").count() == 3


async def test_batches_about_the_same_order_at_the_same_time_both_land(start_app: Any, make_settings: Any) -> None:
    client = await start(start_app, make_settings, Clock(NOW))
    first = {"events": [PLACED, event("c1", "production", NOW - timedelta(days=3))]}
    second = {"events": [event("c2", "packed", NOW - timedelta(days=1)), event("c3", "shipped", tracking_no="SF9")]}
    answers = await asyncio.gather(*(post(client, body) for body in (first, second, first)))
    assert sorted(a.status for a in answers) == [200, 200, 409]
    order = await Order.get(order_no="SO-42")
    assert (order.status, order.tracking_no, order.order_date) == ("shipped", "SF9", date(2026, 11, 21))
    assert await OrderStatusChange.filter(order_id=order.id).count() == 4
    assert await OrderEventSeen.all().count() == 4
