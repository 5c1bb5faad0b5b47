"""``crmbot import staff|customers FILE``: staff and customers from the spreadsheets admins already have (.csv or
.xlsx, read by ``bot.spreadsheet``).

A customer file is streamed (``bot.spreadsheet.open_sheet``): read, cleaned, checked and written ``CHUNK_ROWS``
rows at a time, each chunk in ONE transaction and set-wise (``bot.bulk``: multi-row statements on SQLite, COPY on
PostgreSQL; contacts and the audit log likewise), so that memory stays flat however long the file. An import is
idempotent, hence resumable: rows are matched to stored customers by name and to stored contacts by external id,
name or phone, so running a file again, or again after a crash at any point, writes nothing twice (what a crashed
run committed is found unchanged; the rest is imported). A staff list is short and names managers anywhere in it,
so it is checked whole and written in one transaction. Headers may be Chinese or English; unknown customer
columns are kept as custom fields; staff accounts come from one column per platform (the headers each platform's
identity names, e.g. 企业微信账号).

What an import never does is lose data that is already stored:

* a blank cell keeps the stored value; aliases and tags are added to the stored ones; custom fields are merged;
* ``last_followup_at`` only moves forward (an old spreadsheet must not make a customer look neglected);
* rows naming the same staff member or customer are MERGED into one record (later non-blank cells win, lists and
  custom fields are combined, every row's contact is kept), because exports often list one row per contact; rows
  of one customer in different chunks are merged the way a re-import updates (reported as merged rows too);
* a name already in the database updates that record instead of creating a duplicate;
* two staff rows with one name but another account, role or manager are two people: the later row is rejected
  (names are how colleagues are addressed in chat), identical or complementary rows are merged.

Dates the old system never had are set so that the timers work: a customer marked won (成交) without a 成交日期
(won_at) column value is won as of the import, so its NPS survey and return visit count from there; with
``[rules] baseline_on_import`` the first import also starts every customer's follow-up ladder at the import
(``ladder_from``), so that a go-live with old 最近跟进 dates does not hand everyone over on the first pass.

Once a chunk has committed, its customers left without an owner, whether the import created them or found them
already stored, go to the registered import hooks (``Services.import_hooks``: the lead rules offer them to a rep
as leads; a customer with an owner keeps it); a region column (region, 区域) is kept as the custom field 地区.
The names imported reach every running bot's vocabulary through ``vocabulary_version`` (raised by the database
with the import's writes): the import itself never loads them.

A row that cannot be used is rejected with its row number and the reason, and the rest of the file is imported.
``ImportFailed`` is for files that cannot be used at all (unreadable, unknown kind, no name column, a CSV file
with a quote left open: all found before anything is written) and for a database failure while writing: the
chunk being written leaves nothing behind, and the message says up to which row the file was imported.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import sqlite3
import sys
import unicodedata
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time
from itertools import islice
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import asyncpg
from aiohttp import web
from tortoise.backends.base.client import BaseDBAsyncClient
from tortoise.exceptions import BaseORMException
from tortoise.transactions import in_transaction

from bot import audit, bulk
from bot.context import Services
from bot.identity import Directory, Identity
from bot.keys import BOT, CLOCK, SETTINGS
from bot.spreadsheet import (
    Cell,
    Columns,
    Header,
    ImportFailed,
    Sheet,
    cell_of,
    clean_id,
    clean_text,
    open_sheet,
    parse_date,
    parse_datetime,
    split_list,
)
from models.customers import STAGE_LABELS, Contact, Customer, Stage
from models.opportunities import follow_ups_move_deals
from models.staff import Role, Staff, StaffAccount

ACTOR = "import"
AUDIT_PLATFORM = "cli"
CHUNK = 500  # ids per IN (...) query
CHUNK_ROWS = 5000  # customer rows read, checked and written per transaction

# Tortoise wraps most driver errors; a few (e.g. a PostgreSQL trigger's RAISE) arrive as the driver's own.
DATABASE_ERRORS: tuple[type[Exception], ...] = (BaseORMException, sqlite3.Error, asyncpg.PostgresError)
ACCOUNT = "account:"  # field name prefix of a platform's account column: account:<platform>


# ---------------------------------------------------------------------------------------------------------------
# Columns


STAFF_COLUMNS: Columns = {
    "name": ("姓名", "name", "员工姓名", "名字"),
    "role": ("角色", "role"),
    "manager": ("上级", "manager", "直属上级", "汇报对象"),
}

log = logging.getLogger(__name__)

# Extra columns kept as the custom field other parts read them by: a region column is 地区, as leads have it.
CUSTOM_FIELD_NAMES = {"region": "地区", "区域": "地区"}
CUSTOMER_COLUMNS: Columns = {
    "name": ("客户名称", "name", "客户", "客户全称", "公司名称"),
    "aliases": ("别名", "aliases", "alias", "简称"),
    "industry": ("行业", "industry"),
    "grade": ("等级", "grade", "客户等级"),
    "stage": ("阶段", "stage", "客户阶段", "销售阶段"),
    "owner": ("负责人", "owner", "归属销售"),
    "tags": ("标签", "tags"),
    "contact": ("联系人", "contact", "联系人姓名"),
    "contact_role": ("联系人角色", "contact_role", "职务"),
    "phone": ("电话", "phone", "手机", "手机号", "联系电话"),
    "external_userid": ("外部联系人id", "external_userid", "external_id"),
    "contract_end": ("合同到期", "contract_end", "合同到期日", "合同截止日期"),
    "last_followup_at": ("最近跟进", "last_followup_at", "最近跟进时间", "最后跟进时间"),
    "next_followup_at": ("下次跟进", "next_followup_at", "下次跟进时间"),
    "won_at": ("成交日期", "won_at", "成交时间"),
}

ROLES: dict[str, Role] = {
    **{r.value: r for r in Role},
    "销售": Role.REP,
    "销售代表": Role.REP,
    "售后": Role.REP,
    "主管": Role.MANAGER,
    "经理": Role.MANAGER,
    "销售经理": Role.MANAGER,
    "总监": Role.DIRECTOR,
    "销售总监": Role.DIRECTOR,
    "管理员": Role.ADMIN,
}

STAGES: dict[str, Stage] = {
    **{s.value: s for s in Stage},
    **{label: s for s, label in STAGE_LABELS.items()},
    "线索": Stage.LEAD,
    "潜在客户": Stage.LEAD,
    "意向客户": Stage.INTENT,
    "赢单": Stage.WON,
    "已成交": Stage.WON,
    "丢单": Stage.LOST,
    "已流失": Stage.LOST,
}

GRADES = ("A", "B", "C")
ACCOUNT_ID = re.compile(r"^[A-Za-z0-9_.@\-]{1,64}$")
CONTACT_ID = re.compile(r"^[A-Za-z0-9_\-]{3,64}$")
PHONE = re.compile(r"^\+?[0-9()\-]{5,24}$")


def staff_columns(directory: Directory) -> Columns:
    """The staff columns, with one account column per platform that imports accounts."""
    return {**STAFF_COLUMNS, **{ACCOUNT + i.platform: i.account_headers for i in directory.importable()}}


# ---------------------------------------------------------------------------------------------------------------
# Records: the cleaned content of one or more rows with the same name


@dataclass
class ContactRow:
    name: str = ""
    phone: str = ""
    role: str = ""
    external_userid: str = ""


@dataclass
class Record:
    name: str
    rows: list[int]
    values: dict[str, Any] = field(default_factory=dict)  # field → cleaned value, only for non-blank cells
    lists: dict[str, list[str]] = field(default_factory=dict)  # aliases, tags
    custom: dict[str, Any] = field(default_factory=dict)
    contacts: list[ContactRow] = field(default_factory=list)

    @property
    def where(self) -> str:
        return "第" + "、".join(str(r) for r in self.rows) + "行"

    def merge(self, other: Record) -> None:
        self.rows.extend(other.rows)
        self.values.update(other.values)
        for key, items in other.lists.items():
            mine = self.lists.setdefault(key, [])
            mine.extend(i for i in items if i not in mine)
        self.custom.update(other.custom)
        self.contacts.extend(other.contacts)


@dataclass
class Report:
    kind: str
    created: int = 0
    updated: int = 0
    unchanged: int = 0
    merged: int = 0
    rejected: list[tuple[str, str]] = field(default_factory=list)  # (where, reason)
    ignored_columns: list[str] = field(default_factory=list)

    def reject(self, record: Record | int, *reasons: str) -> None:
        where = record.where if isinstance(record, Record) else f"第{record}行"
        self.rejected.append((where, "；".join(reasons)))

    def summary(self) -> str:
        what = {"staff": "员工 staff", "customers": "客户 customers"}[self.kind]
        lines = [
            f"导入完成 imported {what}: 新增 {self.created}，更新 {self.updated}，无变化 {self.unchanged}，"
            f"合并重复行 {self.merged}，拒绝 {len(self.rejected)}"
        ]
        if self.ignored_columns:
            lines.append("忽略的列 ignored columns: " + "、".join(self.ignored_columns))
        lines.extend(f"{where}: {reason}" for where, reason in sorted(self.rejected, key=_row_order))
        return "\n".join(lines)


def _row_order(item: tuple[str, str]) -> int:
    m = re.search(r"\d+", item[0])
    return int(m[0]) if m else 0


def _too_long(*checks: tuple[str, str, int]) -> list[str]:
    return [f"{label}超过 {limit} 个字 too long" for label, value, limit in checks if len(value) > limit]


def _merge_by_name(records: list[Record], report: Report) -> dict[str, Record]:
    by_name: dict[str, Record] = {}
    for record in records:
        if record.name in by_name:
            by_name[record.name].merge(record)
            report.merged += 1
        else:
            by_name[record.name] = record
    return by_name


def _staff_by_name(records: list[Record], report: Report) -> dict[str, Record]:
    """Rows naming the same staff member are merged, unless they disagree (another account, role or manager):
    then they are two people with one name, and since names are how people are addressed in chat, the later
    row is rejected and the admin asked to tell them apart."""
    by_name: dict[str, Record] = {}
    for record in records:
        first = by_name.get(record.name)
        if first is None:
            by_name[record.name] = record
            continue
        clashes = [k for k, v in record.values.items() if k in first.values and first.values[k] != v]
        if clashes:
            report.reject(
                record,
                f"姓名「{record.name}」与{first.where}重名但{_clash_labels(clashes)}不同；同名同事在聊天中无法区分，"
                f"请改用可区分的姓名（如「{record.name}2」） duplicate name",
            )
            continue
        first.merge(record)
        report.merged += 1
    return by_name


def _clash_labels(fields: list[str]) -> str:
    labels = {"role": "角色", "manager": "上级"}
    return "、".join(dict.fromkeys(labels.get(f, "账号") for f in fields))


def _described(values: dict[str, Any], staff_names: dict[int, str]) -> dict[str, Any]:
    """Field values for the audit log: JSON types, the owner by name."""
    out = {}
    for key, value in values.items():
        if key == "owner_id":
            out["owner"] = staff_names.get(value) if value is not None else None
        else:
            out[key] = _jsonable(value)
    return out


def _jsonable(value: Any) -> Any:
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, list):
        return list(value)
    if isinstance(value, dict):
        return dict(value)
    return value


# ---------------------------------------------------------------------------------------------------------------
# Staff


def _account_key(identity: Identity) -> str:
    """How an account is named in messages and the audit log: its English header (e.g. ``xxx_userid``)."""
    headers = identity.account_headers
    return headers[1] if len(headers) > 1 else identity.platform


def _staff_records(
    rows: list[tuple[int, list[Cell]]], table: Header, report: Report, identities: Sequence[Identity]
) -> list[Record]:
    records = []
    for number, row in rows:
        name = clean_text(cell_of(row, table, "name"))
        if not name:
            report.reject(number, "缺少姓名 missing name")
            continue
        record = Record(name, [number])
        errors = _too_long(("姓名", name, 64))
        for identity in identities:
            if value := clean_id(cell_of(row, table, ACCOUNT + identity.platform)):
                if ACCOUNT_ID.match(value):
                    record.values[ACCOUNT + identity.platform] = value
                else:
                    errors.append(f"{identity.account_label}「{value}」格式不正确 bad {_account_key(identity)}")
        if role_text := clean_text(cell_of(row, table, "role")):
            role = ROLES.get(unicodedata.normalize("NFKC", role_text).casefold())
            if role is None:
                errors.append(
                    f"角色「{role_text}」无效，应为 销售/主管/总监/管理员 (rep|manager|director|admin) bad role"
                )
            else:
                record.values["role"] = role
        if manager := clean_text(cell_of(row, table, "manager")):
            record.values["manager"] = manager
        if errors:
            report.reject(number, *errors)
        else:
            records.append(record)
    return records


def _manager_chain_loops(name: str, managers: dict[str, str | None]) -> bool:
    seen = {name}
    current = managers.get(name)
    while current is not None:
        if current in seen:
            return current == name
        seen.add(current)
        current = managers.get(current)
    return False


async def import_staff(app: web.Application, sheet: Sheet, progress: Progress) -> Report:
    """Staff lists are short and managers may be named further down: the whole file is checked, then written in
    one transaction."""
    identities = app[BOT].directory.importable()
    report = Report("staff", ignored_columns=list(sheet.extras))
    rows = await asyncio.to_thread(list, sheet.rows)
    records = _staff_by_name(_staff_records(rows, sheet, report, identities), report)
    try:
        await _write_staff(records, identities, report)
    except DATABASE_ERRORS as exc:  # the transaction rolled back: nothing was written
        raise _write_failed(progress, exc) from exc
    if rows:
        progress.rows = rows[-1][0]
        progress.advance(progress.rows)
    return report


async def _write_staff(records: dict[str, Record], identities: Sequence[Identity], report: Report) -> None:
    async with in_transaction() as conn:
        existing = {s.name: s for s in await Staff.all().using_db(conn)}
        names_by_id = {s.id: s.name for s in existing.values()}
        accounts: dict[tuple[int, str], str] = {  # (staff id, platform) → user id
            (int(str(sid)), str(p)): str(u)
            for sid, p, u in await StaffAccount.all().using_db(conn).values_list("staff_id", "platform", "user_id")
        }

        # Accounts are unique: not held by someone else in the database, nor by an earlier record of the file.
        holders: dict[tuple[str, str], str] = {
            (platform, user): names_by_id[sid] for (sid, platform), user in accounts.items() if sid in names_by_id
        }
        for record in list(records.values()):
            errors = []
            for identity in identities:
                value = record.values.get(ACCOUNT + identity.platform)
                holder = holders.get((identity.platform, value)) if value else None
                if holder is not None and holder != record.name:
                    key = _account_key(identity)
                    errors.append(f"{identity.account_label}「{value}」已属于「{holder}」 {key} already used")
            if errors:
                report.reject(record, *errors)
                del records[record.name]
                continue
            for identity in identities:
                if value := record.values.get(ACCOUNT + identity.platform):
                    holders[(identity.platform, value)] = record.name

        # Managers may be named by a later row: resolve against the whole file and the database, until stable.
        changed = True
        while changed:
            changed = False
            managers: dict[str, str | None] = {
                s.name: names_by_id.get(s.manager_id) if s.manager_id else None for s in existing.values()
            }
            managers.update({r.name: r.values.get("manager", managers.get(r.name)) for r in records.values()})
            looping = {name for name in records if _manager_chain_loops(name, managers)}
            for record in list(records.values()):
                manager = record.values.get("manager")
                reason = None
                if manager is None:
                    continue
                if manager == record.name:
                    reason = f"上级不能是本人「{manager}」 manager is self"
                elif record.name in looping:
                    reason = f"上级关系成环（{record.name} → {manager} → … → {record.name}） manager cycle"
                elif manager not in records and manager not in existing:
                    reason = f"上级「{manager}」不存在 unknown manager"
                if reason:
                    report.reject(record, reason)
                    del records[record.name]
                    changed = True

        await _save_staff(conn, records, existing, accounts, identities, report)


async def _save_staff(
    conn: BaseDBAsyncClient,
    records: dict[str, Record],
    existing: dict[str, Staff],
    accounts: dict[tuple[int, str], str],
    identities: Sequence[Identity],
    report: Report,
) -> None:
    """Write the checked staff records set-wise: new people, changed roles, accounts, managers, the audit rows."""
    at = datetime.now(UTC)
    names_by_id = {s.id: s.name for s in existing.values()}
    values_of = {
        name: {k: v for k, v in r.values.items() if k != "manager" and not k.startswith(ACCOUNT)}
        for name, r in records.items()
    }
    fresh = [r.name for r in records.values() if r.name not in existing]
    created = await bulk.insert_new(
        conn, "staff", "name", ["name", "role", "active", "created_at"],
        [[name, values_of[name].get("role", Role.REP), True, at] for name in fresh],
    )  # fmt: skip
    if len(created) < len(fresh):  # someone added one of these names meanwhile: it is updated instead
        late = [name for name in fresh if name not in created]
        existing = {**existing, **{s.name: s for s in await Staff.filter(name__in=late).using_db(conn)}}
    id_of = {**{name: s.id for name, s in existing.items()}, **created}

    roles: list[list[Any]] = []
    replaced: dict[str, list[int]] = {}  # platform → staff whose account there is replaced
    new_accounts: list[list[Any]] = []
    managers: list[list[Any]] = []
    audits: list[list[Any]] = []
    for record in records.values():
        sid = id_of[record.name]
        current = None if record.name in created else existing[record.name]
        values = values_of[record.name]
        if current is None:
            before, after = {}, {"name": record.name, **values}
        else:
            fields = [k for k, v in values.items() if getattr(current, k) != v]
            before, after = {k: getattr(current, k) for k in fields}, {k: values[k] for k in fields}
            if "role" in after:
                roles.append([after["role"], sid])
        for identity in identities:
            user = record.values.get(ACCOUNT + identity.platform)
            held = accounts.get((sid, identity.platform))
            if user is None or user == held:
                continue
            if current is not None:
                before[_account_key(identity)] = held
            after[_account_key(identity)] = user
            if held is not None:
                replaced.setdefault(identity.platform, []).append(sid)
            new_accounts.append([sid, identity.platform, user, at])
        manager = record.values.get("manager")
        manager_id = current.manager_id if current is not None else None
        if manager is not None and manager_id != id_of[manager]:
            before["manager"] = names_by_id.get(manager_id) if manager_id else None
            after["manager"] = manager
            managers.append([id_of[manager], sid])
        if current is None:
            audits.append(_audit_values("create", "staff", sid, None, after, at))
            report.created += 1
        elif after:
            audits.append(_audit_values("update", "staff", sid, before, after, at))
            report.updated += 1
        else:
            report.unchanged += 1
    await bulk.update(conn, "staff", ["role"], roles)
    for platform, staff_ids in replaced.items():
        await StaffAccount.filter(staff_id__in=staff_ids, platform=platform).using_db(conn).delete()
    await bulk.insert(conn, "staff_account", ["staff_id", "platform", "user_id", "created_at"], new_accounts)
    await bulk.update(conn, "staff", ["manager_id"], managers)
    await bulk.insert(conn, "audit_log", audit.COLUMNS, audits)


# ---------------------------------------------------------------------------------------------------------------
# Customers


def _customer_records(
    rows: list[tuple[int, list[Cell]]], table: Header, report: Report, tz: ZoneInfo, now: datetime, directory: Directory
) -> list[Record]:
    records = []
    for number, row in rows:
        name = clean_text(cell_of(row, table, "name"))
        if not name:
            report.reject(number, "缺少客户名称 missing name")
            continue
        record = Record(name, [number])
        errors = _too_long(("客户名称", name, 128))
        if industry := clean_text(cell_of(row, table, "industry")):
            record.values["industry"] = industry
        if owner := clean_text(cell_of(row, table, "owner")):
            record.values["owner"] = owner
        if grade_text := clean_text(cell_of(row, table, "grade")):
            grade = unicodedata.normalize("NFKC", grade_text).upper().removesuffix("级").removesuffix("类")
            if grade in GRADES:
                record.values["grade"] = grade
            else:
                errors.append(f"等级「{grade_text}」无效，应为 A/B/C bad grade")
        if stage_text := clean_text(cell_of(row, table, "stage")):
            stage = STAGES.get(unicodedata.normalize("NFKC", stage_text).casefold())
            if stage is None:
                labels = "/".join(STAGE_LABELS.values())
                errors.append(f"阶段「{stage_text}」无效，应为 {labels} 或 lead/intent/… bad stage")
            else:
                record.values["stage"] = stage
        aliases = [a for a in split_list(cell_of(row, table, "aliases")) if a != name]
        record.lists = {"aliases": aliases, "tags": split_list(cell_of(row, table, "tags"))}

        cell = cell_of(row, table, "contract_end")
        if clean_text(cell):
            try:
                record.values["contract_end"] = parse_date(cell)
            except ValueError:
                errors.append(f"合同到期「{clean_text(cell)}」不是有效日期（如 2026-12-31） bad date")
        for key, label in (("last_followup_at", "最近跟进"), ("next_followup_at", "下次跟进"), ("won_at", "成交日期")):
            cell = cell_of(row, table, key)
            if not clean_text(cell):
                continue
            try:
                moment = parse_datetime(cell, tz)
            except ValueError:
                errors.append(f"{label}「{clean_text(cell)}」不是有效时间（如 2026-03-01 14:30） bad datetime")
                continue
            if key in ("last_followup_at", "won_at") and moment > now:
                errors.append(f"{label}「{clean_text(cell)}」晚于现在 in the future")
            else:
                record.values[key] = moment

        contact = ContactRow(
            name=clean_text(cell_of(row, table, "contact")),
            role=clean_text(cell_of(row, table, "contact_role")),
        )
        if phone := clean_id(cell_of(row, table, "phone")):
            digits = sum(c.isdigit() for c in phone)
            if PHONE.match(phone) and 5 <= digits <= 20:
                contact.phone = phone
            else:
                errors.append(f"电话「{clean_text(cell_of(row, table, 'phone'))}」格式不正确 bad phone")
        if external := clean_id(cell_of(row, table, "external_userid")):
            if CONTACT_ID.match(external) and directory.is_any_external(external):
                contact.external_userid = external
            else:
                errors.append(f"外部联系人ID「{external}」{directory.external_hint()} bad external_userid")
        errors += _too_long(
            ("行业", record.values.get("industry", ""), 64),
            ("联系人", contact.name, 64),
            ("联系人角色", contact.role, 32),
        )
        if contact.name or contact.phone or contact.external_userid:
            record.contacts.append(contact)

        for header, i in table.extras.items():
            value = row[i] if i < len(row) else None
            if clean_text(value):
                record.custom[CUSTOM_FIELD_NAMES.get(header.strip().lower(), header)] = _custom_value(value)
        if errors:
            report.reject(number, *errors)
        else:
            records.append(record)
    return records


def _custom_value(cell: Cell) -> Any:
    if isinstance(cell, bool):
        return cell
    if isinstance(cell, int | float):
        return int(cell) if float(cell).is_integer() else cell
    if isinstance(cell, datetime | date | time):
        return clean_text(cell) if not isinstance(cell, datetime) or cell.time() == time(0) else cell.isoformat()
    return clean_text(cell)


async def _by_chunks(values: Sequence[Any], fetch: Any) -> list[Any]:
    out: list[Any] = []
    for start in range(0, len(values), CHUNK):
        out.extend(await fetch(list(values[start : start + CHUNK])))
    return out


@dataclass
class Progress:
    """What an import has committed so far, for the progress bar and for a failure's message."""

    rows: int = 0  # the last row number of the last chunk committed
    advance: Callable[[int], None] = lambda rows: None  # told the row number reached after each chunk


@dataclass
class _Customers:
    """What a customer import knows across its chunks: the staff owners are named by, and what earlier chunks
    wrote (names, so that a later row of the same customer counts as a merged row; external ids, so that a later
    row claiming one is reported against the row that brought it)."""

    staff_by_key: dict[str, int]
    staff_names: dict[int, str]
    written: set[str] = field(default_factory=set)
    claimed: dict[str, tuple[str, str]] = field(default_factory=dict)  # external id → (where, customer name)


@dataclass
class _StoredContact:
    id: int | None
    name: str
    phone: str
    role: str
    external_userid: str | None

    def value(self, key: str) -> str:
        return getattr(self, key) or ""


CUSTOMER_FIELDS = ["aliases", "industry", "grade", "stage", "owner_id", "tags", "custom_fields", "contract_end",
                   "last_followup_at", "next_followup_at", "won_at", "ladder_from"]  # fmt: skip
CONTACT_COLUMNS = ["id", "customer_id", "name", "phone", "title", "role", "external_userid", "created_at"]
CONTACT_FIELDS = ("name", "phone", "role", "external_userid")


async def _customer_run() -> _Customers:
    staff_by_key: dict[str, int] = {}
    names = {int(str(i)): str(n) for i, n in await Staff.all().values_list("id", "name")}
    # Owners are named by name or by any platform account; a name wins over an account that looks the same.
    for sid, user in await StaffAccount.all().order_by("-id").values_list("staff_id", "user_id"):
        if int(str(sid)) in names:
            staff_by_key[str(user)] = int(str(sid))
    staff_by_key.update({name: sid for sid, name in names.items()})
    return _Customers(staff_by_key, names)


async def import_customers(app: web.Application, sheet: Sheet, progress: Progress, chunk_rows: int) -> Report:
    """Read, check and write ``sheet`` a chunk of ``chunk_rows`` rows at a time, each chunk in one transaction;
    after each commit the customers of the chunk left without an owner go to the import hooks."""
    settings, directory = app[SETTINGS], app[BOT].directory
    now = app[CLOCK].now()
    report = Report("customers")
    run = await _customer_run()
    while rows := await asyncio.to_thread(_take, sheet.rows, chunk_rows):
        records = _merge_by_name(_customer_records(rows, sheet, report, settings.tz, now, directory), report)
        try:
            async with in_transaction() as conn:
                unowned = await _write_customers(conn, records, run, report, settings.rules.baseline_on_import, now)
        except DATABASE_ERRORS as exc:  # this chunk rolled back; the ones before it are committed
            raise _write_failed(progress, exc) from exc
        run.written.update(records)
        progress.rows = rows[-1][0]
        progress.advance(progress.rows)
        await _after_import(app[BOT], unowned)
    return report


def _take(rows: Iterator[tuple[int, list[Cell]]], count: int) -> list[tuple[int, list[Cell]]]:
    return list(islice(rows, count))


def _write_failed(progress: Progress, exc: Exception) -> ImportFailed:
    if not progress.rows:
        return ImportFailed(f"写入数据库失败，未导入任何数据 database error, nothing imported: {exc}")
    return ImportFailed(
        f"写入数据库失败：第{progress.rows}行及之前的已导入，之后的未导入；排除问题后重新运行同一命令即可，"
        f"已导入的不会重复 database error after row {progress.rows}, rerun to resume: {exc}"
    )


def _check_customers(records: dict[str, Record], run: _Customers, holder_of: dict[str, str], report: Report) -> None:
    """Reject the records naming an unknown owner or an external id another customer has; claim the rest's."""
    for record in list(records.values()):
        errors = []
        owner = record.values.get("owner")
        if owner is not None and owner not in run.staff_by_key:
            errors.append(f"负责人「{owner}」不存在 unknown owner")
        for contact in record.contacts:
            ext = contact.external_userid
            if not ext:
                continue
            claim = run.claimed.get(ext)
            holder = holder_of.get(ext)
            if claim is not None and claim[1] != record.name:
                errors.append(f"外部联系人ID「{ext}」与{claim[0]}的「{claim[1]}」重复 duplicate external_userid")
            elif holder is not None and holder != record.name:
                errors.append(f"外部联系人ID「{ext}」已属于客户「{holder}」 external_userid already used")
        if errors:
            report.reject(record, *errors)
            del records[record.name]
            continue
        for contact in record.contacts:
            if contact.external_userid:
                run.claimed.setdefault(contact.external_userid, (record.where, record.name))


async def _write_customers(
    conn: BaseDBAsyncClient,
    records: dict[str, Record],
    run: _Customers,
    report: Report,
    baseline: bool,
    now: datetime,
) -> list[int]:
    """Write one chunk's records set-wise in ``conn``'s transaction; the ids of its customers without an owner."""
    existing = {
        c.name: c for c in await _by_chunks(list(records), lambda chunk: Customer.filter(name__in=chunk).using_db(conn))
    }
    externals = sorted({c.external_userid for r in records.values() for c in r.contacts if c.external_userid})
    holders = await _by_chunks(
        externals,
        lambda chunk: (
            Contact.filter(external_userid__in=chunk).using_db(conn).values_list("external_userid", "customer__name")
        ),
    )
    _check_customers(records, run, {str(e): str(n) for e, n in holders}, report)

    at = datetime.now(UTC)  # when the rows are written, as the ORM stamps created_at and updated_at
    audits: list[list[Any]] = []
    planned: dict[str, dict[str, Any]] = {}  # name → the record's field values, as stored
    for record in records.values():
        values = dict(record.values)
        if "owner" in values:
            values["owner_id"] = run.staff_by_key[values.pop("owner")]
        stored = existing.get(record.name)
        if _won_without_date(values, stored):
            values["won_at"] = now
        if baseline and _before_baseline(values, stored, now):
            values["ladder_from"] = now
        planned[record.name] = values

    # Customers new to the database, in one set; a name someone else created meanwhile is updated instead.
    fresh = [r for r in records.values() if r.name not in existing]
    ids = await bulk.insert_new(
        conn, "customer", "name", ["name", *CUSTOMER_FIELDS, "created_at", "updated_at"],
        [[r.name, *_new_customer(planned[r.name], r).values(), at, at] for r in fresh],
    )  # fmt: skip
    created: dict[str, int] = {}
    for record in fresh:
        if record.name in ids:
            created[record.name] = ids[record.name]
            values = planned[record.name]
            after = {"name": record.name, **_described(values, run.staff_names)}
            after.update({k: v for k, v in record.lists.items() if v})
            if record.custom:
                after["custom_fields"] = record.custom
            audits.append(_audit_values("create", "customer", ids[record.name], None, after, at))
    if len(created) < len(fresh):
        late = [r.name for r in fresh if r.name not in created]
        existing.update({c.name: c for c in await Customer.filter(name__in=late).using_db(conn)})

    updates: list[list[Any]] = []
    changed: set[str] = set()
    followed: list[Customer] = []
    for name, customer in existing.items():
        if name not in records:
            continue
        before, after = _customer_changes(customer, planned[name], records[name])
        if before:
            for key, value in after.items():
                setattr(customer, key, value)
            updates.append([*(getattr(customer, f) for f in CUSTOMER_FIELDS), at, customer.id])
            described = (_described(before, run.staff_names), _described(after, run.staff_names))
            audits.append(_audit_values("update", "customer", customer.id, *described, at))
            changed.add(name)
            if "last_followup_at" in after:
                followed.append(customer)
    await bulk.update(conn, "customer", [*CUSTOMER_FIELDS, "updated_at"], updates)
    for customer in followed:  # a later last follow-up moves the customer's deals too
        await follow_ups_move_deals(customer.id, customer.last_followup_at, conn)

    # Contacts: each row matched to a stored contact of its customer (or one an earlier row of it added).
    customer_ids = {**{n: c.id for n, c in existing.items()}, **created}
    stored = await _by_chunks(
        [c.id for n, c in existing.items() if n in records],
        lambda chunk: (
            Contact.filter(customer_id__in=chunk).using_db(conn).values_list("id", "customer_id", *CONTACT_FIELDS)
        ),
    )
    contacts_of: dict[int, list[_StoredContact]] = {}
    for cid, customer_id, *fields in stored:
        contacts_of.setdefault(int(customer_id), []).append(_StoredContact(int(cid), *fields))
    new_contacts: list[tuple[int, str, _StoredContact]] = []
    contact_updates: list[list[Any]] = []
    for record in records.values():
        customer_id = customer_ids[record.name]
        mine = contacts_of.setdefault(customer_id, [])
        for row in record.contacts:
            cells = (row.name, row.phone, row.role, row.external_userid)
            given = {k: v for k, v in zip(CONTACT_FIELDS, cells, strict=True) if v}
            contact = _matching(mine, row)
            if contact is None:
                contact = _StoredContact(None, row.name, row.phone, row.role, row.external_userid or None)
                mine.append(contact)
                new_contacts.append((customer_id, record.name, contact))
                changed.add(record.name)
                continue
            after = {k: v for k, v in given.items() if contact.value(k) != v}
            if after and contact.id is not None:
                before = {k: getattr(contact, k) for k in after}
                for key, value in after.items():
                    setattr(contact, key, value)
                contact_updates.append([*(getattr(contact, f) for f in CONTACT_FIELDS), contact.id])
                after = {"customer": record.name, **after}
                audits.append(_audit_values("update", "contact", contact.id, before, after, at, customer_id))
                changed.add(record.name)
            elif after:  # a contact an earlier row of this file added: not written yet, so simply filled in
                for key, value in after.items():
                    setattr(contact, key, value)
    await bulk.update(conn, "contact", list(CONTACT_FIELDS), contact_updates)
    contact_ids = await bulk.reserve_ids(conn, "contact", len(new_contacts))
    contact_rows = []
    for cid, (customer_id, name, contact) in zip(contact_ids, new_contacts, strict=True):
        contact.id = cid
        contact_rows.append([cid, customer_id, contact.name, contact.phone, "", contact.role,
                             contact.external_userid, at])  # fmt: skip
        after = {"customer": name, **{k: contact.value(k) for k in CONTACT_FIELDS if contact.value(k)}}
        audits.append(_audit_values("create", "contact", cid, None, after, at, customer_id))
    await bulk.insert(conn, "contact", CONTACT_COLUMNS, contact_rows)
    await bulk.insert(conn, "audit_log", audit.COLUMNS, audits)

    for name in records:
        if name in run.written:  # written by an earlier chunk: a row merged into it
            report.merged += len(records[name].rows)
        elif name in created:
            report.created += 1
        elif name in changed:
            report.updated += 1
        else:
            report.unchanged += 1
    owners = {n: existing[n].owner_id if n in existing else planned[n].get("owner_id") for n in records}
    return [customer_ids[n] for n, owner in owners.items() if owner is None]


def _new_customer(values: dict[str, Any], record: Record) -> dict[str, Any]:
    """The stored fields of a customer created from ``record``, in ``CUSTOMER_FIELDS`` order."""
    defaults: dict[str, Any] = {"industry": "", "grade": "", "stage": Stage.LEAD, "owner_id": None}
    lists = {"aliases": record.lists["aliases"], "tags": record.lists["tags"], "custom_fields": record.custom}
    return {f: values.get(f, lists.get(f, defaults.get(f))) for f in CUSTOMER_FIELDS}


def _matching(stored: list[_StoredContact], row: ContactRow) -> _StoredContact | None:
    """The stored contact a row is about: by external id, then by name, then (a nameless one) by phone."""
    contact = next((c for c in stored if row.external_userid and c.external_userid == row.external_userid), None)
    contact = contact or next((c for c in stored if row.name and c.name == row.name), None)
    return contact or next((c for c in stored if row.phone and not c.name and c.phone == row.phone), None)


def _audit_values(
    action: str,
    entity: str,
    entity_id: int,
    before: dict[str, Any] | None,
    after: dict[str, Any],
    at: datetime,
    customer_id: int | None = None,
) -> list[Any]:
    return audit.values(
        action, entity, entity_id, before, after, actor=ACTOR, platform=AUDIT_PLATFORM, at=at, customer_id=customer_id
    )


async def _after_import(bot: Services, unowned: list[int]) -> None:
    """The registered import hooks (lead assignment) on the customers created without an owner, once committed."""
    if not unowned:
        return
    for hook in bot.import_hooks:
        try:
            await hook(bot, unowned)
        except Exception:  # the import is committed; a hook failing must not make it look failed
            log.exception("import hook %s failed on %d customers", getattr(hook, "__name__", hook), len(unowned))
    bot.outbox.wake()


def _won_without_date(values: dict[str, Any], stored: Customer | None) -> bool:
    """A row marks the customer won (成交) but gives no 成交日期 and none is stored: the deal dates from the
    import, so that the NPS survey and the return visit count from there rather than never happen."""
    return values.get("stage") == Stage.WON and "won_at" not in values and (stored is None or stored.won_at is None)


def _before_baseline(values: dict[str, Any], stored: Customer | None, now: datetime) -> bool:
    """Go-live (``[rules] baseline_on_import``): a customer last followed up before the import, with no baseline
    yet, has its follow-up ladder start at the import, so that old dates do not hand it over on the first pass.
    The first import sets it; a later import does not move it again."""
    if stored is not None and stored.ladder_from is not None:
        return False
    last = values.get("last_followup_at") or (stored.last_followup_at if stored is not None else None)
    return last is None or last < now


def _customer_changes(
    customer: Customer, values: dict[str, Any], record: Record
) -> tuple[dict[str, Any], dict[str, Any]]:
    """(before, after) of the fields this record changes; blank cells and older follow-ups change nothing."""
    after: dict[str, Any] = {}
    for key, value in values.items():
        current = getattr(customer, key)
        if key == "last_followup_at" and current is not None and value <= current:
            continue
        if current != value:
            after[key] = value
    for key in ("aliases", "tags"):
        current_list = list(getattr(customer, key) or [])
        extra = [v for v in record.lists[key] if v not in current_list and v != customer.name]
        if extra:
            after[key] = current_list + extra
    merged = {**(customer.custom_fields or {}), **record.custom}
    if merged != (customer.custom_fields or {}):
        after["custom_fields"] = merged
    before = {k: getattr(customer, k) for k in after}
    return before, after


# ---------------------------------------------------------------------------------------------------------------
# Entry point


async def run_import(
    app: web.Application, kind: str, path: str | os.PathLike[str], chunk_rows: int | None = None
) -> str:
    """Import ``path`` as ``kind`` (staff or customers), customers ``chunk_rows`` rows per transaction; the report
    for the admin. A progress bar on a terminal."""
    from tqdm import tqdm  # only here: the other commands start faster without it

    file = Path(path)
    if kind == "staff":
        columns, required = staff_columns(app[BOT].directory), "姓名/name"
    elif kind == "customers":
        columns, required = CUSTOMER_COLUMNS, "客户名称/name"
    else:
        raise ImportFailed(f"不支持导入「{kind}」 unknown kind (staff, customers)")
    with ExitStack() as stack:
        sheet = await asyncio.to_thread(stack.enter_context, open_sheet(file, columns, required))
        what = "导入员工" if kind == "staff" else "导入客户"
        bar = stack.enter_context(tqdm(total=sheet.total, unit="行", desc=what, disable=not sys.stderr.isatty()))
        progress = Progress(advance=lambda rows: bar.update(rows - bar.n))
        if kind == "staff":
            report = await import_staff(app, sheet, progress)
        else:
            report = await import_customers(app, sheet, progress, chunk_rows or CHUNK_ROWS)
    return report.summary()
