"""Grades from annual purchases: with ``[erp] grade_thresholds``, a customer whose orders of the last 12 months
(cancelled ones aside) reach a threshold is suggested to its owner once, with the command that applies it; with
``auto_grade`` the grade is set directly, audited, and the owner is told how to set it back."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from bot.clock import Clock
from models.audit import AuditLog
from models.customers import Customer
from tests.driver import WeComChat
from tests.test_erp_orders import NOW, event, post, start
from tests.test_reminders import rules_of, tick

THRESHOLDS = {"A": 1_000_000, "B": 300_000}
GRADED = ("grade_from_purchases", "张三", "华为技术有限公司")


async def graded(app: Any, clock: Clock) -> list[tuple[str, str, str | None]]:
    """One scheduler pass; what the grading rule did in it (the orders' other rules have their own stories)."""
    return [f for f in rules_of(await tick(app, clock)) if f[0] == GRADED[0]]


def told(chat: WeComChat) -> list[str]:
    return [text for text in chat.sent_to("zhangsan") if "客户等级" in text]


def purchases() -> list[dict[str, Any]]:
    """¥700,000 this year, ¥500,000 cancelled and ¥900,000 more than a year ago: only the first counts."""
    return [
        event("g1", "下单", NOW - timedelta(days=30), order_no="SO-1", total=400_000),
        event("g2", "已发货", NOW - timedelta(days=20), order_no="SO-2", total=300_000),
        event("g3", "下单", NOW - timedelta(days=10), order_no="SO-3", total=500_000),
        event("g4", "取消", NOW - timedelta(days=9), order_no="SO-3"),
        event("g5", "下单", NOW - timedelta(days=400), order_no="SO-0", total=900_000),
    ]


async def test_the_owner_is_offered_the_grade_the_purchases_earn_once_and_applies_it_with_one_line(
    start_app: Any, make_settings: Any, wecom_sim: Any
) -> None:
    clock = Clock(NOW)
    client = await start(start_app, make_settings, clock, grade_thresholds=THRESHOLDS)
    app, chat = client.app, WeComChat(client, wecom_sim)
    assert (await post(client, {"events": purchases()})).status == 200

    assert await graded(app, clock) == [GRADED]
    [suggestion] = told(chat)
    assert "¥700,000.00" in suggestion and "`等级 华为 B`" in suggestion
    assert (await Customer.get(name="华为技术有限公司")).grade == ""  # a suggestion changes nothing
    clock.advance(timedelta(hours=1))
    assert await graded(app, clock) == []  # told once

    await chat.say("zhangsan", "等级 华为 B")
    assert (await Customer.get(name="华为技术有限公司")).grade == "B"
    assert await graded(app, clock) == []

    # ¥400,000 more this year: A is suggested, once.
    more = event("g6", "下单", NOW, order_no="SO-4", total=400_000)
    assert (await post(client, more)).status == 200
    assert await graded(app, clock) == [GRADED]
    assert "`等级 华为 A`" in told(chat)[-1]
    assert await graded(app, clock) == []


async def test_with_auto_grade_the_grade_is_set_audited_and_can_be_set_back(
    start_app: Any, make_settings: Any, wecom_sim: Any
) -> None:
    clock = Clock(NOW)
    client = await start(start_app, make_settings, clock, grade_thresholds=THRESHOLDS, auto_grade=True)
    app, chat = client.app, WeComChat(client, wecom_sim)
    await Customer.filter(name="华为技术有限公司").update(grade="C")
    assert (await post(client, {"events": purchases()})).status == 200

    assert await graded(app, clock) == [GRADED]
    huawei = await Customer.get(name="华为技术有限公司")
    assert huawei.grade == "B"
    [audit] = await AuditLog.filter(action="set_grade", customer_id=huawei.id)
    assert (audit.before, audit.after, audit.actor_name) == ({"grade": "C"}, {"grade": "B"}, "系统")
    assert "`等级 华为 C`" in told(chat)[-1]

    await chat.say("zhangsan", "等级 华为 C")  # the owner knows better: it stays so
    assert (await Customer.get(id=huawei.id)).grade == "C"
    assert await graded(app, clock) == []
    assert (await Customer.get(id=huawei.id)).grade == "C"
