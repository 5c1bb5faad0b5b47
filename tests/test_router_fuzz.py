"""Whatever a user types, the router answers with an intent and never crashes (Hypothesis)."""

from __future__ import annotations

from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bot.capability import Registry
from bot.understanding import Understanding
from handlers import CAPABILITIES

TZ = ZoneInfo("Asia/Shanghai")
FRAGMENTS = [
    "跟进", "华为", "恒力液压", "工单", "#12", "#AP3", "已解决", "紧急", "明天下午3点", "下周三", "月底", "近3年",
    "85折", "优惠15%", "120万", "九折", "提醒我", "把", "转给", "李四", "标签", "+重点", "-新能源", "赢单了", "阶段",
    "等级", "A", "NPS", "本月", "搜", "客户:", "同意", "驳回", "撤回", "新建客户", "，", "。", " ", "了", "的", "3天后",
    "一百二十万", "零", "%", "折", "号工单", "Q3", "年", "上季度", "999999999999", "：", "?", "help",
]  # fmt: skip

REGISTRY = Registry(CAPABILITIES)
UNDERSTANDING = Understanding(TZ, REGISTRY.commands, REGISTRY.phrases)
# What a typed line may be read as: an intent some capability handles, never a platform event's, or "unknown".
INTENTS = {name for name, spec in REGISTRY.specs.items() if not spec.system} | {"unknown"}
UNDERSTANDING.load(
    [("华为技术有限公司", ["华为"]), ("恒力液压有限公司", ["恒力液压", "恒力"]), ("金风科技股份有限公司", ["金风"])],
    ["张三", "李四", "王经理"],
)


@pytest.fixture(scope="module", autouse=True)
def warmed_up() -> None:
    """jieba's dictionary and jionlp's tables load on first use (seconds on a cold, loaded machine): load them
    before the first example, so that Hypothesis' deadline measures reading a line, not the warm-up."""
    UNDERSTANDING.warm_up()
    UNDERSTANDING.read("明天下午3点提醒我跟进华为", datetime(2026, 11, 18, 10, tzinfo=TZ))


moments = st.datetimes(min_value=datetime(2000, 1, 1), max_value=datetime(2099, 12, 31)).map(
    lambda d: d.replace(tzinfo=TZ)
)


def check(text: str, now: datetime) -> None:
    # The rules themselves, not the guard in Understanding.parse that turns a crash into "unknown".
    intent, slots = UNDERSTANDING.read(text, now)
    parsed = UNDERSTANDING.parse(text, now)
    assert (parsed.intent, parsed.slots) == (intent, slots)
    assert parsed.intent in INTENTS
    assert isinstance(parsed.slots, dict)
    if "ticket_id" in parsed.slots:
        assert isinstance(parsed.slots["ticket_id"], int)
    if "discount" in parsed.slots:
        assert 0 < parsed.slots["discount"] < 1
    for key in ("at", "next_at", "since"):
        if key in parsed.slots:
            datetime.fromisoformat(parsed.slots[key])


@settings(max_examples=400, deadline=timedelta(seconds=2), suppress_health_check=[HealthCheck.too_slow])
@given(st.text(max_size=80), moments)
def test_any_text_gets_an_intent(text: str, now: datetime) -> None:
    check(text, now)


@settings(max_examples=400, deadline=timedelta(seconds=2), suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.sampled_from(FRAGMENTS), max_size=12).map("".join), moments)
def test_any_mix_of_crm_words_gets_an_intent(text: str, now: datetime) -> None:
    check(text, now)


@settings(max_examples=200, deadline=timedelta(seconds=2), suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.sampled_from(FRAGMENTS) | st.text(max_size=4), max_size=10).map(" ".join))
def test_spaced_commands_with_noise_get_an_intent(text: str) -> None:
    check(text, datetime(2026, 11, 18, 10, tzinfo=TZ))
