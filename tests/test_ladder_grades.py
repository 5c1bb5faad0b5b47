"""Per-grade ladders: an A customer is warned about after 3 days and handed over after 15, a C customer after 14
and 30, and an ungraded one keeps the defaults (7 and 14); each step reaches its person once, and a grade set in
chat decides which ladder applies from then on.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from bot.clock import Clock
from models.customers import Customer, Stage
from tests.driver import WeComChat
from tests.test_reminders import DAY0, customer, make_team, rules_of, tick

GRADES = {"A": [3, 15], "C": [14, 30]}


async def test_each_grade_climbs_its_own_ladder_once(start_app: Any, make_settings: Any, wecom_sim: Any) -> None:
    clock = Clock(DAY0)
    client = await start_app(
        make_settings(rules={"ladder_by_grade": GRADES}), clock=clock, run_scheduler=False, run_dispatcher=False
    )
    app = client.app
    team = await make_team()
    opened = {"stage": Stage.NEGOTIATION, "last_followup_at": DAY0}
    await customer("华为技术有限公司", team["张三"], "华为", **opened)
    await customer("比亚迪股份有限公司", team["张三"], "比亚迪", **opened)
    plain = await customer("三一重工股份有限公司", team["张三"], "三一", **opened)
    chat = WeComChat(client, wecom_sim)
    await chat.say("zhangsan", "把华为评为A级")
    await chat.say("zhangsan", "把比亚迪评为C级")
    assert {c.grade for c in await Customer.exclude(id=plain.id)} == {"A", "C"}

    seen: dict[int, list[tuple[str, str, str | None]]] = {}
    for day in range(1, 32):
        clock.set(DAY0 + timedelta(days=day))
        if fired := rules_of(await tick(app, clock)):
            seen[day] = fired
    assert seen == {
        3: [("ladder_warn", "张三", "华为技术有限公司")],
        7: [("ladder_warn", "张三", "三一重工股份有限公司")],
        14: [
            ("ladder_warn", "张三", "比亚迪股份有限公司"),
            ("ladder_handover", "王经理", "三一重工股份有限公司"),
            ("ladder_handover_notice", "张三", "三一重工股份有限公司"),
        ],
        15: [
            ("ladder_handover", "王经理", "华为技术有限公司"),
            ("ladder_handover_notice", "张三", "华为技术有限公司"),
        ],
        30: [
            ("ladder_handover", "王经理", "比亚迪股份有限公司"),
            ("ladder_handover_notice", "张三", "比亚迪股份有限公司"),
        ],
    }
    warnings = [t for t in wecom_sim.texts_to("zhangsan") if "跟进预警" in t]
    assert [("华为" in w, "满 15 天" in w) for w in warnings[:1]] == [(True, True)]
    assert any("比亚迪" in w and "已 14 天没有跟进" in w and "满 30 天" in w for w in warnings)
    handovers = wecom_sim.texts_to("wangjl")
    assert any("华为" in h and "已 15 天未跟进" in h for h in handovers)
    assert {c.owner_id for c in await Customer.all()} == {team["王经理"].id}
