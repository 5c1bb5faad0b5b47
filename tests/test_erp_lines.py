"""Repurchase windows per product line: a customer with enough orders of a line has its own window of it, and one
with too few orders of a line is predicted from the line's rhythm over its other customers, said so on the card
("按同类产品节奏预计"); the owner is reminded once per predicted cycle and line. A line comes from the ERP (the
webhook's ``product_line``, T+'s 存货分类, the import's 产品线 column) or, for products that carry none, from
``erp.product_lines``. Events go in through the signed webhook; rules run as the scheduler runs them."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

from bot.clock import Clock
from handlers.orders import import_orders
from models.orders import OrderLine, Repurchase
from tests.driver import WeComChat
from tests.helpers import staff_member
from tests.test_erp_orders import SECRET, post
from tests.test_reminders import customer, rules_of, tick

START = datetime(2026, 11, 1, 2, 0, tzinfo=UTC)  # 10:00 in Shanghai
CYLINDER = "液压缸"
SEALS = "密封件"
# Three customers of the hydraulic-cylinder line with their own rhythm: every 90, 80 and 100 days.
OTHERS = {
    "三一重工": [date(2026, 1, 5), date(2026, 4, 5), date(2026, 7, 4), date(2026, 10, 2)],
    "徐工机械": [date(2026, 2, 1), date(2026, 4, 22), date(2026, 7, 11), date(2026, 9, 29)],
    "中联重科": [date(2026, 1, 10), date(2026, 4, 20), date(2026, 7, 29), date(2026, 11, 6)],
}


def placed(event_id: str, customer: str, day: date, lines: list[dict[str, Any]]) -> dict[str, Any]:
    total = sum(line["amount"] for line in lines)
    at = datetime(day.year, day.month, day.day, 2, tzinfo=UTC).isoformat()
    return {"event_id": event_id, "order_no": event_id, "customer": customer, "status": "下单", "at": at} | {
        "total": total,
        "lines": lines,
    }


def cylinder(amount: int = 9000) -> dict[str, Any]:
    return {"product": "液压缸 HC-80", "product_line": CYLINDER, "quantity": 10, "amount": amount}


def seal() -> dict[str, Any]:
    return {"product": "O型密封圈", "quantity": 100, "amount": 500}  # no line from the ERP: the configured pattern


async def test_a_customer_with_one_order_of_a_line_is_reminded_by_the_lines_rhythm_once(
    start_app: Any, make_settings: Any, wecom_sim: Any
) -> None:
    clock = Clock(START)
    quiet = {"ladder_warn_days": 100_000, "ladder_handover_days": 100_000}
    erp = {"webhook_secret": SECRET, "product_lines": {SEALS: ["*密封*"]}}
    client = await start_app(
        make_settings(erp=erp, rules=quiet), clock=clock, run_scheduler=False, run_dispatcher=False
    )
    app = client.app
    rep = await staff_member(name="张三", wecom="zhangsan")
    await customer("华为技术有限公司", rep, "华为")
    for name in OTHERS:
        await customer(name, None)
    history = [
        placed(f"{name}-{i}", name, day, [cylinder()]) for name, days in OTHERS.items() for i, day in enumerate(days)
    ]
    assert (await post(client, {"events": history})).status == 200
    # 华为 bought seals three times, a month apart, and hydraulic cylinders once, with the last seals.
    huawei = [
        placed("HW-1", "华为", date(2026, 9, 1), [seal()]),
        placed("HW-2", "华为", date(2026, 10, 1), [seal()]),
        placed("HW-3", "华为", date(2026, 10, 31), [cylinder(), seal()]),
    ]
    assert (await post(client, {"events": huawei})).status == 200
    assert await OrderLine.filter(product="O型密封圈", product_line=SEALS).count() == 3

    windows = {
        r.product_line: (r.basis, r.interval_days, r.spread_days, r.predicted_on)
        for r in await Repurchase.filter(customer__name="华为技术有限公司")
    }
    # Seals: its own rhythm. Cylinders: the line's, the median of 90, 80 and 100 days, give or take 10.
    assert windows == {
        SEALS: ("customer", 30, 0, date(2026, 11, 30)),
        CYLINDER: ("line", 90, 10, date(2027, 1, 29)),
    }
    chat = WeComChat(client, wecom_sim)
    await chat.say("zhangsan", "客户 华为")
    card = chat.sent_to("zhangsan")[-1]
    assert "复购（液压缸）：预计 2027-01-29 复购，±10 天（按同类产品节奏预计）" in card
    assert "复购（密封件）：预计 2026-11-30 复购，±0 天" in card

    # Seals: 30 − 0 − 7 days after the last order, 2026-11-23 local midnight; once.
    clock.set(datetime(2026, 11, 22, 15, 59, tzinfo=UTC))
    assert await tick(app, clock) == []
    clock.set(datetime(2026, 11, 23, 1, 0, tzinfo=UTC))
    assert rules_of(await tick(app, clock)) == [("repurchase_due", "张三", "华为技术有限公司")]
    for _ in range(2):
        clock.advance(timedelta(days=1))
        assert await tick(app, clock) == []
    [seals_text] = wecom_sim.texts_to("zhangsan")[-1:]
    assert "产品线「密封件」：预计 2026-11-30 复购，±0 天" in seals_text and "液压缸" not in seals_text

    # Cylinders: 90 − 10 − 7 days after the last order, 2027-01-12 local midnight; once, said to be the line's.
    clock.set(datetime(2027, 1, 11, 15, 59, tzinfo=UTC))
    assert await tick(app, clock) == []
    clock.set(datetime(2027, 1, 12, 1, 0, tzinfo=UTC))
    assert rules_of(await tick(app, clock)) == [("repurchase_due", "张三", "华为技术有限公司")]
    for _ in range(2):
        clock.advance(timedelta(days=1))
        assert await tick(app, clock) == []
    text = wecom_sim.texts_to("zhangsan")[-1]
    assert "产品线「液压缸」：预计 2027-01 复购，±10 天（按同类产品节奏预计）" not in text  # ±10: the day is shown
    assert "产品线「液压缸」：预计 2027-01-29 复购，±10 天（按同类产品节奏预计）" in text
    assert "同类产品客户通常每 90 天下一次单" in text
    assert len([t for t in wecom_sim.texts_to("zhangsan") if "复购提醒" in t]) == 2


async def test_without_enough_customers_a_line_has_no_rhythm_and_the_whole_history_counts(
    start_app: Any, make_settings: Any, tmp_path: Path
) -> None:
    client = await start_app(
        make_settings(erp={"webhook_secret": SECRET}), clock=Clock(START), run_scheduler=False, run_dispatcher=False
    )
    await customer("华为技术有限公司", await staff_member(name="张三", wecom="zhangsan"), "华为")
    await customer("三一重工", None)
    sheet = tmp_path / "orders.csv"
    sheet.write_text(
        "订单号,客户名称,下单日期,金额,产品,存货分类,数量,行金额\n"
        "A-1,三一重工,2026-01-05,9000,液压缸 HC-80,液压缸,10,9000\n"
        "A-2,三一重工,2026-04-05,9000,液压缸 HC-80,液压缸,10,9000\n"
        "A-3,三一重工,2026-07-04,9000,液压缸 HC-80,液压缸,10,9000\n"
        "H-1,华为,2026-05-01,500,O型密封圈,密封件,100,500\n"
        "H-2,华为,2026-07-01,500,O型密封圈,密封件,100,500\n"
        "H-3,华为,2026-09-01,9000,液压缸 HC-80,液压缸,10,9000\n",
        encoding="utf-8",
    )
    assert "新增 added 6" in await import_orders(client.app, sheet)
    windows = {(r.customer_id, r.product_line, r.basis) for r in await Repurchase.all()}
    # One customer of cylinders has its own rhythm: too few for the line's (3 needed); 华为 has two orders of
    # seals and one of cylinders, so its window is over its three orders, every 61 or 62 days.
    huawei = await Repurchase.get(customer__name="华为技术有限公司")
    assert (huawei.product_line, huawei.basis, huawei.interval_days) == ("", "customer", 62)
    assert len(windows) == 2
