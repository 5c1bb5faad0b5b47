"""An existing database moves to the current schema at start-up and keeps what it held: staff accounts that were
columns of ``staff`` become ``staff_account`` rows, approval steps keep their card's id and handle, and nothing
that refers to a staff member is lost (SQLite rebuilds ``staff`` to drop its columns)."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from tortoise import connections
from tortoise.context import TortoiseContext
from tortoise.migrations.api import migrate

from bot.db import migrate_database, tortoise_config
from tests.conftest import PG_URL, _admin, _with_database

BEFORE_ACCOUNTS = "models.0002_search"
LEGACY_STAFF = (
    "INSERT INTO staff (id, name, wecom_userid, dingtalk_userid, role, active, created_at) VALUES"
    " (1, '王经理', 'wangjl', 'ding_wangjl', 'manager', {true}, {now}),"
    " (2, '张三', 'zhangsan', NULL, 'rep', {true}, {now}),"
    " (3, '李四', NULL, 'ding_lisi', 'rep', {false}, {now})"
)
LEGACY_APPROVAL = (
    "INSERT INTO customer (id, name, aliases, industry, grade, stage, owner_id, tags, custom_fields, created_at,"
    " updated_at) VALUES (1, '华为技术有限公司', '[]', '', '', 'quote', 2, '[]', '{{}}', {now}, {now});"
    " INSERT INTO approval (id, customer_id, requester_id, discount, reason, status, level, levels, platform,"
    " created_at, updated_at) VALUES (1, 1, 2, 0.85, '', 'approved', 1, 1, 'wecom', {now}, {now});"
    " INSERT INTO approval_step (id, approval_id, level, role, approver_id, status, comment, task_id, response_code,"
    " decided_via) VALUES (1, 1, 1, 'manager', 1, 'approved', '', 'ap1-s1-0a1b2c3d', 'code-1', 'card')"
)


@dataclass(frozen=True)
class OldDatabase:
    """A database of its own for one migration test, and how its SQL spells true, false and now."""

    url: str
    true: str
    false: str
    now: str


@contextlib.asynccontextmanager
async def old_database(tmp_path: Path, sqlite_now: str = "'2026-01-01 00:00:00+00:00'") -> AsyncIterator[OldDatabase]:
    """An empty database: an SQLite file, or a throw-away PostgreSQL database dropped afterwards."""
    if not PG_URL:
        yield OldDatabase(f"sqlite://{tmp_path / 'old.sqlite3'}", "1", "0", sqlite_now)
        return
    name = f"crmbot_m_{uuid.uuid4().hex[:12]}"
    await _admin(f'CREATE DATABASE "{name}"')
    try:
        yield OldDatabase(_with_database(PG_URL, name), "TRUE", "FALSE", "now()")
    finally:
        await _admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


async def _at(url: str, target: str) -> None:
    async with TortoiseContext():
        await migrate(config=tortoise_config(url), target=target)


async def _query(url: str, sql: str) -> list[dict[str, Any]]:
    async with TortoiseContext() as context:
        await context.init(config=tortoise_config(url))
        return list(await connections.get("default").execute_query_dict(sql))


async def _script(url: str, sql: str) -> None:
    async with TortoiseContext() as context:
        await context.init(config=tortoise_config(url))
        await connections.get("default").execute_script(sql)


async def test_accounts_and_cards_survive_the_move_to_staff_accounts(tmp_path: Path) -> None:
    async with old_database(tmp_path) as db:
        url, true, false, now = db.url, db.true, db.false, db.now
        await _at(url, BEFORE_ACCOUNTS)
        await _script(url, LEGACY_STAFF.format(true=true, false=false, now=now))
        await _script(url, LEGACY_APPROVAL.format(now=now))

        await migrate_database(url)  # what every start does

        accounts = await _query(
            url,
            "SELECT s.name, a.platform, a.user_id FROM staff_account a JOIN staff s ON s.id = a.staff_id"
            " ORDER BY s.id, a.platform",
        )
        assert [(a["name"], a["platform"], a["user_id"]) for a in accounts] == [
            ("王经理", "dingtalk", "ding_wangjl"),
            ("王经理", "wecom", "wangjl"),
            ("张三", "wecom", "zhangsan"),
            ("李四", "dingtalk", "ding_lisi"),
        ]
        [step] = await _query(url, "SELECT card_id, card_handle, decided_via FROM approval_step")
        assert (step["card_id"], step["card_handle"], step["decided_via"]) == ("ap1-s1-0a1b2c3d", "code-1", "card")
        assert [s["name"] for s in await _query(url, "SELECT name FROM staff ORDER BY id")] == [
            "王经理",
            "张三",
            "李四",
        ]


BEFORE_UNDO = "models.0003_staff_accounts"
LEGACY_AUDIT = (
    "INSERT INTO staff (id, name, role, active, created_at) VALUES (2, '张三', 'rep', {true}, {now});"
    " INSERT INTO customer (id, name, aliases, industry, grade, stage, owner_id, tags, custom_fields, created_at,"
    " updated_at) VALUES (7, '华为技术有限公司', '[]', '', '', 'quote', 2, '[]', '{{}}', {now}, {now});"
    " INSERT INTO contact (id, customer_id, name, phone, role, created_at) VALUES (3, 7, '刘工', '13800000001',"
    " '决策人', {now});"
    " INSERT INTO ticket (id, customer_id, title, description, priority, status, source, first_response_due,"
    " resolution, created_at, updated_at) VALUES (5, 7, '漏油', '', 'normal', 'open', 'manual', {now}, '', {now},"
    " {now});"
    " INSERT INTO approval (id, customer_id, requester_id, discount, reason, status, level, levels, platform,"
    " created_at, updated_at) VALUES (12, 7, 2, 0.85, '', 'pending', 1, 1, 'wecom', {now}, {now});"
    " INSERT INTO audit_log (actor_name, action, entity, entity_id, platform, created_at) VALUES"
    " ('张三', 'set_stage', 'customer', '7', 'wecom', {now}), ('导入', 'create', 'contact', '3', 'cli', {now}),"
    " ('系统', 'ticket.escalate', 'ticket', '5', 'rules', {now}), ('张三', 'approval.request', 'approval', 'AP12',"
    " 'wecom', {now}), ('导入', 'create', 'staff', '2', 'cli', {now})"
)


async def test_the_audit_rows_already_there_learn_their_customer(tmp_path: Path) -> None:
    async with old_database(tmp_path) as db:
        url, true, now = db.url, db.true, db.now
        await _at(url, BEFORE_UNDO)
        await _script(url, LEGACY_AUDIT.format(true=true, now=now))

        await migrate_database(url)

        rows = await _query(url, "SELECT entity, customer_id, source, undo_of FROM audit_log ORDER BY id")
        assert [(r["entity"], r["customer_id"]) for r in rows] == [
            ("customer", 7),
            ("contact", 7),
            ("ticket", 7),
            ("approval", 7),
            ("staff", None),
        ]
        assert {(r["source"], r["undo_of"]) for r in rows} == {("", None)}
        [contact] = await _query(url, "SELECT name, title FROM contact")
        assert (contact["name"], contact["title"]) == ("刘工", "")


LEGACY_ORDERS = (
    "INSERT INTO customer (id, name, aliases, industry, grade, stage, tags, custom_fields, created_at, updated_at)"
    " VALUES (1, '三一重工股份有限公司', '[]', '', '', 'won', '[]', '{{}}', {now}, {now});"
    " INSERT INTO customer_order (id, customer_id, order_date, amount, external_no, created_at) VALUES"
    " (1, 1, '2026-01-05', '1200.50', 'SO-1', {now}), (2, 1, '2026-02-04', '800', 'SO-2', {now})"
)


async def test_existing_orders_keep_their_numbers_and_start_a_timeline(tmp_path: Path) -> None:
    async with old_database(tmp_path, sqlite_now="'2026-03-01 00:00:00+00:00'") as db:
        url, now = db.url, db.now
        await _at(url, "models.0003_staff_accounts")
        await _script(url, LEGACY_ORDERS.format(now=now))

        await migrate_database(url)

        orders = await _query(url, "SELECT source, order_no, total, status FROM customer_order ORDER BY id")
        assert [(o["source"], o["order_no"], str(o["total"]), o["status"]) for o in orders] == [
            ("erp", "SO-1", "1200.50", "placed"),
            ("erp", "SO-2", "800", "placed") if not PG_URL else ("erp", "SO-2", "800.00", "placed"),
        ]
        timeline = await _query(url, "SELECT order_id, status FROM order_status_change ORDER BY order_id")
        assert [(t["order_id"], t["status"]) for t in timeline] == [(1, "placed"), (2, "placed")]


LEGACY_SEARCH = (
    "INSERT INTO search_doc (key, message_id, customer_id, hidden, body{grams}) VALUES"
    " ({march}, 1, NULL, {false}, '三月的耐高温材料'{g1}), ({may}, 2, NULL, {false}, '五月的耐高温材料'{g2})"
)


async def test_the_search_index_moves_into_monthly_partitions(tmp_path: Path) -> None:
    """PostgreSQL: the indexed rows land in the partitions of their months; SQLite keeps its one table."""
    from bot.search import index_grams, time_key

    march, may = time_key(datetime(2025, 3, 9, tzinfo=UTC)), time_key(datetime(2025, 5, 1, tzinfo=UTC))
    async with old_database(tmp_path) as db:
        await _at(db.url, "models.0011_funnel")
        pg = bool(PG_URL)
        grams = [
            ", ARRAY[" + ", ".join(f"'{g}'" for g in index_grams(text)) + "]" if pg else ""
            for text in ("三月的耐高温材料", "五月的耐高温材料")
        ]
        await _script(
            db.url,
            LEGACY_SEARCH.format(
                grams=", grams" if pg else "", march=march, may=may, false=db.false, g1=grams[0], g2=grams[1]
            ),
        )

        await migrate_database(db.url)

        rows = await _query(db.url, "SELECT message_id, body FROM search_doc ORDER BY key")
        assert [r["body"] for r in rows] == ["三月的耐高温材料", "五月的耐高温材料"]
        if pg:
            held = await _query(
                db.url,
                "SELECT c.relname AS name, count(d.key) AS n FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid"
                " LEFT JOIN search_doc d ON d.tableoid = c.oid WHERE i.inhparent = 'search_doc'::regclass"
                " GROUP BY c.relname ORDER BY c.relname",
            )
            assert {r["name"]: r["n"] for r in held} == {
                "search_doc_default": 0,
                "search_doc_y2025m03": 1,
                "search_doc_y2025m05": 1,
            }
            found = await _query(db.url, "SELECT message_id FROM search_doc WHERE grams @> ARRAY['温材']")
            assert sorted(r["message_id"] for r in found) == [1, 2]
