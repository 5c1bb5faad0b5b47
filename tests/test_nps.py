"""NPS surveys, the whole story with a fixed clock: a deal is won, 15 days later the customer is asked, the answer
comes back (the survey page or a chat reply), a detractor opens a ticket and the manager is told, a promoter is
tagged, and managers read NPS per rep and team. Everything goes through the real app: rules engine, outbox,
WeCom callbacks and the WeCom API simulator."""

from __future__ import annotations

import json
import logging
import re
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlencode
from zoneinfo import ZoneInfo

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from bot.clock import Clock
from bot.demo import load_demo
from bot.keys import BOT, SETTINGS
from bot.scheduled import run_rules
from handlers.nps.answers import parse_chat_score
from handlers.nps.report import resolve_period
from integrations.wecom.archive_file import import_jsonl
from models.audit import AuditLog
from models.customers import Contact, Customer, Stage
from models.nps import Survey, SurveyChannel, SurveyTrigger
from models.outbox import OutboxMessage
from models.staff import Role, Staff
from models.tickets import Ticket, TicketStatus
from tests.driver import WeComChat
from tests.helpers import deliver_all, in_pieces, staff_member

SH = ZoneInfo("Asia/Shanghai")
# A Monday morning, outside quiet hours. Stored datetimes are UTC (SQLite compares them as text).
DAY0 = datetime(2026, 3, 2, 10, 0, tzinfo=SH).astimezone(UTC)
HUAWEI = "华为技术有限公司"
LINK = re.compile(r"/nps/([A-Za-z0-9_-]{16,64})")

Client = TestClient[Any, web.Application]


# -- the story's cast ---------------------------------------------------------------------------------------------


async def start(
    make_settings: Any, start_app: Any, clock: Clock | None = None, **sections: Any
) -> tuple[Client, Clock]:
    clock = clock or Clock(DAY0)
    clock.set(DAY0)
    # The follow-up ladder would hand the demo customers over while the story skips weeks: keep it out of the way.
    rules = {"ladder_warn_days": 1000, "ladder_handover_days": 1000, **sections.pop("rules", {})}
    client = await start_app(make_settings(rules=rules, **sections), clock=clock, run_scheduler=False)
    await load_demo(client.app)
    await client.app[BOT].understanding.refresh()
    return client, clock


async def win(name: str, at: datetime) -> Customer:
    customer = await Customer.get(name=name)
    customer.stage, customer.won_at = Stage.WON, at
    await customer.save()
    return customer


async def day(client: Client, clock: Clock, n: int) -> list[Any]:
    """Move to day ``n`` of the story (same local time) and run every scheduled rule once, as the scheduler does."""
    clock.set(DAY0 + timedelta(days=n))
    fired = await run_rules(client.app[BOT], clock.now())
    await deliver_all(client.app)
    return [f for f in fired if f.rule == "nps_survey"]


def token_in(texts: list[str]) -> str:
    for text in reversed(texts):
        if m := LINK.search(text):
            return m[1]
    raise AssertionError(f"no survey link in {texts!r}")


# -- asking ---------------------------------------------------------------------------------------------------------


async def test_fifteen_days_after_a_won_deal_the_rep_gets_a_survey_to_forward(
    make_settings: Any, start_app: Any, wecom_sim: Any
) -> None:
    client, clock = await start(make_settings, start_app)
    await win(HUAWEI, DAY0)

    assert await day(client, clock, 14) == []
    assert await Survey.all().count() == 0

    [firing] = await day(client, clock, 15)
    assert firing.to.name == "张三"
    survey = await Survey.get()
    assert (survey.trigger, survey.channel) == (SurveyTrigger.DEAL_WON, SurveyChannel.REP_FORWARD)
    assert survey.sent_at == clock.now()
    assert survey.expires_at == clock.now() + timedelta(days=14)
    contact = await Contact.get(external_userid="wmHW001")
    assert survey.contact_id == contact.id

    texts = wecom_sim.texts_to("zhangsan")
    notice = next(t for t in texts if "满意度调查" in t and HUAWEI in t)
    assert "刘工" in notice
    forward = next(t for t in texts if t.startswith("刘工您好"))
    assert "您有多大可能向同行推荐我们" in forward
    token = token_in([forward])
    assert forward.count("http://127.0.0.1:8080/nps/") == 1
    # only a keyed hash of the token is stored, never the token
    assert token not in survey.token_hash
    assert not await OutboxMessage.filter(recipient__contains=token).exists()

    # the rule runs every minute: nothing more for this deal
    assert await day(client, clock, 15) == []
    assert await day(client, clock, 16) == []
    assert await Survey.all().count() == 1


async def test_with_the_customer_contact_api_the_survey_goes_to_the_customer_from_the_rep(
    make_settings: Any, start_app: Any, wecom_sim: Any
) -> None:
    client, clock = await start(make_settings, start_app, wecom={"customer_contact": True})
    await win(HUAWEI, DAY0)
    await day(client, clock, 15)

    [body] = wecom_sim.customer_messages()
    assert body["chat_type"] == "single"
    assert body["external_userid"] == ["wmHW001"]
    assert body["sender"] == "zhangsan"
    assert "您有多大可能向同行推荐我们" in body["text"]["content"]
    token = token_in([body["text"]["content"]])
    survey = await Survey.get()
    assert survey.channel == SurveyChannel.CUSTOMER_MESSAGE
    # the rep is told to confirm the message in their WeCom client
    notice = next(t for t in wecom_sim.texts_to("zhangsan") if HUAWEI in t)
    assert "群发助手" in notice and "确认" in notice
    # and the link in the customer's message works
    page = await client.get(f"/nps/{token}")
    assert page.status == 200
    assert "您有多大可能向同行推荐我们？" in await page.text()


async def test_a_contact_wecom_cannot_reach_fails_for_good_and_the_rep_still_has_the_link(
    make_settings: Any, start_app: Any, wecom_sim: Any
) -> None:
    client, clock = await start(make_settings, start_app, wecom={"customer_contact": True})
    wecom_sim.known_external_userids = {"wmSOMEONEELSE"}  # 刘工 is no longer the rep's contact
    await win(HUAWEI, DAY0)
    await day(client, clock, 15)
    survey = await Survey.get()
    row = await OutboxMessage.get(dedupe_key=f"nps:survey:{survey.id}:customer")
    assert row.status == "failed" and row.attempts == 1
    assert "no recipient" in row.last_error
    notice = next(t for t in wecom_sim.texts_to("zhangsan") if HUAWEI in t)
    assert token_in([notice])


async def test_a_rep_on_dingtalk_only_gets_the_ready_to_forward_message(
    make_settings: Any, start_app: Any, wecom_sim: Any, dingtalk_sim: Any
) -> None:
    client, clock = await start(
        make_settings,
        start_app,
        clock=dingtalk_sim.clock,
        wecom={"customer_contact": True},
        dingtalk=dingtalk_sim.settings(),
    )
    rep = await staff_member(name="钉钉销售", dingtalk="ding_rep9", role=Role.REP)
    customer = await Customer.create(name="远景能源有限公司", owner=rep, won_at=DAY0, stage=Stage.WON)
    await Contact.create(customer=customer, name="冯总", external_userid="wmYJ001")

    [firing] = await day(client, clock, 15)
    assert firing.to.id == rep.id
    survey = await Survey.get(customer_id=customer.id)
    assert survey.channel == SurveyChannel.REP_FORWARD
    assert wecom_sim.customer_messages() == []
    forward = await OutboxMessage.get(dedupe_key=f"nps:survey:{survey.id}:forward")
    assert forward.staff_id == rep.id
    assert forward.payload["text"].startswith("冯总您好")
    assert LINK.search(forward.payload["text"])
    texts = dingtalk_sim.texts_to("ding_rep9")
    assert any(t.startswith("冯总您好") and LINK.search(t) for t in texts)
    assert any("远景能源有限公司" in t and "转发给 冯总" in t for t in texts)


async def test_one_survey_per_customer_per_period(make_settings: Any, start_app: Any, wecom_sim: Any) -> None:
    client, clock = await start(make_settings, start_app)
    customer = await win(HUAWEI, DAY0)
    assert len(await day(client, clock, 15)) == 1

    # a ticket resolved on day 30 would be surveyed on day 45: still within 90 days of the first survey
    first = await Ticket.create(
        customer=customer,
        title="漏油",
        status=TicketStatus.RESOLVED,
        first_response_due=DAY0 + timedelta(days=29),
        resolved_at=DAY0 + timedelta(days=30),
        created_at=DAY0 + timedelta(days=29),
    )
    for n in (44, 45, 46, 50):
        assert await day(client, clock, n) == []
    assert await Survey.all().count() == 1

    # a ticket resolved on day 100 is surveyed on day 115: the last survey (day 15) is 100 days old
    second = await Ticket.create(
        customer=customer,
        title="异响",
        status=TicketStatus.CLOSED,
        first_response_due=DAY0 + timedelta(days=99),
        resolved_at=DAY0 + timedelta(days=100),
        created_at=DAY0 + timedelta(days=99),
    )
    assert await day(client, clock, 114) == []
    [firing] = await day(client, clock, 115)
    assert f":ticket_resolved:{second.id}:" in firing.key
    surveys = await Survey.all().order_by("id")
    assert [(s.trigger, s.trigger_id) for s in surveys] == [
        (SurveyTrigger.DEAL_WON, customer.id),
        (SurveyTrigger.TICKET_RESOLVED, second.id),
    ]
    assert first.id != second.id


# -- the page: validation -------------------------------------------------------------------------------------------


async def test_a_detractor_on_the_page_opens_a_ticket_and_the_manager_is_told(
    make_settings: Any, start_app: Any, wecom_sim: Any
) -> None:
    client, clock = await start(make_settings, start_app)
    await win(HUAWEI, DAY0)
    await day(client, clock, 15)
    token = token_in(wecom_sim.texts_to("zhangsan"))

    clock.advance(timedelta(hours=3))
    page = await client.post(f"/nps/{token}", data={"score": "3", "comment": "交货晚了两周"})
    assert page.status == 200
    assert "感谢您的评价" in await page.text()
    await deliver_all(client.app)

    survey = await Survey.get()
    assert (survey.score, survey.comment, survey.answer_source) == (3, "交货晚了两周", "page")
    assert survey.answered_at == clock.now()
    zhangsan = await Staff.get(name="张三")
    ticket = await Ticket.get(customer__name=HUAWEI, source="nps")
    assert ticket.assignee_id == zhangsan.id
    assert ticket.status == TicketStatus.OPEN
    assert "交货晚了两周" in ticket.description
    assert ticket.first_response_due == clock.now() + timedelta(minutes=120)
    told = [t for t in wecom_sim.texts_to("zhangsan") if "3 分" in t]
    assert len(told) == 1 and f"#{ticket.id}" in told[0]
    [manager_note] = [t for t in wecom_sim.texts_to("wangjl") if "NPS" in t]
    assert "张三" in manager_note and HUAWEI in manager_note and "3 分" in manager_note
    assert f"#{ticket.id}" in manager_note and "交货晚了两周" in manager_note
    customer = await Customer.get(name=HUAWEI)
    assert "推荐者" not in customer.tags
    assert await AuditLog.filter(action="nps_answer", entity_id=str(survey.id)).count() == 1

    # a second submission changes nothing and gets a friendly page
    again = await client.post(f"/nps/{token}", data={"score": "10", "comment": "改主意了"})
    assert again.status == 409
    assert "您已经完成了这份评价" in await again.text()
    await deliver_all(client.app)
    survey = await Survey.get()
    assert (survey.score, survey.comment) == (3, "交货晚了两周")
    assert await Ticket.filter(source="nps").count() == 1
    assert len([t for t in wecom_sim.texts_to("wangjl") if "NPS" in t]) == 1
    # opening the link again shows that it was answered
    shown = await client.get(f"/nps/{token}")
    assert shown.status == 200 and "您已经完成了这份评价" in await shown.text()


async def test_forged_bad_and_expired_submissions_change_nothing(
    make_settings: Any, start_app: Any, wecom_sim: Any
) -> None:
    client, clock = await start(make_settings, start_app)
    await win(HUAWEI, DAY0)
    await day(client, clock, 15)
    token = token_in(wecom_sim.texts_to("zhangsan"))

    forged = token[:-4] + ("AAAA" if not token.endswith("AAAA") else "BBBB")
    for bad in (forged, "x" * 32, "short", "a.b", token + "A", "A" * 65):
        resp = await client.post(f"/nps/{bad}", data={"score": "10"})
        assert resp.status == 404, bad
        assert "链接无效" in await resp.text()
        resp = await client.get(f"/nps/{bad}")
        assert resp.status == 404, bad
    for score in ("11", "-1", "9.5", "", "九", "0x9", " 10 0"):
        resp = await client.post(f"/nps/{token}", data={"score": score})
        assert resp.status == 400, score
        assert "请先选择 0 到 10 之间的一个分数" in await resp.text()
    resp = await client.post(f"/nps/{token}", data={"comment": "没选分数"})
    assert resp.status == 400
    assert "没选分数" in await resp.text()  # what they typed is kept
    assert (await Survey.get()).answered_at is None

    # the link is valid for 14 days
    clock.advance(timedelta(days=14))
    resp = await client.post(f"/nps/{token}", data={"score": "9"})
    assert resp.status == 410
    assert "这份调查已过期" in await resp.text()
    assert (await client.get(f"/nps/{token}")).status == 410
    survey = await Survey.get()
    assert survey.answered_at is None and survey.score is None
    assert "推荐者" not in (await Customer.get(name=HUAWEI)).tags


async def test_malformed_submissions_are_refused_and_the_real_one_is_recorded(
    make_settings: Any, start_app: Any, wecom_sim: Any, caplog: pytest.LogCaptureFixture
) -> None:
    client, clock = await start(make_settings, start_app)
    await win(HUAWEI, DAY0)
    await day(client, clock, 15)
    token = token_in(wecom_sim.texts_to("zhangsan"))
    form = {"Content-Type": "application/x-www-form-urlencoded"}
    boundary = "b0undary"
    multipart = (
        (
            f'--{boundary}\r\nContent-Disposition: form-data; name="score"\r\n\r\n9\r\n--{boundary}\r\n'
            f'Content-Disposition: form-data; name="comment"\r\n\r\n'
        ).encode()
        + b"\xff\xfe\r\n"
        + f"--{boundary}--\r\n".encode()
    )
    cases: list[tuple[bytes, dict[str, str]]] = [
        (b"score=9&comment=\xff\xfe", form),  # bytes that are not UTF-8
        (b"score=9&comment=%FF", form),  # an escape that is not UTF-8
        (b"score=9&comment=%ED%A0%80", form),  # half a UTF-16 pair
        (b"score=9&comment=ok", {"Content-Type": "application/x-www-form-urlencoded; charset=x-unknown"}),
        (multipart, {"Content-Type": f"multipart/form-data; boundary={boundary}"}),
        (b"score=9&comment=" + b"%E5%A5%BD" * 2000, form),  # far beyond the comment's 500 characters
        (b"&".join(b"f%d=1" % i for i in range(20)) + b"&score=9", form),
    ]
    caplog.set_level(logging.INFO)
    for body, headers in cases:
        resp = await client.post(f"/nps/{token}", data=body, headers=headers)
        assert resp.status == 400, body[:60]
        assert "提交的内容无法识别" in await resp.text()
    assert (await Survey.get()).answered_at is None
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]

    # the real answer, its body arriving in pieces, is read whole
    body = urlencode({"score": "9", "comment": "服务很好，交货也快 👍"}).encode()
    resp = await client.post(f"/nps/{token}", data=in_pieces(body, size=16), headers=form)
    assert resp.status == 200
    survey = await Survey.get()
    assert (survey.score, survey.comment) == (9, "服务很好，交货也快 👍")


async def test_the_page_is_a_small_self_contained_mobile_page(
    make_settings: Any, start_app: Any, wecom_sim: Any
) -> None:
    client, clock = await start(make_settings, start_app)
    await win(HUAWEI, DAY0)
    await day(client, clock, 15)
    token = token_in(wecom_sim.texts_to("zhangsan"))
    resp = await client.get(f"/nps/{token}")
    html = await resp.text()
    assert resp.content_type == "text/html" and resp.charset == "utf-8"
    assert '<meta name="viewport" content="width=device-width,initial-scale=1">' in html
    assert "您有多大可能向同行推荐我们？" in html
    assert [int(v) for v in re.findall(r'name="score" value="(\d+)"', html)] == list(range(11))
    assert '<textarea id="comment" name="comment"' in html
    assert "<script" not in html and "http" not in html.split("</head>")[0].replace("http-equiv", "")
    assert resp.headers["Referrer-Policy"] == "no-referrer"
    assert resp.headers["Cache-Control"] == "no-store"
    assert "default-src 'none'" in resp.headers["Content-Security-Policy"]


# -- capture from the chat ------------------------------------------------------------------------------------------


def chat_record(msgid: str, sender: str, to: str, text: str, at: datetime) -> dict[str, Any]:
    """One message as the WeCom chat archive delivers it, decrypted (PROTOCOLS.md §5)."""
    return {
        "msgid": msgid,
        "action": "send",
        "from": sender,
        "tolist": [to],
        "roomid": "",
        "msgtime": int(at.timestamp() * 1000),
        "msgtype": "text",
        "text": {"content": text},
    }


async def archive_chat(client: Client, tmp_path: Any, records: list[dict[str, Any]]) -> None:
    """The conversations reach the archive through the one archive path (here: an export, as `crmbot import`)."""
    path = tmp_path / f"chat-{records[0]['msgid']}.jsonl"
    path.write_text("\n".join(json.dumps(r, ensure_ascii=False) for r in records) + "\n", encoding="utf-8")
    summary = await import_jsonl(client.app, path)
    assert f"messages imported: {len(records)}" in summary, summary
    await deliver_all(client.app)


async def test_the_customer_answers_in_the_chat_and_the_manager_reads_the_month(
    make_settings: Any, start_app: Any, wecom_sim: Any, tmp_path: Any
) -> None:
    client, clock = await start(make_settings, start_app)
    await win(HUAWEI, DAY0)
    await win("比亚迪股份有限公司", DAY0 - timedelta(days=40))  # long ago: no survey, so its "9" means nothing
    await day(client, clock, 15)
    survey = await Survey.get()
    t = clock.now()

    await archive_chat(
        client,
        tmp_path,
        [
            chat_record("c1", "wmHW001", "zhangsan", "9分", t - timedelta(hours=1)),  # before the survey was sent
            chat_record("c2", "wmHW001", "zhangsan", "收到，我看一下", t + timedelta(hours=1)),
            chat_record("c3", "zhangsan", "wmHW001", "9", t + timedelta(hours=2)),  # the rep, not the customer
            chat_record("c4", "wmBYD01", "zhangsan", "9", t + timedelta(hours=2)),  # a customer without a survey
            chat_record("c5", "wmHW001", "zhangsan", "打9分", t + timedelta(hours=3)),
            chat_record("c6", "wmHW001", "zhangsan", "十分", t + timedelta(hours=4)),  # the first answer wins
        ],
    )
    survey = await Survey.get(id=survey.id)
    assert (survey.score, survey.answer_source) == (9, "chat")
    assert survey.answered_at == t + timedelta(hours=3)
    assert await Survey.filter(answered_at__not_isnull=True).count() == 1
    assert "推荐者" in (await Customer.get(name=HUAWEI)).tags
    told = [x for x in wecom_sim.texts_to("zhangsan") if "9 分" in x]
    assert len(told) == 1 and "推荐者" in told[0] and "刘工" in told[0]
    assert not [x for x in wecom_sim.texts_to("wangjl") if "NPS" in x]  # a promoter does not alarm the manager

    # the same messages archived again (a re-pull) change nothing
    clock.advance(timedelta(days=1))
    await archive_chat(client, tmp_path, [chat_record("c7", "wmHW001", "zhangsan", "3分", t + timedelta(hours=5))])
    assert (await Survey.get(id=survey.id)).score == 9

    await WeComChat(client, deliver=True).say("wangjl", "本月NPS")
    report = wecom_sim.texts_to("wangjl")[-1]
    assert "王经理团队：NPS +100（推荐 1 · 中立 0 · 贬损 0，共 1 份答卷 / 发出 1 份）" in report
    assert "· 张三：NPS +100" in report


async def test_a_chat_reply_after_the_survey_expired_is_not_an_answer(
    make_settings: Any, start_app: Any, wecom_sim: Any, tmp_path: Any
) -> None:
    client, clock = await start(make_settings, start_app)
    await win(HUAWEI, DAY0)
    await day(client, clock, 15)
    clock.advance(timedelta(days=15))
    await archive_chat(client, tmp_path, [chat_record("late1", "wmHW001", "zhangsan", "2分", clock.now())])
    survey = await Survey.get()
    assert survey.answered_at is None and survey.score is None
    assert not await Ticket.filter(source="nps").exists()


@pytest.mark.parametrize(
    ("text", "score"),
    [
        ("9", 9),
        ("9分", 9),
        ("打9分", 9),
        ("９分", 9),
        ("给你们打10分！", 10),
        ("10", 10),
        ("十分", 10),
        ("打十分", 10),
        ("满分", 10),
        ("七分吧", 7),
        ("0", 0),
        (" 8 分 。", 8),
        ("我打6分", 6),
        ("十分满意", None),
        ("11", None),
        ("99", None),
        ("9点来开会", None),
        ("第9个", None),
        ("价格能降9分之一吗", None),
        ("", None),
        ("好的", None),
    ],
)
def test_a_chat_reply_that_is_a_score(text: str, score: int | None) -> None:
    assert parse_chat_score(text) == score


def test_report_periods_are_local_calendar_periods() -> None:
    now = datetime(2026, 5, 20, 12, 0, tzinfo=SH)
    month = resolve_period(None, "本月NPS", now, SH)
    assert (month.start, month.end, month.label) == (
        datetime(2026, 5, 1, tzinfo=SH),
        datetime(2026, 6, 1, tzinfo=SH),
        "2026年5月",
    )
    quarter = resolve_period(None, "NPS 上季度", now, SH)
    assert (quarter.start, quarter.end, quarter.label) == (
        datetime(2026, 1, 1, tzinfo=SH),
        datetime(2026, 4, 1, tzinfo=SH),
        "2026年第1季度",
    )
    assert resolve_period("last_quarter", "", now, SH) == quarter
    assert resolve_period("上季度", "whatever", now, SH) == quarter
    january = datetime(2026, 1, 10, tzinfo=SH)
    assert resolve_period("上季度", "", january, SH).label == "2025年第4季度"
    assert resolve_period("上月", "", january, SH).label == "2025年12月"
    assert resolve_period("2025-Q3", "", now, SH).start == datetime(2025, 7, 1, tzinfo=SH)
    assert resolve_period("今年", "", now, SH).end == datetime(2027, 1, 1, tzinfo=SH)
    assert resolve_period(None, "NPS", now, SH) == month


# -- compute and report ---------------------------------------------------------------------------------------------


async def answer(client: Client, token: str, score: int) -> None:
    resp = await client.post(f"/nps/{token}", data={"score": str(score)})
    assert resp.status == 200, await resp.text()


async def test_nps_per_rep_and_team_with_counts(make_settings: Any, start_app: Any, wecom_sim: Any) -> None:
    client, clock = await start(make_settings, start_app)
    # 张三: 华为 10, 比亚迪 5, 三一 8 — 李四: 恒力 9; 金风 surveyed but never answers
    for name in (HUAWEI, "比亚迪股份有限公司", "三一重工股份有限公司", "恒力液压有限公司", "金风科技股份有限公司"):
        await win(name, DAY0)
    assert len(await day(client, clock, 15)) == 5
    surveys = {s.customer_id: s for s in await Survey.all()}
    assert len(surveys) == 5
    tokens: dict[str, str] = {}
    for row in await OutboxMessage.filter(dedupe_key__startswith="nps:survey:"):
        survey_id = int(row.dedupe_key.split(":")[2])
        customer = await Customer.get(surveys__id=survey_id)
        tokens[customer.name] = token_in([row.payload["text"]])
    for name, score in ((HUAWEI, 10), ("比亚迪股份有限公司", 5), ("三一重工股份有限公司", 8), ("恒力液压有限公司", 9)):
        await answer(client, tokens[name], score)
    await deliver_all(client.app)

    # the manager reads the month: the team and each rep, with counts
    await WeComChat(client, deliver=True).say("wangjl", "本月NPS")
    report = wecom_sim.texts_to("wangjl")[-1]
    assert "2026年3月" in report
    assert "王经理团队：NPS +25（推荐 2 · 中立 1 · 贬损 1，共 4 份答卷 / 发出 5 份）" in report
    assert "· 张三：NPS +0（推荐 1 · 中立 1 · 贬损 1，共 3 份答卷 / 发出 3 份）" in report
    assert "· 李四：NPS +100（推荐 1 · 中立 0 · 贬损 0，共 1 份答卷 / 发出 2 份）" in report

    # a rep sees their own customers only
    await WeComChat(client, deliver=True).say("lisi", "本月NPS")
    own = wecom_sim.texts_to("lisi")[-1]
    assert "NPS +100（推荐 1 · 中立 0 · 贬损 0，共 1 份答卷 / 发出 2 份）" in own
    assert "张三" not in own

    # the director sees the company, per team and per rep
    await WeComChat(client, deliver=True).say("zhaozong", "本月NPS")
    company = wecom_sim.texts_to("zhaozong")[-1]
    assert "全公司：NPS +25" in company and "王经理团队：NPS +25" in company and "· 张三：NPS +0" in company

    # promoters are tagged, the detractor got a ticket
    tags = {c.name: c.tags for c in await Customer.all()}
    assert "推荐者" in tags[HUAWEI] and "推荐者" in tags["恒力液压有限公司"]
    assert "推荐者" not in tags["三一重工股份有限公司"] and "推荐者" not in tags["比亚迪股份有限公司"]
    [ticket] = await Ticket.filter(source="nps")
    assert ticket.customer_id == (await Customer.get(name="比亚迪股份有限公司")).id

    # last quarter had no answers; next month's report does not count March
    await WeComChat(client, deliver=True).say("wangjl", "NPS 上季度")
    assert "暂无答卷" in wecom_sim.texts_to("wangjl")[-1]
    clock.set(datetime(2026, 4, 2, 10, 0, tzinfo=SH))
    await WeComChat(client, deliver=True).say("wangjl", "本月NPS")
    assert "王经理团队：暂无答卷" in wecom_sim.texts_to("wangjl")[-1]
    await WeComChat(client, deliver=True).say("wangjl", "上月NPS")
    assert "王经理团队：NPS +25" in wecom_sim.texts_to("wangjl")[-1]


async def test_settings_reach_the_page_key(make_settings: Any, start_app: Any) -> None:
    """A survey signed under one key is not found under another: rotating ``[nps] secret`` voids old links."""
    client, clock = await start(make_settings, start_app, nps={"secret": "one"})
    await win(HUAWEI, DAY0)
    await day(client, clock, 15)
    row = await OutboxMessage.get(dedupe_key__startswith="nps:survey:")
    token = token_in([row.payload["text"]])
    assert (await client.get(f"/nps/{token}")).status == 200
    client.app[SETTINGS].nps.secret = "two"
    assert (await client.get(f"/nps/{token}")).status == 404
