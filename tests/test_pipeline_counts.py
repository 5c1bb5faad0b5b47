"""The funnel's kept figures stay true: after random moves, field edits, follow-ups, 撤销 of stage changes and
follow-ups, and ``crmbot import opportunities``, the totals per owner and stage (``FunnelCount``), the stay counts
per day and per slot (``StayCount``, ``StaySlotCount``) and when each deal last moved equal a straightforward
recomputation from the deals, their stage history and their customers; and a database from before these figures
were kept gets them right at start-up."""

from __future__ import annotations

import json
import math
import random
from datetime import timedelta
from pathlib import Path
from typing import Any

from bot.clock import Clock
from bot.db import migrate_database
from bot.keys import BOT
from handlers.pipeline import deals
from integrations.wecom.archive_file import import_jsonl
from models.customers import Customer, Stage
from models.opportunities import SLOTS_PER_DAY, FunnelCount, Opportunity, StageChange, StayCount, StaySlotCount
from models.staff import Role, Staff
from tests.driver import ConsoleChat
from tests.helpers import staff_member
from tests.simulators.wecom import WeComSimulator
from tests.test_customers import NOW, demo
from tests.test_migrations import _at, _query, _script, old_database
from tests.test_pipeline import DAY0, Office, open_office
from tests.test_rules_engine import _crmbot, cli_env

LADDER = [Stage.LEAD, Stage.INTENT, Stage.PROPOSAL, Stage.QUOTE, Stage.NEGOTIATION, Stage.WON]
Totals = dict[tuple[int, str, int], tuple[int, float, float, float]]


def recounted(opps: list[dict[str, Any]]) -> Totals:
    """The funnel's totals per owner, stage and furthest stage, summed from the deals one by one."""
    totals: Totals = {}
    for o in opps:
        key = (int(o["owner_id"] or 0), str(o["stage"]), int(o["reached"]))
        amount, p = float(o["amount"]), o["probability"]
        n, total, plain, own = totals.get(key, (0, 0.0, 0.0, 0.0))
        weighted = (plain + amount, own) if p is None else (plain, own + amount * p)
        totals[key] = (n + 1, total + amount, *weighted)
    return totals


def same_totals(kept: Totals, expected: Totals) -> None:
    assert set(kept) == set(expected)
    for key, (n, *money) in expected.items():
        assert kept[key][0] == n, key
        assert all(math.isclose(a, b, abs_tol=0.005) for a, b in zip(kept[key][1:], money, strict=True)), key


def kept_totals(rows: list[dict[str, Any]]) -> Totals:
    return {
        (int(r["owner_id"]), str(r["stage"]), int(r["reached"])): (
            int(r["n"]), float(r["amount"]), float(r["plain"]), float(r["own"]),
        )
        for r in rows
        if int(r["n"])
    }  # fmt: skip


async def assert_figures_kept() -> None:
    """The kept figures equal their recomputation from the deals, the stage history and the customers."""
    opps = list(await Opportunity.all().values())
    same_totals(kept_totals(list(await FunnelCount.all().values())), recounted(opps))

    stays: dict[tuple[int, str, int], int] = {}
    for row in await StageChange.filter(left_at__isnull=False):
        stay = (row.left_at - row.entered_at).total_seconds() / 86400  # type: ignore[operator]
        assert row.stay_days is not None and math.isclose(row.stay_days, stay, abs_tol=1e-6)
        key = (row.owner_id or 0, str(row.stage), math.floor(row.stay_days))
        stays[key] = stays.get(key, 0) + 1
    kept = {(c.owner_id, str(c.stage), c.days): c.n for c in await StayCount.all() if c.n}
    assert kept == stays
    slots: dict[tuple[int, str, int], int] = {}
    for row in await StageChange.filter(left_at__isnull=False):
        key = (row.owner_id or 0, str(row.stage), math.floor(row.stay_days * SLOTS_PER_DAY))  # type: ignore[operator]
        slots[key] = slots.get(key, 0) + 1
    assert {(c.owner_id, str(c.stage), c.slot): c.n for c in await StaySlotCount.all() if c.n} == slots

    followed = dict(await Customer.all().values_list("id", "last_followup_at"))
    for o in opps:
        last = followed[o["customer_id"]]
        assert o["last_moved_at"] == (max(o["stage_entered_at"], last) if last else o["stage_entered_at"]), o["name"]
    for o in opps:  # the history agrees with the deal
        current = await StageChange.filter(opportunity_id=o["id"], left_at__isnull=True)
        assert [(str(c.stage), c.entered_at) for c in current] == [(str(o["stage"]), o["stage_entered_at"])]


async def test_kept_figures_equal_a_recomputation_after_random_moves_edits_follow_ups_and_undos(
    start_app: Any, make_settings: Any, wecom_sim: WeComSimulator
) -> None:
    office = await open_office(start_app, make_settings, wecom_sim)
    await office.on(0, "zhangsan", "商机 华为 5G基站电源 300万")
    await office.on(0, "zhangsan", "商机 华为 储能柜 100万 赢率 35%")
    rng = random.Random(20261203)
    reps = list(await Staff.filter(role=Role.REP).order_by("id"))
    customers = [await Customer.create(name=f"客户{i:02d}有限公司", owner=rng.choice(reps)) for i in range(12)]
    opened: list[Opportunity] = []
    for n in range(80):
        customer = rng.choice(customers)
        at = DAY0 + timedelta(days=rng.uniform(0, 10))
        owner = rng.choice([customer.owner_id, customer.owner_id, None])
        opened.append(
            await deals.start(
                customer, name=f"商机{n}", amount=rng.randrange(1, 500) * 10_000, stage=LADDER[rng.randrange(3)],
                owner_id=owner, now=at, actor=deals.Actor("import"), conn=None,
                probability_override=rng.choice([None, None, 0.35]),
            )
        )  # fmt: skip
    for day in range(11, 40):
        for opp in rng.sample(opened, 8):
            await opp.refresh_from_db()
            if Stage(opp.stage) not in LADDER[:-1]:
                continue
            at = DAY0 + timedelta(days=day + rng.random())
            if rng.random() < 0.1:
                await deals.move(opp, Stage.LOST, now=at, actor=deals.Actor("import"), conn=None)
            else:
                step = min(5, LADDER.index(Stage(opp.stage)) + rng.choice([1, 1, 2]))
                await deals.move(opp, LADDER[step], now=at, actor=deals.Actor("import"), conn=None)
        if rng.random() < 0.3:  # a follow-up moves the deals of its customer
            customer = rng.choice(customers)
            customer.last_followup_at = DAY0 + timedelta(days=day + 0.5)
            await customer.save()
            await deals_followed(customer)

    # In chat: moves, a field edit, a follow-up, each taken back with 撤销 where it can be.
    assert "潜在 → 意向" in await office.on(40, "zhangsan", "华为电源项目 进入意向")
    assert "意向 → 方案" in await office.on(41, "zhangsan", "华为电源项目 推进到方案")
    moved = await office.on(41, "zhangsan", "华为储能柜 进入报价")
    assert "（10 分钟内回复「撤销」可撤回）" in moved
    undone = await office.on(41, "zhangsan", "撤销")
    assert "已撤销：商机「储能柜」阶段 报价，已恢复为「潜在」" in undone
    assert (await Opportunity.get(name="储能柜")).stage == Stage.LEAD
    assert await StageChange.filter(opportunity__name="储能柜").count() == 1
    await assert_figures_kept()
    assert "已撤销：商机「5G基站电源」阶段 方案，已恢复为「意向」" in await office.on(41, "zhangsan", "撤销")
    assert "已更新商机「储能柜」的金额" in await office.on(42, "zhangsan", "商机 华为 储能柜 金额：80万")
    assert "已记录" in await office.on(43, "zhangsan", "跟进 华为 电话沟通了储能柜的报价")
    await assert_figures_kept()
    assert "这条跟进已删除" in await office.on(43, "zhangsan", "撤销")
    await assert_figures_kept()

    # Moved by someone else since: the undo is refused and nothing changes.
    assert "意向 → 方案" in await office.on(44, "zhangsan", "华为电源项目 进入方案")
    assert "方案 → 报价" in await office.on(44, "wangjl", "华为电源项目 进入报价")
    refused = await office.on(44, "zhangsan", "撤销")
    assert "不能撤销" in refused and "之后又推进过了" in refused
    assert (await Opportunity.get(name="5G基站电源")).stage == Stage.QUOTE
    await assert_figures_kept()

    assert "已恢复为「方案」" in await office.on(44, "wangjl", "撤销")
    await assert_figures_kept()

    # The director's funnel reads the kept figures: the same as recounting the deals.
    await staff_member(name="赵总", wecom="zhaozong", role=Role.DIRECTOR)
    funnel = await office.on(45, "zhaozong", "漏斗")
    totals = recounted(list(await Opportunity.all().values()))
    for stage in LADDER:
        n = sum(v[0] for k, v in totals.items() if k[1] == stage)
        amount = sum(v[1] for k, v in totals.items() if k[1] == stage)
        shown = f"赢单：{n} 个 {deals.yuan(amount)}" if stage == Stage.WON else f"｜{n}｜{deals.yuan(amount)}｜"
        assert shown in funnel


async def test_a_new_customer_with_a_deal_is_not_undone(
    start_app: Any, make_settings: Any, wecom_sim: WeComSimulator
) -> None:
    """Taking back a new customer would take its deals with it, and with them the funnel's figures."""
    office = await open_office(start_app, make_settings, wecom_sim)
    assert "宁德时代" in await office.on(0, "zhangsan", "新建客户 宁德时代")
    assert "已为「宁德时代」新建商机" in await office.on(0, "wangjl", "商机 宁德时代 电池产线 500万")
    refused = await office.on(0, "zhangsan", "撤销")
    assert "「宁德时代」建档后已经有了跟进、工单、商机、联系人或消息，不能撤销建档" in refused
    assert await Opportunity.filter(name="电池产线").exists()
    await assert_figures_kept()


async def test_a_reps_archived_reply_to_the_customer_moves_its_deals(
    start_app: Any, make_settings: Any, tmp_path: Path
) -> None:
    """A rep's own message to the customer (here from an exported chat archive) is contact: the deal no longer
    counts as stalled."""
    clock = Clock(NOW)
    client = await demo(start_app, make_settings, clock, pipeline={"stall_days": {"lead": 3}})
    chat = ConsoleChat(client.app)
    assert "已为「华为技术有限公司」新建商机" in await chat.say("张三", "商机 华为 储能柜 100万")
    clock.set(NOW + timedelta(days=10))
    assert "停滞商机 1 个" in await chat.say("王经理", "漏斗")
    sent = NOW + timedelta(days=9)
    export = tmp_path / "archive.jsonl"
    record = {"msgid": "exp1", "action": "send", "from": "zhangsan", "tolist": ["wmHW001"], "roomid": ""}
    record |= {"msgtime": int(sent.timestamp() * 1000), "msgtype": "text", "text": {"content": "报价已发您邮箱"}}
    export.write_text(json.dumps(record, ensure_ascii=False) + "\n", encoding="utf-8")
    await import_jsonl(client.app, export)
    assert (await Opportunity.get(name="储能柜")).last_moved_at == sent
    assert "停滞商机" not in await chat.say("王经理", "漏斗")
    await assert_figures_kept()


async def deals_followed(customer: Customer) -> None:
    """What whatever sets a customer's last follow-up does in the same transaction."""
    from models.opportunities import follow_ups_move_deals

    await follow_ups_move_deals(customer.id, customer.last_followup_at, None)


async def test_imported_deals_are_counted_in_the_funnel(
    start_app: Any, make_settings: Any, wecom_sim: WeComSimulator, tmp_path: Path
) -> None:
    office = await open_office(start_app, make_settings, wecom_sim)
    await office.on(0, "zhangsan", "商机 华为 5G基站电源 300万")
    settings = office.client.app[BOT].settings
    await office.client.close()
    deals_csv = tmp_path / "商机.csv"
    deals_csv.write_text(
        "客户名称,商机名称,金额,阶段,赢率,负责人\n"
        "华为,储能柜,100万,报价,70%,\n"
        "比亚迪,电池产线,2000000,谈判,,\n"
        "比亚迪,旧项目,50万,丢单,,张三\n"
        "华为,5G基站电源,999万,赢单,,\n",  # already there: left alone
        encoding="utf-8",
    )
    code, out, err = await _crmbot("import", "opportunities", str(deals_csv), env=cli_env(settings))
    assert code == 0 and "新增 added 3，已存在 already there 1" in out, err

    clock = Clock(DAY0)
    client = await start_app(settings, clock=clock, run_scheduler=False, run_dispatcher=False)
    office = Office(client, clock, wecom_sim)
    await assert_figures_kept()
    funnel = await office.on(1, "wangjl", "漏斗")
    assert "报价｜1｜100万｜70万｜" in funnel and "谈判｜1｜200万｜160万｜" in funnel
    assert "潜在｜1｜300万｜30万｜" in funnel and "丢单：1 个 50万" in funnel


OLD_DEALS = (
    "INSERT INTO staff (id, name, role, active, created_at) VALUES (1, '张三', 'rep', {true}, {now}),"
    " (2, '李四', 'rep', {true}, {now});"
    " INSERT INTO customer (id, name, aliases, industry, grade, stage, owner_id, tags, custom_fields, won_at,"
    " last_followup_at, created_at, updated_at) VALUES"
    " (1, '华为技术有限公司', '[]', '', '', 'quote', 1, '[]', '{{}}', NULL, '2026-02-20 00:00:00+00:00', {now}, {now}),"
    " (2, '比亚迪股份有限公司', '[]', '', '', 'intent', 2, '[]', '{{}}', NULL, NULL, {now}, {now});"
    " INSERT INTO opportunity (id, customer_id, name, amount, stage, probability, owner_id, source, lost_reason,"
    " details, reached, stage_entered_at, closed_at, created_at, updated_at) VALUES"
    " (1, 1, '电源', 3000000, 'quote', NULL, 1, '', '', '{{}}', 3, '2026-02-10 00:00:00+00:00', NULL, {now}, {now}),"
    " (2, 1, '储能', 1000000, 'quote', 0.35, 1, '', '', '{{}}', 3, '2026-02-25 00:00:00+00:00', NULL, {now}, {now}),"
    " (3, 2, '电池', 500000, 'intent', NULL, 2, '', '', '{{}}', 2, '2026-02-01 00:00:00+00:00', NULL, {now}, {now}),"
    " (4, 2, '旧单', 800000, 'lost', NULL, NULL, '', '', '{{}}', 1, '2026-01-05 00:00:00+00:00',"
    " '2026-01-05 00:00:00+00:00', {now}, {now});"
    " INSERT INTO opportunity_stage (opportunity_id, stage, entered_at, left_at, stay_days, owner_id) VALUES"
    " (1, 'lead', '2026-01-31 00:00:00+00:00', '2026-02-02 12:00:00+00:00', 2.5, 1),"
    " (1, 'proposal', '2026-02-02 12:00:00+00:00', '2026-02-10 00:00:00+00:00', 7.5, 1),"
    " (1, 'quote', '2026-02-10 00:00:00+00:00', NULL, NULL, 1),"
    " (3, 'lead', '2026-01-31 00:00:00+00:00', '2026-02-01 00:00:00+00:00', 1.0, 2),"
    " (3, 'intent', '2026-02-01 00:00:00+00:00', NULL, NULL, 2)"
)


async def test_the_migration_keeps_the_figures_of_existing_deals(tmp_path: Path) -> None:
    async with old_database(tmp_path) as db:
        await _at(db.url, "models.0011_funnel")
        await _script(db.url, OLD_DEALS.format(true=db.true, now=db.now))

        await migrate_database(db.url)

        opps = await _query(db.url, "SELECT * FROM opportunity ORDER BY id")
        moved = {o["name"]: str(o["last_moved_at"])[:10] for o in opps}  # text on SQLite, a datetime on PostgreSQL
        # 电源 entered 报价 before the last follow-up (02-20); 储能 after it; 比亚迪 was never followed up.
        assert moved == {"电源": "2026-02-20", "储能": "2026-02-25", "电池": "2026-02-01", "旧单": "2026-01-05"}
        counts = await _query(db.url, "SELECT * FROM opportunity_funnel_count")
        same_totals(kept_totals(counts), recounted(opps))
        assert kept_totals(counts)[(1, "quote", 3)] == (2, 4_000_000.0, 3_000_000.0, 350_000.0)
        slots = await _query(db.url, "SELECT owner_id, stage, slot, n FROM opportunity_stay_slot_count ORDER BY slot")
        assert [(r["owner_id"], r["stage"], r["slot"], r["n"]) for r in slots] == [
            (2, "lead", 32, 1), (1, "lead", 80, 1), (1, "proposal", 240, 1),
        ]  # fmt: skip
