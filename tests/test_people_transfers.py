"""A rep with 200 customers leaves: the manager's 离职交接 moves the whole book in the CRM, and the scheduled passes
move the WeCom contacts through the simulator's ``externalcontact/transfer_customer`` in batches of 100, poll
``transfer_result`` until each is done or failed, ask again for a successor over WeCom's limit (up to three times),
and tell the manager of every customer that could not be moved, once. Nothing is moved twice or lost."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from bot.clock import Clock
from bot.keys import BOT, CLOCK
from bot.scheduled import run_rules
from models.audit import AuditLog
from models.customers import Contact, Customer
from models.people import ContactTransfer, TransferStatus
from models.staff import Role, Staff
from tests.driver import WeComChat
from tests.helpers import deliver_all, staff_member
from tests.simulators.wecom import WeComSimulator

NOW = datetime.fromisoformat("2026-11-18T10:00:00+08:00")
BOOK = 200
REFUSED = {f"wm{i:04d}" for i in range(0, BOOK, 10)}  # 20 customers refuse the successor
OVER_LIMIT = {f"wm{i:04d}" for i in range(5, BOOK, 50)}  # 4 land on a successor over WeCom's limit
NOT_A_CONTACT = {"wm0007", "wm0013"}  # WeCom refuses to start these at all


async def passes(client: Any, at: datetime) -> None:
    """A scheduled pass at ``at``, and what it sent delivered."""
    client.app[CLOCK].set(at)
    await run_rules(client.app[BOT], at, full=True)
    await deliver_all(client.app)


async def test_a_200_customer_book_moves_once_with_every_failure_reported(
    start_app: Any, make_settings: Any, wecom_sim: WeComSimulator
) -> None:
    client = await start_app(make_settings(), clock=Clock(NOW), run_scheduler=False)
    manager = await staff_member(name="王经理", role=Role.MANAGER, wecom="wangjl")
    leaver = await staff_member(name="张三", role=Role.REP, manager_id=manager.id, wecom="zhangsan")
    successor = await staff_member(name="李四", role=Role.REP, manager_id=manager.id, wecom="lisi")
    await Customer.bulk_create(
        [Customer(name=f"客户{i:04d}", owner_id=leaver.id, grade="ABC"[i % 3]) for i in range(BOOK)]
    )
    customers = await Customer.filter(owner_id=leaver.id).order_by("name")
    await Contact.bulk_create(
        [Contact(customer_id=c.id, name="联系人", external_userid=f"wm{i:04d}") for i, c in enumerate(customers)]
    )
    await client.app[BOT].understanding.refresh()
    wecom_sim.transfer_outcomes.update({e: 3 for e in REFUSED} | {e: 4 for e in OVER_LIMIT})
    wecom_sim.transfer_errcodes.update({e: 84061 for e in NOT_A_CONTACT})
    chat = WeComChat(client, wecom_sim, deliver=True)

    await chat.say("wangjl", "离职交接 张三 给 李四")
    assert "客户 200 位" in chat.sent_to("wangjl")[0] and "客户联系人 200 位待转接" in chat.sent_to("wangjl")[0]
    assert await Customer.filter(owner_id=successor.id).count() == BOOK
    assert await AuditLog.filter(action="customer.handover").count() == BOOK

    for minute in range(4):
        await passes(client, NOW + timedelta(minutes=minute))

    asks = [c["body"] for c in wecom_sim.sent if c["endpoint"] == "externalcontact/transfer_customer"]
    assert [len(a["external_userid"]) for a in asks] == [100, 100, 4, 4]  # then the over-limit ones, twice more
    assert {(a["handover_userid"], a["takeover_userid"]) for a in asks} == {("zhangsan", "lisi")}
    asked = [e for a in asks[:2] for e in a["external_userid"]]
    assert len(asked) == len(set(asked)) == BOOK
    assert not any(c["endpoint"].startswith("externalcontact/resigned/") for c in wecom_sim.sent)

    rows = {t.contact_user_id: t for t in await ContactTransfer.all()}
    failed = REFUSED | OVER_LIMIT | NOT_A_CONTACT
    assert {e for e, t in rows.items() if t.status == TransferStatus.DONE} == {
        f"wm{i:04d}" for i in range(BOOK)
    } - failed
    assert {e for e, t in rows.items() if t.status == TransferStatus.FAILED} == failed
    assert {rows[e].reason for e in REFUSED} == {"客户拒绝"}
    assert {rows[e].reason for e in OVER_LIMIT} == {"接替成员客户达到上限"}
    assert {rows[e].attempts for e in OVER_LIMIT} == {3}
    assert {rows[e].reason for e in NOT_A_CONTACT} == {"企业微信拒绝（错误码 84061）"}

    first, third = chat.sent_to("wangjl")[1:]  # what failed in the first pass, and in the third
    assert "张三离职交接：22 位客户的联系人未能转给接替人" in first
    assert "客户拒绝：客户0000、客户0010" in first and "等 20 位" in first
    assert "企业微信拒绝（错误码 84061）：客户0007、客户0013" in first
    assert "接替成员客户达到上限" not in first and "接替成员客户达到上限" in third
    assert "4 位客户" in third and "客户0005、客户0055、客户0105、客户0155" in third
    notices = len(chat.sent_to("wangjl"))
    await passes(client, NOW + timedelta(minutes=10))
    assert len(chat.sent_to("wangjl")) == notices  # reported once
    assert len([c for c in wecom_sim.sent if c["endpoint"] == "externalcontact/transfer_customer"]) == len(asks)
    assert not (await Staff.get(id=leaver.id)).active
