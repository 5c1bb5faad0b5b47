"""Demo data for a first run: a small sales team, a handful of customers and some archived conversations.

Each demo member has a login (``zhangsan``); every platform that wants demo accounts gives them the account
``demo_prefix + login`` there, so ``crmbot chat --as zhangsan`` works and the demo conversations are linked.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from aiohttp import web

from bot.identity import Identity
from bot.keys import BOT, CLOCK
from bot.types import IncomingMessage
from models.customers import Contact, Customer, Stage
from models.staff import Role, Staff, StaffAccount

STAFF = [
    # name, login, role, manager
    ("赵总", "zhaozong", Role.DIRECTOR, None),
    ("王经理", "wangjl", Role.MANAGER, "赵总"),
    ("张三", "zhangsan", Role.REP, "王经理"),
    ("李四", "lisi", Role.REP, "王经理"),
    ("陈工", "chengong", Role.REP, "王经理"),
    ("管理员", "admin", Role.ADMIN, None),
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
    # days ago, from (a customer contact or a staff login), to, text; archived on the first platform with contacts
    (40, "wmHW001", "zhangsan", "你们的耐高温材料能到多少度？我们新产线需要"),
    (40, "zhangsan", "wmHW001", "常规型号可以到 600 度，耐高温材料样品下周寄给您"),
    (12, "wmHW001", "zhangsan", "样品测试不错，请报一下 2000 件的价格"),
    (3, "wmBYD01", "zhangsan", "上批液压元件有一台漏油，麻烦安排售后看看"),
    (2, "wmHL001", "lisi", "液压元件的交期能不能提前到月底？"),
]


async def load_demo(app: web.Application) -> dict[str, int]:
    identities = [i for i in app[BOT].directory.identities if i.demo_prefix is not None]
    by_name: dict[str, Staff] = {}
    for name, login, role, manager in STAFF:
        staff, created = await Staff.get_or_create(name=name, defaults={"role": role})
        if created:
            for identity in identities:
                await _account(staff, identity, login)
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
    archive = next((i for i in identities if i.external_prefixes), None)  # a platform with customer contacts
    if archive is not None:
        await _conversations(app, archive, now)
    return {"staff": await Staff.all().count(), "customers": await Customer.all().count()}


async def _account(staff: Staff, identity: Identity, login: str) -> None:
    user_id = f"{identity.demo_prefix}{login}"
    if not await StaffAccount.filter(platform=identity.platform, user_id=user_id).exists():
        await StaffAccount.create(staff_id=staff.id, platform=identity.platform, user_id=user_id)


async def _conversations(app: web.Application, platform: Identity, now: datetime) -> None:
    def user(login: str) -> str:
        return login if platform.is_external(login) else f"{platform.demo_prefix or ''}{login}"

    for i, (days_ago, sender, receiver, text) in enumerate(CONVERSATIONS):
        await app[BOT].archive(
            IncomingMessage(
                platform=platform.platform,
                msgid=f"demo-{i}",
                sender=user(sender),
                receivers=(user(receiver),),
                text=text,
                sent_at=now - timedelta(days=days_ago),
                to_bot=False,
            )
        )
