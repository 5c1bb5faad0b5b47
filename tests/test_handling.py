"""Handling a burst: messages waiting together are answered in one transaction, each in a savepoint of its own,
so the database refusing one rep's change costs that rep an apology and nobody else anything."""

from __future__ import annotations

import asyncio
from typing import Any

from tortoise import connections

from bot.pipeline import FAILED
from models.audit import AuditLog
from models.customers import Customer
from models.followups import FollowUp
from models.messages import Message
from tests.helpers import deliver_all, post_wecom, text_xml
from tests.test_customers import demo

# The database refuses 李四's audit entries, as a full disk or a broken constraint would refuse a write: his
# follow-up has already been inserted by then, so keeping nothing of it proves the rollback.
REFUSE_SQLITE = (
    "CREATE TRIGGER refuse_audit BEFORE INSERT ON audit_log WHEN NEW.actor_name = '李四'"
    " BEGIN SELECT RAISE(ABORT, 'refused'); END"
)
REFUSE_POSTGRES = (
    "CREATE FUNCTION refuse_audit() RETURNS trigger AS $$ BEGIN"
    " IF NEW.actor_name = '李四' THEN RAISE EXCEPTION 'refused'; END IF; RETURN NEW; END $$ LANGUAGE plpgsql;"
    " CREATE TRIGGER refuse_audit BEFORE INSERT ON audit_log FOR EACH ROW EXECUTE FUNCTION refuse_audit()"
)


async def test_a_refused_change_costs_only_its_sender_an_apology(
    start_app: Any, make_settings: Any, wecom_sim: Any
) -> None:
    client = await demo(start_app, make_settings)
    before = await Customer.get(name="恒力液压有限公司")
    conn = connections.get("default")
    await conn.execute_script(REFUSE_POSTGRES if conn.capabilities.dialect == "postgres" else REFUSE_SQLITE)

    said = await asyncio.gather(
        post_wecom(client, text_xml("zhangsan", "跟进 华为 电话沟通了报价", 9501)),
        post_wecom(client, text_xml("lisi", "跟进 恒力液压 微信沟通了交期", 9502)),
        post_wecom(client, text_xml("zhangsan", "跟进 比亚迪 拜访了周经理", 9503)),
    )
    assert [r.status for r in said] == [200, 200, 200]
    await deliver_all(client.app)

    answers = wecom_sim.texts_to("zhangsan")
    assert [a.split("」")[0] for a in answers] == ["已记录「华为技术有限公司", "已记录「比亚迪股份有限公司"]
    assert wecom_sim.texts_to("lisi") == [FAILED]
    hengli = await Customer.get(name="恒力液压有限公司")
    assert not await FollowUp.filter(customer_id=hengli.id).exists()
    assert hengli.last_followup_at == before.last_followup_at
    assert await FollowUp.filter(staff__name="张三").count() == 2
    assert await AuditLog.filter(action="follow_up").count() == 2
    assert await Message.filter(to_bot=True, handled_at=None).count() == 0  # every message handled, once


async def test_a_burst_from_many_reps_is_answered_once_each(start_app: Any, make_settings: Any, wecom_sim: Any) -> None:
    client = await demo(start_app, make_settings)
    texts = [("zhangsan" if i % 2 else "lisi", "帮助", 9600 + i) for i in range(40)]
    said = await asyncio.gather(*(post_wecom(client, text_xml(u, t, m)) for u, t, m in texts))
    assert {r.status for r in said} == {200}
    await deliver_all(client.app)
    assert len(wecom_sim.texts_to("zhangsan")) == len(wecom_sim.texts_to("lisi")) == 20
    assert await Message.filter(to_bot=True, handled_at__not_isnull=True).count() == 40
