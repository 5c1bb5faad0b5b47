"""Demo data for a first run: a small sales team, a handful of customers and some archived conversations."""

from __future__ import annotations

from datetime import timedelta

from aiohttp import web

from bot.app import BOT, CLOCK
from bot.types import IncomingMessage
from models.customers import Contact, Customer, Stage
from models.staff import Role, Staff

STAFF = [
    # name, wecom userid, dingtalk userid, role, manager
    ("赵总", "zhaozong", "ding_zhaozong", Role.DIRECTOR, None),
    ("王经理", "wangjl", "ding_wangjl", Role.MANAGER, "赵总"),
    ("张三", "zhangsan", "ding_zhangsan", Role.REP, "王经理"),
    ("李四", "lisi", "ding_lisi", Role.REP, "王经理"),
    ("陈工", "chengong", "ding_chengong", Role.REP, "王经理"),
    ("管理员", "admin", "ding_admin", Role.ADMIN, None),
]

CUSTOMERS = [
    # name, aliases, industry, grade, stage, owner, tags, contact, phone, external_userid
    (
        "华为技术有限公司",
        ["华为"],
        "通信设备",
        "A",
        Stage.NEGOTIATION,
        "张三",
        ["战略客户"],
        "刘工",
        "13800000001",
        "wmHW001",
    ),
    (
        "比亚迪股份有限公司",
        ["比亚迪"],
        "汽车",
        "A",
        Stage.QUOTE,
        "张三",
        ["新能源"],
        "周经理",
        "13800000002",
        "wmBYD01",
    ),
    (
        "恒力液压有限公司",
        ["恒力液压", "恒力"],
        "机械",
        "B",
        Stage.INTENT,
        "李四",
        [],
        "孙主任",
        "13800000003",
        "wmHL001",
    ),
    (
        "金风科技股份有限公司",
        ["金风科技", "金风"],
        "新能源",
        "B",
        Stage.PROPOSAL,
        "李四",
        [],
        "吴工",
        "13800000004",
        "wmJF001",
    ),
    (
        "三一重工股份有限公司",
        ["三一重工", "三一"],
        "工程机械",
        "C",
        Stage.LEAD,
        "张三",
        [],
        "郑采购",
        "13800000005",
        "wmSY001",
    ),
]

CONVERSATIONS = [
    # days ago, from (external or staff userid), to, text
    (40, "wmHW001", "zhangsan", "你们的耐高温材料能到多少度？我们新产线需要"),
    (40, "zhangsan", "wmHW001", "常规型号可以到 600 度，耐高温材料样品下周寄给您"),
    (12, "wmHW001", "zhangsan", "样品测试不错，请报一下 2000 件的价格"),
    (3, "wmBYD01", "zhangsan", "上批液压元件有一台漏油，麻烦安排售后看看"),
    (2, "wmHL001", "lisi", "液压元件的交期能不能提前到月底？"),
]


async def load_demo(app: web.Application) -> dict[str, int]:
    by_name: dict[str, Staff] = {}
    for name, wecom, ding, role, manager in STAFF:
        staff, _ = await Staff.get_or_create(
            name=name,
            defaults={"wecom_userid": wecom, "dingtalk_userid": ding, "role": role},
        )
        if manager:
            staff.manager_id = by_name[manager].id
            await staff.save(update_fields=["manager_id"])
        by_name[name] = staff
    now = app[CLOCK].now()
    for name, aliases, industry, grade, stage, owner, tags, contact, phone, external in CUSTOMERS:
        customer, created = await Customer.get_or_create(
            name=name,
            defaults={
                "aliases": aliases,
                "industry": industry,
                "grade": grade,
                "stage": stage,
                "owner_id": by_name[owner].id,
                "tags": tags,
                "last_followup_at": now - timedelta(days=5),
            },
        )
        if created:
            await Contact.create(customer=customer, name=contact, phone=phone, role="决策人", external_userid=external)
    bot = app[BOT]
    for i, (days_ago, sender, receiver, text) in enumerate(CONVERSATIONS):
        await bot.archive(
            IncomingMessage(
                platform="wecom",
                msgid=f"demo-{i}",
                sender=sender,
                receivers=(receiver,),
                text=text,
                sent_at=now - timedelta(days=days_ago),
                to_bot=False,
            )
        )
    return {"staff": await Staff.all().count(), "customers": await Customer.all().count()}
