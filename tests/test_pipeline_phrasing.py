"""How the pipeline's lines are understood (the demo's customers, now = 2026-11-18 10:00): deal writes only with a
商机 command or a deal named beside a stage verb, the customer's own stage otherwise, and the reads as questions."""

from __future__ import annotations

from datetime import date
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bot.keys import BOT
from tests.test_router import NOW, demo_app
from tests.test_router_fuzz import REGISTRY, UNDERSTANDING

HW, BYD = "华为技术有限公司", "比亚迪股份有限公司"
LINES: list[tuple[str, str, dict[str, Any]]] = [
    ("商机 华为 5G基站电源 300万 预计3月签", "create_opportunity",
     {"customer": HW, "opportunity": "5G基站电源", "amount": 3_000_000, "expected_close": "2027-03-31"}),
    ("华为有个新商机 储能柜 100万 预计12月底签 赢率60%", "create_opportunity",
     {"customer": HW, "opportunity": "储能柜", "amount": 1_000_000, "expected_close": "2026-12-31",
      "probability": 0.6}),
    ("商机 比亚迪 电池产线 2026-12-15 方案阶段 来源 展会", "create_opportunity",
     {"customer": BYD, "opportunity": "电池产线", "expected_close": "2026-12-15", "stage": "proposal",
      "source": "展会"}),
    ("华为电源项目 进入报价", "set_opportunity_stage", {"customer": HW, "opportunity": "电源项目", "stage": "quote"}),
    ("华为电源项目 赢单", "set_opportunity_stage", {"customer": HW, "opportunity": "电源项目", "stage": "won"}),
    ("华为电源项目 丢单 价格原因", "set_opportunity_stage",
     {"customer": HW, "opportunity": "电源项目", "stage": "lost", "reason": "价格原因"}),
    ("商机 华为 储能柜 推进到谈判", "set_opportunity_stage",
     {"customer": HW, "opportunity": "储能柜", "stage": "negotiation"}),
    ("商机 华为 储能柜 需求分析：48V 整流模块", "set_opportunity_field",
     {"customer": HW, "opportunity": "储能柜", "field": "需求分析", "value": "48V 整流模块"}),
    ("商机 华为", "list_opportunities", {"customer": HW}),
    # No deal named: the customer's own stage, as before.
    ("比亚迪 赢单了", "set_stage", {"customer": BYD, "stage": "won"}),
    ("华为进入报价", "set_stage", {"customer": HW, "stage": "quote"}),
    ("比亚迪的单子丢了", "set_stage", {"customer": BYD, "stage": "lost"}),
    # Reads.
    ("漏斗", "funnel", {}),
    ("销售漏斗 本季度", "funnel", {"period": "2026-Q4"}),
    ("本季度的销售漏斗怎么样？", "funnel", {"period": "2026-Q4"}),
    ("本月业绩", "performance", {"period": "2026-11"}),
    ("这个月业绩怎么样", "performance", {"period": "2026-11"}),
    ("今天要跟进哪些客户", "my_day", {}),
    ("我的客户", "my_day", {}),
    ("今天有什么待办？", "my_day", {}),
    ("目标 张三 本月 200万", "set_target", {"to_staff": "张三", "amount": 2_000_000, "period": "2026-11"}),
]  # fmt: skip


async def test_pipeline_lines_are_understood(start_app: Any, make_settings: Any) -> None:
    app = await demo_app(start_app, make_settings)
    understanding = app[BOT].understanding
    wrong = []
    for text, intent, slots in LINES:
        parsed = understanding.parse(text, NOW)
        if parsed.intent != intent or any(parsed.slots.get(k) != v for k, v in slots.items()):
            wrong.append(f"{text!r}: expected {intent} {slots}, got {parsed.intent} {parsed.slots}")
    assert not wrong, "\n".join(wrong)


DEAL_FRAGMENTS = [
    "商机", "华为", "电源项目", "5G基站电源", "300万", "预计3月签", "3月底", "2026-02-30", "十二月", "赢率60%",
    "概率7成", "来源", "展会", "进入", "报价", "谈判", "赢单", "丢单", "价格原因", "需求分析：", "金额：", "漏斗",
    "本季度", "业绩", "目标", "张三", "我的客户", "今天", "跟进", "哪些", "，", " ", "了", "的", "：", "?",
]  # fmt: skip


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.sampled_from(DEAL_FRAGMENTS), max_size=10).map("".join))
def test_any_mix_of_deal_words_gets_a_registered_intent_with_well_formed_slots(text: str) -> None:
    intent, slots = UNDERSTANDING.read(text, NOW)
    assert intent in REGISTRY.specs or intent == "unknown"
    if "amount" in slots:
        assert slots["amount"] >= 0
    if "expected_close" in slots:
        date.fromisoformat(slots["expected_close"])
    if "probability" in slots:
        assert 0 <= slots["probability"] <= 1
    if intent in ("funnel", "performance", "my_day"):
        assert not ({"customer", "opportunity", "stage"} & set(slots))  # a read carries nothing to write
