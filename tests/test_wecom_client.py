"""The WeCom API client and channel against the simulator: token handling, error mapping, cards, long text."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from bot.channels import DeliveryError, PermanentDeliveryError
from bot.types import Button, Card, CardUpdate, Reply
from integrations.wecom.channel import CUT_NOTE, MAX_PARTS, WeComChannel, split_content
from integrations.wecom.client import WeComClient, WeComConfigError
from integrations.wecom.settings import WeComSettings
from tests.helpers import WECOM
from tests.simulators.wecom import WeComSimulator


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as s:
        yield s


def make_client(sim: WeComSimulator, session: aiohttp.ClientSession, **overrides: Any) -> WeComClient:
    values: dict[str, Any] = {
        "corp_id": WECOM.corp_id,
        "agent_id": WECOM.agent_id,
        "secret": WECOM.secret,
        "token": WECOM.token,
        "encoding_aes_key": WECOM.encoding_aes_key,
        "api_base": sim.url,
        "retry_delay_seconds": 0.01,
        "rate_limit_retry_seconds": 30,
        **overrides,
    }
    return WeComClient(WeComSettings(**values), lambda: session)


async def test_concurrent_senders_share_one_token_fetch(wecom_sim: WeComSimulator, session: Any) -> None:
    channel = WeComChannel(make_client(wecom_sim, session))
    await asyncio.gather(*(channel.send(f"u{i}", Reply(f"你好 {i}"), {}) for i in range(20)))
    assert wecom_sim.tokens_issued == 1
    assert sorted(s["body"]["touser"] for s in wecom_sim.sent) == sorted(f"u{i}" for i in range(20))


async def test_a_revoked_token_is_replaced_and_the_call_repeated(wecom_sim: WeComSimulator, session: Any) -> None:
    channel = WeComChannel(make_client(wecom_sim, session))
    await channel.send("u1", Reply("一"), {})
    wecom_sim.revoke_tokens()  # 40014
    await channel.send("u1", Reply("二"), {})
    assert wecom_sim.texts_to("u1") == ["一", "二"]
    assert wecom_sim.tokens_issued == 2


async def test_a_wrong_secret_is_a_configuration_error_that_never_logs_the_secret(
    wecom_sim: WeComSimulator, session: Any, caplog: Any
) -> None:
    channel = WeComChannel(make_client(wecom_sim, session, secret="the-wrong-secret-value"))
    with caplog.at_level(logging.DEBUG), pytest.raises(WeComConfigError) as raised:
        await channel.send("u1", Reply("你好"), {})
    assert raised.value.retry_after is not None and raised.value.retry_after >= 60  # kept, retried slowly
    ours = "\n".join(r.getMessage() for r in caplog.records if not r.name.startswith("aiohttp"))
    assert "40001" in ours  # the simulator's own access log shows the query string; our logs never do
    assert "the-wrong-secret-value" not in ours + str(raised.value)
    assert wecom_sim.sent == []


async def test_a_wrong_agent_id_is_a_configuration_error(wecom_sim: WeComSimulator, session: Any) -> None:
    channel = WeComChannel(make_client(wecom_sim, session, agent_id=42))
    with pytest.raises(WeComConfigError):
        await channel.send("u1", Reply("你好"), {})


async def test_busy_answers_are_retried_quickly_within_one_send(wecom_sim: WeComSimulator, session: Any) -> None:
    channel = WeComChannel(make_client(wecom_sim, session, request_retries=2))
    wecom_sim.fail_next(1, errcode=-1)
    wecom_sim.http_error_next(1, status=503)
    await channel.send("u1", Reply("你好"), {})
    assert wecom_sim.texts_to("u1") == ["你好"]


async def test_persistent_failures_and_rate_limits_are_left_to_the_outbox(
    wecom_sim: WeComSimulator, session: Any
) -> None:
    channel = WeComChannel(make_client(wecom_sim, session, request_retries=2))
    wecom_sim.http_error_next(3, status=500)
    with pytest.raises(DeliveryError) as busy:
        await channel.send("u1", Reply("你好"), {})
    assert busy.value.retry_after is None  # the outbox's own backoff applies
    wecom_sim.fail_next(1, errcode=45009)
    with pytest.raises(DeliveryError) as limited:
        await channel.send("u1", Reply("你好"), {})
    assert limited.value.retry_after == 30  # no quick retry into a rate limit
    assert wecom_sim.texts_to("u1") == []


async def test_a_slow_answer_times_out_as_a_retryable_failure(wecom_sim: WeComSimulator, session: Any) -> None:
    channel = WeComChannel(make_client(wecom_sim, session, request_timeout_seconds=0.2, request_retries=0))
    wecom_sim.slow_next(1, seconds=0.5, endpoint="message/send")
    with pytest.raises(DeliveryError):
        await channel.send("u1", Reply("你好"), {})


async def test_bad_content_is_a_permanent_failure(wecom_sim: WeComSimulator, session: Any) -> None:
    channel = WeComChannel(make_client(wecom_sim, session))
    with pytest.raises(PermanentDeliveryError):
        await channel.send("u1", Reply("   "), {})
    wecom_sim.known_users = {"u1"}
    with pytest.raises(PermanentDeliveryError):  # 81013: nobody of these exists
        await channel.send("nobody", Reply("你好"), {})


async def test_markdown_is_sent_as_markdown(wecom_sim: WeComSimulator, session: Any) -> None:
    channel = WeComChannel(make_client(wecom_sim, session))
    await channel.send("u1", Reply.markdown("**华为** 已跟进"), {})
    [body] = wecom_sim.messages_to("u1")
    assert body["msgtype"] == "markdown"
    assert body["markdown"]["content"] == "**华为** 已跟进"


async def test_a_card_is_a_button_interaction_template_card_and_can_be_updated_once(
    wecom_sim: WeComSimulator, session: Any
) -> None:
    channel = WeComChannel(make_client(wecom_sim, session))
    card = Card(
        title="折扣审批 #AP12",
        card_id="AP12",
        description="张三 申请 华为 85折",
        fields=(("客户", "华为技术有限公司"), ("折扣", "85折"), ("金额", "120万")),
        buttons=(Button("同意 #AP12", "同意", 1), Button("驳回 #AP12", "驳回", 2)),
    )
    result = await channel.send("wangjl", Reply(kind="card", card=card), {})
    [sent] = wecom_sim.cards_to("wangjl")
    assert sent["card_type"] == "button_interaction"
    assert sent["main_title"] == {"title": "折扣审批 #AP12", "desc": "张三 申请 华为 85折"}
    assert sent["task_id"] == "AP12"
    assert sent["horizontal_content_list"][0] == {"keyname": "客户", "value": "华为技术有限公司"}
    assert [(b["type"], b["key"], b["text"], b["style"]) for b in sent["button_list"]] == [
        (0, "同意 #AP12", "同意", 1),
        (0, "驳回 #AP12", "驳回", 2),
    ]
    assert result["card_handle"] == sent["response_code"]

    update = Reply.updating(CardUpdate("AP12", result["card_handle"], "已同意"))
    await channel.send("wangjl", update, {})
    assert wecom_sim.card_updates() == [
        {
            "userids": ["wangjl"],
            "agentid": WECOM.agent_id,
            "response_code": result["card_handle"],
            "button": {"replace_name": "已同意"},
        }
    ]
    with pytest.raises(PermanentDeliveryError):  # a response code is single use
        await channel.send("wangjl", update, {})


async def test_long_text_is_split_at_line_breaks_and_nothing_is_cut_silently(
    wecom_sim: WeComSimulator, session: Any
) -> None:
    channel = WeComChannel(make_client(wecom_sim, session))
    lines = [f"第{i}条：华为技术有限公司 耐高温材料 询价记录" for i in range(120)]  # ~6 KB
    result = await channel.send("u1", Reply("\n".join(lines)), {})
    texts = wecom_sim.texts_to("u1")
    assert len(texts) > 1
    assert len(result["msgids"]) == len(texts)
    assert all(len(t.encode()) <= 2048 for t in texts)
    assert "\n".join(texts).splitlines() == lines
    assert not any(item["answer"].get("truncated") for item in wecom_sim.sent)


async def test_a_retry_after_a_failure_in_the_middle_does_not_repeat_parts(
    wecom_sim: WeComSimulator, session: Any
) -> None:
    channel = WeComChannel(make_client(wecom_sim, session, request_retries=0))
    text = "\n".join(f"第{i}行 " + "数据" * 30 for i in range(60))
    parts = split_content(text)
    assert len(parts) >= 2
    await channel.send("u0", Reply("预热"), {})  # the token is fetched
    sent_before = len(wecom_sim.sent)
    wecom_sim.fail_next(1, errcode=-1, skip=1)  # the first part goes through, the second fails
    with pytest.raises(DeliveryError):
        await channel.send("u1", Reply(text), {})
    await channel.send("u1", Reply(text), {})
    assert wecom_sim.texts_to("u1") == parts
    assert len(wecom_sim.sent) == sent_before + len(parts)


def test_split_content_caps_the_number_of_parts_with_a_visible_note() -> None:
    text = "\n".join("客户跟进记录" * 20 for _ in range(200))
    parts = split_content(text)
    assert len(parts) == MAX_PARTS
    assert parts[-1].endswith(CUT_NOTE)
    assert all(len(p.encode()) <= 2048 for p in parts)
    assert split_content("短消息") == ["短消息"]
    one_line = "长" * 2000  # 6000 bytes, no line break
    assert "".join(split_content(one_line)) == one_line
