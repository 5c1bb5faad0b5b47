"""A rep leaves (离职交接): their manager says so in WeCom, or the operator runs ``crmbot staff leave``, and in one
transaction every customer, open ticket, pending approval and reminder moves to the successor, each customer
audited; the leaver's account stops; the successor learns what they took over and what is due, the manager the
totals. Refusals write nothing."""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from bot.clock import Clock
from bot.demo import load_demo
from bot.dispatch import NOT_REGISTERED
from bot.keys import BOT
from models.approvals import Approval, ApprovalStep, StepStatus
from models.audit import AuditLog
from models.customers import Customer
from models.people import ContactTransfer, Handover
from models.reminders import Reminder
from models.staff import Staff
from models.tickets import Ticket, TicketStatus
from tests.driver import WeComChat
from tests.simulators.wecom import WeComSimulator
from tests.test_cli import crmbot

NOW = datetime.fromisoformat("2026-11-18T10:00:00+08:00")
ZHANGSAN_CUSTOMERS = {"华为技术有限公司", "比亚迪股份有限公司", "三一重工股份有限公司"}


async def demo_app(start_app: Any, make_settings: Any, **sections: Any) -> Any:
    """The demo team and customers at NOW (张三 owns 华为, 比亚迪, 三一; 李四 owns 恒力液压, 金风科技; 王经理 manages
    both), keyword rules off."""
    settings = make_settings(keywords={"buying_signal_tag": "", "ticket_mode": "off"}, **sections)
    client = await start_app(settings, clock=Clock(NOW), run_scheduler=False)
    await load_demo(client.app)
    await client.app[BOT].understanding.refresh()
    return client


async def demo_team(start_app: Any, make_settings: Any) -> Any:
    """The demo, with 张三 holding an open ticket, a pending approval request, a reminder and a follow-up due on
    Friday."""
    client = await demo_app(start_app, make_settings)
    zhangsan, wangjl = await Staff.get(name="张三"), await Staff.get(name="王经理")
    huawei = await Customer.get(name="华为技术有限公司")
    await Customer.filter(id=huawei.id).update(next_followup_at=NOW + timedelta(days=2))
    await Ticket.create(customer=huawei, title="液压站漏油", assignee=zhangsan, first_response_due=NOW, created_at=NOW)
    await Reminder.create(staff=zhangsan, customer=huawei, content="给华为打电话", at=NOW + timedelta(days=1))
    approval = await Approval.create(customer=huawei, requester=zhangsan, discount=0.85, created_at=NOW)
    await ApprovalStep.create(approval=approval, level=1, role="manager", approver=wangjl, status=StepStatus.PENDING)
    return client


async def test_the_manager_hands_a_leaving_reps_whole_book_to_a_successor(
    start_app: Any, make_settings: Any, wecom_sim: WeComSimulator
) -> None:
    client = await demo_team(start_app, make_settings)
    chat = WeComChat(client, wecom_sim, deliver=True)
    zhangsan, lisi = await Staff.get(name="张三"), await Staff.get(name="李四")

    await chat.say("wangjl", "离职交接 张三 给 李四")

    [answer] = chat.sent_to("wangjl")
    assert "张三 → 李四" in answer and "客户 3 位" in answer and "未结工单 1 个" in answer, answer
    assert "提醒 1 条" in answer and "审批申请 1 个" in answer, answer
    moved = await Customer.filter(owner_id=lisi.id).values_list("name", flat=True)
    assert set(moved) >= ZHANGSAN_CUSTOMERS
    assert await Customer.filter(owner_id=zhangsan.id).count() == 0
    assert await Ticket.filter(assignee_id=lisi.id, status=TicketStatus.OPEN).count() == 1
    assert await Reminder.filter(staff_id=lisi.id).count() == 1
    assert await Approval.filter(requester_id=lisi.id).count() == 1
    audits = await AuditLog.filter(action="customer.handover").values_list("entity_id", "before", "after")
    assert len(audits) == 3 and all(b["owner_id"] == zhangsan.id and a["owner_id"] == lisi.id for _, b, a in audits)
    assert not (await Staff.get(id=zhangsan.id)).active
    # The WeCom contacts of the three customers wait to be moved from zhangsan to lisi.
    transfers = await ContactTransfer.all().values_list("contact_user_id", "from_user_id", "to_user_id")
    assert sorted(transfers) == [("wmBYD01", "zhangsan", "lisi"), ("wmHW001", "zhangsan", "lisi"),
                                 ("wmSY001", "zhangsan", "lisi")]  # fmt: skip

    [summary] = chat.sent_to("lisi")
    assert "张三离职，3 位客户已转给您负责" in summary
    assert summary.index("华为技术有限公司") < summary.index("三一重工股份有限公司")  # grade A before C
    assert "近 7 天待跟进 1 位" in summary and "11-20 10:00 华为技术有限公司" in summary

    await chat.say("zhangsan", "帮助")
    assert chat.sent_to("zhangsan") == [NOT_REGISTERED]


async def test_a_second_handover_of_the_same_rep_and_a_rep_asking_change_nothing(
    start_app: Any, make_settings: Any, wecom_sim: WeComSimulator
) -> None:
    client = await demo_team(start_app, make_settings)
    chat = WeComChat(client, wecom_sim, deliver=True)
    audits = await AuditLog.all().count()

    await chat.say("lisi", "离职交接 张三 给 李四")
    await chat.say("wangjl", "离职交接 张三 给 不存在的人")
    await chat.say("wangjl", "离职交接 张三")
    assert chat.sent_to("lisi") == ["只有张三的主管或管理员可以办理离职交接。"]
    assert chat.sent_to("wangjl")[0] == "没有找到在职同事「不存在的人」。"
    assert "请说明交给谁" in chat.sent_to("wangjl")[1]
    assert await AuditLog.all().count() == audits and await Handover.all().count() == 0

    await chat.say("wangjl", "离职交接 张三 放入公海")
    await chat.say("zhaozong", "离职交接 张三 给 李四")
    assert "转入公海 3 位" in chat.sent_to("wangjl")[2]
    assert chat.sent_to("zhaozong") == ["张三已经办理过离职交接了。"]
    assert await Customer.filter(name__in=list(ZHANGSAN_CUSTOMERS), owner_id__isnull=True).count() == 3
    assert await Handover.all().count() == 1


async def test_crmbot_staff_leave_splits_the_book_round_robin(tmp_path: Path, database_url: str) -> None:
    config = tmp_path / "test.toml"
    config.write_text(f'[database]\nurl = "{database_url}"\n', encoding="utf-8")
    work = tmp_path / "work"
    work.mkdir()
    assert crmbot(work, "demo", "--config", str(config)).returncode == 0

    bad = crmbot(work, "staff", "leave", "张三", "--to", "无名氏", "--config", str(config))
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1 and "无名氏" in bad.stderr, bad.stderr
    bad_grade = crmbot(work, "staff", "leave", "张三", "--grade", "D=李四", "--config", str(config))
    assert bad_grade.returncode == 2 and "--grade" in bad_grade.stderr, bad_grade.stderr

    done = crmbot(work, "staff", "leave", "张三", "--to", "李四", "--to", "陈工", "--config", str(config))
    assert done.returncode == 0, done.stderr
    assert "张三 → 李四、陈工" in done.stdout and "客户 3 位" in done.stdout

    again = crmbot(work, "staff", "leave", "张三", "--to", "李四", "--config", str(config))
    assert again.returncode == 2 and "已经办理过" in again.stderr


async def test_a_handover_split_by_grade_sends_each_grade_its_own_way(
    start_app: Any, make_settings: Any, wecom_sim: WeComSimulator
) -> None:
    client = await demo_team(start_app, make_settings)
    chat = WeComChat(client, wecom_sim, deliver=True)
    lisi, chengong = await Staff.get(name="李四"), await Staff.get(name="陈工")

    await chat.say("wangjl", "离职交接 张三 A级给李四、陈工 C放入公海")

    assert "张三 → A级 → 李四、陈工；C级 → 公海；其余 → 公海" in chat.sent_to("wangjl")[0]
    owners = dict(await Customer.filter(name__in=list(ZHANGSAN_CUSTOMERS)).values_list("name", "owner_id"))
    assert owners == {"华为技术有限公司": lisi.id, "比亚迪股份有限公司": chengong.id, "三一重工股份有限公司": None}
    assert "1 位客户已转给您负责" in chat.sent_to("lisi")[0] and "1 位客户已转给您负责" in chat.sent_to("chengong")[0]
