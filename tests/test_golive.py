"""Go-live: an admin imports the customer list with its old 最近跟进 dates, and the first pass of the follow-up
ladder finds most of them long neglected. The manager gets ONE summary with the list and bulk commands instead of
one push per customer; `批量分配` / `批量放入公海` redistribute them (managers only, audited per customer); a
digest that names only the first few says how to see them all (`提醒清单`).

Everything goes through the real app: the importer, the rules engine, the outbox into the WeCom simulator, and
WeCom callbacks for what people type.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from aiohttp import web

from bot.clock import Clock
from bot.importer import run_import
from bot.keys import BOT, CLOCK, OUTBOX
from bot.scheduled import run_rules
from models.audit import AuditLog
from models.customers import Customer
from models.staff import Role, Staff
from tests.driver import WeComChat
from tests.helpers import staff_member
from tests.simulators.wecom import WeComSimulator

# Monday 2026-03-02 10:00 in Shanghai: go-live day, inside the 09:00-20:00 window.
GO_LIVE = datetime(2026, 3, 2, 2, 0, tzinfo=UTC)
HEADER = "客户名称,等级,负责人,最近跟进\n"


async def team() -> dict[str, Staff]:
    """王经理 manages 张三 and 李四; 赵六 is in 孙经理's team."""
    wang = await staff_member(name="王经理", wecom="wangjl", role=Role.MANAGER)
    sun = await staff_member(name="孙经理", wecom="sunjl", role=Role.MANAGER)
    people = {"王经理": wang, "孙经理": sun}
    for name, userid, manager in (("张三", "zhangsan", wang), ("李四", "lisi", wang), ("赵六", "zhaoliu", sun)):
        people[name] = await staff_member(name=name, wecom=userid, role=Role.REP, manager=manager)
    return people


def customer_rows(owner: str, count: int, last: str, grades: str = "") -> str:
    """``count`` customers of ``owner`` last followed up on ``last``; the first ones get ``grades`` in order."""
    return "".join(
        f"{owner}客户{i:02d}有限公司,{grades[i] if i < len(grades) else 'C'},{owner},{last}\n" for i in range(count)
    )


async def go_live(
    start_app: Any, make_settings: Any, sim: WeComSimulator, tmp_path: Path, rows: str, **rules: Any
) -> tuple[web.Application, WeComChat]:
    settings = make_settings(rules=rules)
    client = await start_app(settings, clock=Clock(GO_LIVE), run_scheduler=False, run_dispatcher=False)
    await team()
    sheet = tmp_path / "customers.csv"
    sheet.write_text(HEADER + rows, encoding="utf-8")
    assert "拒绝 0" in await run_import(client.app, "customers", sheet)
    return client.app, WeComChat(client, sim)


async def first_pass(app: web.Application) -> list[Any]:
    fired = await run_rules(app[BOT], GO_LIVE)
    await app[OUTBOX].drain(GO_LIVE)
    return fired


async def owners() -> dict[str | None, int]:
    counts: dict[str | None, int] = {}
    for customer in await Customer.all().prefetch_related("owner"):
        name = customer.owner.name if customer.owner else None
        counts[name] = counts.get(name, 0) + 1
    return counts


async def test_a_go_live_import_hands_customers_over_as_one_summary_and_the_manager_assigns_them_in_bulk(
    start_app: Any, make_settings: Any, wecom_sim: WeComSimulator, tmp_path: Path
) -> None:
    rows = customer_rows("张三", 25, "2025-12-01", grades="CCCABBAABBBA") + customer_rows("李四", 2, "2025-11-20")
    app, chat = await go_live(start_app, make_settings, wecom_sim, tmp_path, rows)

    fired = await first_pass(app)
    # Every handover still happens and is recorded once (and `jobs run --json` still lists each of them) ...
    assert len([f for f in fired if f.rule == "ladder_handover"]) == 27
    assert await owners() == {"王经理": 27}
    # ... but the manager hears of them in ONE message: a count, the list by grade, and what to do next.
    [summary] = chat.sent_to("wangjl")
    assert summary.startswith("**客户移交汇总**")
    assert "本次共 27 位客户满 14 天未跟进，已移交给您（A级 4，B级 5，C级 18）" in summary
    listed = [line for line in summary.splitlines() if re.match(r"\d+\. ", line)]
    assert len(listed) == 10
    assert [line.split("（")[1][0] for line in listed] == ["A"] * 4 + ["B"] * 5 + ["C"]
    assert "`批量分配 姓名 20`" in summary and "`批量放入公海`" in summary and "`待分配客户`" in summary
    assert "请逐一处理" not in summary
    # 张三 lost 25 customers at once: one notice with the list; 李四 lost two: both in one ordinary digest.
    [notice] = chat.sent_to("zhangsan")
    assert notice.startswith("**客户已移交**") and "您有 25 位客户满 14 天未跟进，已移交给 王经理" in notice
    [digest] = chat.sent_to("lisi")
    assert digest.startswith("**您有 2 条待办提醒**") and "李四客户01有限公司" in digest

    # The whole list, a page at a time.
    await chat.say("wangjl", "待分配客户")
    page = chat.sent_to("wangjl")[-1]
    assert "共 27 位" in page and "第 1/2 页" in page and "`待分配客户 2`" in page
    await chat.say("wangjl", "待分配客户 2")
    assert "第 2/2 页" in chat.sent_to("wangjl")[-1] and "27. " in chat.sent_to("wangjl")[-1]

    # The five most valuable to 李四, in the order of the list.
    await chat.say("wangjl", "批量分配 李四 5")
    answer = chat.sent_to("wangjl")[-1]
    assert "已把 5 位客户分配给李四" in answer and "还有 22 位等待分配" in answer
    assert "王经理 把 5 位客户分配给了您" in chat.sent_to("lisi")[-1]
    given = await Customer.filter(owner__name="李四")
    assert sorted(c.grade for c in given) == ["A", "A", "A", "A", "B"]
    audits = await AuditLog.filter(action="bulk_assign")
    assert len(audits) == 5 and {a.actor_name for a in audits} == {"王经理"}
    assert {a.entity_id for a in audits} == {str(c.id) for c in given}
    assert all(a.before == {"owner": "王经理"} and a.after == {"owner": "李四"} for a in audits)

    # Only managers redistribute, and only within their team.
    await chat.say("zhangsan", "批量分配 张三 全部")
    assert "只有主管或管理员" in chat.sent_to("zhangsan")[-1]
    await chat.say("wangjl", "批量分配 赵六 全部")
    assert "不在您的团队" in chat.sent_to("wangjl")[-1]
    await chat.say("wangjl", "批量分配 王经理 全部")
    assert "已经在您名下" in chat.sent_to("wangjl")[-1]
    assert await owners() == {"王经理": 22, "李四": 5}

    # The rest go to the public pool.
    await chat.say("wangjl", "批量放入公海")
    assert "已把 22 位移交来的客户放入公海" in chat.sent_to("wangjl")[-1]
    assert await owners() == {None: 22, "李四": 5}
    assert await AuditLog.filter(action="bulk_release", actor_name="王经理").count() == 22
    await chat.say("wangjl", "待分配客户")
    assert "没有等待分配的移交客户" in chat.sent_to("wangjl")[-1]


async def test_a_few_handovers_still_arrive_one_by_one(
    start_app: Any, make_settings: Any, wecom_sim: WeComSimulator, tmp_path: Path
) -> None:
    rows = customer_rows("张三", 3, "2025-12-01")
    app, chat = await go_live(start_app, make_settings, wecom_sim, tmp_path, rows, handover_flood_threshold=3)
    await first_pass(app)
    [digest] = chat.sent_to("wangjl")
    assert digest.startswith("**您有 3 条待办提醒**") and "客户移交汇总" not in digest


async def test_a_digest_that_lists_only_some_pushes_says_how_to_see_them_all(
    start_app: Any, make_settings: Any, wecom_sim: WeComSimulator, tmp_path: Path
) -> None:
    # Followed up ten days ago: 14 warnings for 张三 in one pass, more than a digest lists one by one.
    last = (GO_LIVE - timedelta(days=10)).astimezone(make_settings().tz).strftime("%Y-%m-%d %H:%M")
    app, chat = await go_live(start_app, make_settings, wecom_sim, tmp_path, customer_rows("张三", 14, last))
    await first_pass(app)
    [digest] = chat.sent_to("zhangsan")
    assert digest.startswith("**您有 14 条待办提醒**")
    assert digest.splitlines()[-2] == "另有 跟进预警 4 条，发送「提醒清单」查看全部"

    await chat.say("zhangsan", "提醒清单")
    listing = chat.sent_to("zhangsan")[-1]
    assert "共 14 条" in listing
    assert all(f"客户：张三客户{i:02d}有限公司" in listing for i in range(14))


async def test_with_a_baseline_neglect_counts_from_the_import(
    start_app: Any, make_settings: Any, wecom_sim: WeComSimulator, tmp_path: Path
) -> None:
    rows = customer_rows("张三", 3, "2025-12-01")
    app, _ = await go_live(start_app, make_settings, wecom_sim, tmp_path, rows, baseline_on_import=True)
    baseline = await Customer.all().values_list("ladder_from", flat=True)
    assert baseline == [GO_LIVE] * 3

    assert await first_pass(app) == []  # old dates hand nobody over on go-live day
    assert await owners() == {"张三": 3}
    for day, expected in (
        (6, []),
        (7, ["ladder_warn"] * 3),
        (13, []),
        (14, ["ladder_handover", "ladder_handover_notice"] * 3),
    ):
        fired = await run_rules(app[BOT], GO_LIVE + timedelta(days=day))
        assert sorted(f.rule for f in fired) == sorted(expected), day
        assert all("天没有跟进（上线导入：03-02 10:00）" in f.text for f in fired if f.rule == "ladder_warn")
    assert await owners() == {"王经理": 3}

    # Importing the same sheet again a month later does not move the baseline.
    app[CLOCK].set(GO_LIVE + timedelta(days=30))
    sheet = tmp_path / "again.csv"
    sheet.write_text(HEADER + rows, encoding="utf-8")
    assert "拒绝 0" in await run_import(app, "customers", sheet)
    assert await Customer.all().values_list("ladder_from", flat=True) == [GO_LIVE] * 3


async def test_in_pool_mode_the_manager_assigns_from_the_pool_what_went_there(
    start_app: Any, make_settings: Any, wecom_sim: WeComSimulator, tmp_path: Path
) -> None:
    rows = customer_rows("张三", 21, "2025-12-01")
    app, chat = await go_live(start_app, make_settings, wecom_sim, tmp_path, rows, ladder_handover_mode="pool")
    await first_pass(app)
    assert await owners() == {None: 21}
    [summary] = chat.sent_to("wangjl")
    assert "本次共 21 位客户满 14 天未跟进，已释放到公海" in summary and "批量放入公海" not in summary

    await chat.say("wangjl", "批量分配 李四 全部")
    assert "已把 21 位客户分配给李四" in chat.sent_to("wangjl")[-1]
    assert await owners() == {"李四": 21}
    audits = await AuditLog.filter(action="bulk_assign")
    assert len(audits) == 21 and all(a.before == {"owner": None} and a.after == {"owner": "李四"} for a in audits)
