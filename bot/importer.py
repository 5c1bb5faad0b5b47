"""``crmbot import staff|customers FILE``: staff and customers from the spreadsheets admins already have (.csv or
.xlsx, read by ``bot.spreadsheet``).

A file is read whole, cleaned and checked before anything is written, then written in ONE transaction: either
every accepted row lands or (on a fatal error) nothing does. Headers may be Chinese or English; unknown customer
columns are kept as custom fields; staff accounts come from one column per platform (the headers each platform's
identity names, e.g. 企业微信账号).

What an import never does is lose data that is already stored:

* a blank cell keeps the stored value; aliases and tags are added to the stored ones; custom fields are merged;
* ``last_followup_at`` only moves forward (an old spreadsheet must not make a customer look neglected);
* rows naming the same staff member or customer are MERGED into one record (later non-blank cells win, lists and
  custom fields are combined, every row's contact is kept), because exports often list one row per contact;
* a name already in the database updates that record instead of creating a duplicate;
* two staff rows with one name but another account, role or manager are two people: the later row is rejected
  (names are how colleagues are addressed in chat), identical or complementary rows are merged.

Dates the old system never had are set so that the timers work: a customer marked won (成交) without a 成交日期
(won_at) column value is won as of the import, so its NPS survey and return visit count from there; with
``[rules] baseline_on_import`` the first import also starts every customer's follow-up ladder at the import
(``ladder_from``), so that a go-live with old 最近跟进 dates does not hand everyone over on the first pass.

Once a customer import has committed, the customers it created without an owner go to the registered import
hooks (``Services.import_hooks``: the lead rules assign them); a region column (region, 区域) is kept as the custom
field 地区.

A row that cannot be used is rejected with its row number and the reason, and the rest of the file is imported.
``ImportFailed`` is for files that cannot be used at all (unreadable, unknown kind, no name column) and for a
database failure while writing; either way the transaction leaves nothing behind.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import sqlite3
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, time
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import asyncpg
from aiohttp import web
from tortoise.exceptions import BaseORMException
from tortoise.transactions import in_transaction

from bot import audit
from bot.context import Services
from bot.identity import Directory, Identity
from bot.keys import BOT, CLOCK, SETTINGS
from bot.spreadsheet import (
    Cell,
    Columns,
    ImportFailed,
    Table,
    cell_of,
    clean_id,
    clean_text,
    parse_date,
    parse_datetime,
    read_table,
    split_list,
)
from models.audit import AuditLog
from models.customers import STAGE_LABELS, Contact, Customer, Stage
from models.opportunities import follow_ups_move_deals
from models.staff import Role, Staff, StaffAccount

ACTOR = "import"
AUDIT_PLATFORM = "cli"
CHUNK = 500  # ids per IN (...) query

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


def _audit(
    action: str,
    entity: str,
    entity_id: object,
    before: dict[str, Any] | None,
    after: dict[str, Any],
    customer_id: int | None = None,
) -> AuditLog:
    return audit.entry(
        action, entity, entity_id, before, after, actor=ACTOR, platform=AUDIT_PLATFORM, customer_id=customer_id
    )


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


def _staff_records(table: Table, report: Report, identities: Sequence[Identity]) -> list[Record]:
    records = []
    for number, row in table.rows:
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


async def import_staff(app: web.Application, table: Table) -> Report:
    identities = app[BOT].directory.importable()
    report = Report("staff", ignored_columns=list(table.extras))
    records = _staff_by_name(_staff_records(table, report, identities), report)

    async with in_transaction():
        existing = {s.name: s for s in await Staff.all()}
        names_by_id = {s.id: s.name for s in existing.values()}
        accounts: dict[tuple[int, str], str] = {  # (staff id, platform) → user id
            (int(str(sid)), str(p)): str(u)
            for sid, p, u in await StaffAccount.all().values_list("staff_id", "platform", "user_id")
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

        audits: list[AuditLog] = []
        saved: dict[str, Staff] = dict(existing)
        created: set[str] = set()
        changes: dict[str, tuple[dict[str, Any], dict[str, Any]]] = {}  # name → (before, after)
        for record in records.values():
            values: dict[str, Any] = {
                k: v for k, v in record.values.items() if k != "manager" and not k.startswith(ACCOUNT)
            }
            current = existing.get(record.name)
            if current is None:
                staff = await Staff.create(name=record.name, **values)
                saved[staff.name] = staff
                created.add(staff.name)
                before, after = {}, {"name": staff.name, **values}
            else:
                staff = current
                fields = [k for k, v in values.items() if getattr(current, k) != v]
                before, after = {k: getattr(current, k) for k in fields}, {k: values[k] for k in fields}
                if fields:
                    for key in fields:
                        setattr(current, key, values[key])
                    await current.save(update_fields=fields)
            for identity in identities:
                user = record.values.get(ACCOUNT + identity.platform)
                held = accounts.get((staff.id, identity.platform))
                if user is None or user == held:
                    continue
                if current is not None:
                    before[_account_key(identity)] = held
                after[_account_key(identity)] = user
                await StaffAccount.filter(staff_id=staff.id, platform=identity.platform).delete()
                await StaffAccount.create(staff_id=staff.id, platform=identity.platform, user_id=user)
            changes[record.name] = (before, after)

        for record in records.values():
            staff = saved[record.name]
            before, after = changes[record.name]
            manager = record.values.get("manager")
            if manager is not None and staff.manager_id != saved[manager].id:
                before["manager"] = names_by_id.get(staff.manager_id) if staff.manager_id else None
                after["manager"] = manager
                staff.manager_id = saved[manager].id
                await staff.save(update_fields=["manager_id"])
            if record.name in created:
                audits.append(_audit("create", "staff", staff.id, None, after))
                report.created += 1
            elif after:
                audits.append(_audit("update", "staff", staff.id, before, after))
                report.updated += 1
            else:
                report.unchanged += 1
        if audits:
            await AuditLog.bulk_create(audits)
    return report


# ---------------------------------------------------------------------------------------------------------------
# Customers


def _customer_records(table: Table, report: Report, tz: ZoneInfo, now: datetime, directory: Directory) -> list[Record]:
    records = []
    for number, row in table.rows:
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


async def import_customers(app: web.Application, table: Table) -> Report:
    settings = app[SETTINGS]
    now = app[CLOCK].now()
    report = Report("customers")
    unowned: list[int] = []
    records = _merge_by_name(_customer_records(table, report, settings.tz, now, app[BOT].directory), report)

    async with in_transaction():
        staff_by_key: dict[str, Staff] = {}
        all_staff = await Staff.all()
        staff_names = {s.id: s.name for s in all_staff}
        by_id = {s.id: s for s in all_staff}
        # Owners are named by name or by any platform account; a name wins over an account that looks the same.
        for sid, user in await StaffAccount.all().order_by("-id").values_list("staff_id", "user_id"):
            if int(str(sid)) in by_id:
                staff_by_key[str(user)] = by_id[int(str(sid))]
        for staff in all_staff:
            staff_by_key[staff.name] = staff
        names = list(records)
        existing = {
            c.name: c for c in await _by_chunks(names, lambda chunk: Customer.filter(name__in=chunk).order_by("id"))
        }
        externals = sorted({c.external_userid for r in records.values() for c in r.contacts if c.external_userid})
        owner_of_external = {
            c.external_userid: c
            for c in await _by_chunks(
                externals, lambda chunk: Contact.filter(external_userid__in=chunk).prefetch_related("customer")
            )
        }

        claimed: dict[str, Record] = {}
        for record in list(records.values()):
            errors = []
            owner = record.values.get("owner")
            if owner is not None and owner not in staff_by_key:
                errors.append(f"负责人「{owner}」不存在 unknown owner")
            for contact in record.contacts:
                ext = contact.external_userid
                if not ext:
                    continue
                holder = owner_of_external.get(ext)
                if holder is not None and holder.customer.name != record.name:
                    errors.append(
                        f"外部联系人ID「{ext}」已属于客户「{holder.customer.name}」 external_userid already used"
                    )
                elif ext in claimed and claimed[ext] is not record:
                    other = claimed[ext]
                    errors.append(
                        f"外部联系人ID「{ext}」与{other.where}的「{other.name}」重复 duplicate external_userid"
                    )
            if errors:
                report.reject(record, *errors)
                del records[record.name]
                continue
            for contact in record.contacts:
                if contact.external_userid:
                    claimed[contact.external_userid] = record

        existing_ids = [c.id for c in existing.values() if c.name in records]
        contacts_of: dict[int, list[Contact]] = {}
        for contact in await _by_chunks(existing_ids, lambda chunk: Contact.filter(customer_id__in=chunk)):
            contacts_of.setdefault(contact.customer_id, []).append(contact)

        audits: list[AuditLog] = []
        for record in records.values():
            values = dict(record.values)
            if "owner" in values:
                values["owner_id"] = staff_by_key[values.pop("owner")].id
            customer = existing.get(record.name)
            if _won_without_date(values, customer):
                values["won_at"] = now
            if settings.rules.baseline_on_import and _before_baseline(values, customer, now):
                values["ladder_from"] = now
            if customer is None:
                customer = await Customer.create(
                    name=record.name,
                    aliases=record.lists["aliases"],
                    tags=record.lists["tags"],
                    custom_fields=record.custom,
                    **values,
                )
                after = {"name": customer.name, **_described(values, staff_names)}
                after.update({k: v for k, v in record.lists.items() if v})
                if record.custom:
                    after["custom_fields"] = record.custom
                audits.append(_audit("create", "customer", customer.id, None, after))
                report.created += 1
                if customer.owner_id is None:
                    unowned.append(customer.id)
                await _save_contacts(customer, [], record.contacts, audits)
                continue
            before, after = _customer_changes(customer, values, record)
            if before:
                for key, value in after.items():
                    setattr(customer, key, value)
                await customer.save(update_fields=[*after, "updated_at"])
                if "last_followup_at" in after:
                    await follow_ups_move_deals(customer.id, customer.last_followup_at, None)
                audits.append(
                    _audit(
                        "update",
                        "customer",
                        customer.id,
                        _described(before, staff_names),
                        _described(after, staff_names),
                    )
                )
            changed_contacts = await _save_contacts(customer, contacts_of.get(customer.id, []), record.contacts, audits)
            if before or changed_contacts:
                report.updated += 1
            else:
                report.unchanged += 1
        if audits:
            await AuditLog.bulk_create(audits)
    await _after_import(app[BOT], unowned)
    return report


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


async def _save_contacts(
    customer: Customer, stored: list[Contact], rows: list[ContactRow], audits: list[AuditLog]
) -> int:
    """Match each row to a stored contact (external id, then name, then phone) and fill in what it adds."""
    changed = 0
    for row in rows:
        contact = next((c for c in stored if row.external_userid and c.external_userid == row.external_userid), None)
        contact = contact or next((c for c in stored if row.name and c.name == row.name), None)
        contact = contact or next((c for c in stored if row.phone and not c.name and c.phone == row.phone), None)
        given = {"name": row.name, "phone": row.phone, "role": row.role, "external_userid": row.external_userid}
        values: dict[str, Any] = {k: v for k, v in given.items() if v}
        if contact is None:
            contact = await Contact.create(customer_id=customer.id, **values)
            stored.append(contact)
            after = {"customer": customer.name, **values}
            audits.append(_audit("create", "contact", contact.id, None, after, customer_id=customer.id))
            changed += 1
            continue
        after = {k: v for k, v in values.items() if getattr(contact, k) != v}
        if after:
            before = {k: getattr(contact, k) for k in after}
            for key, value in after.items():
                setattr(contact, key, value)
            await contact.save(update_fields=list(after))
            after = {"customer": customer.name, **after}
            audits.append(_audit("update", "contact", contact.id, before, after, customer_id=customer.id))
            changed += 1
    return changed


# ---------------------------------------------------------------------------------------------------------------
# Entry point


async def run_import(app: web.Application, kind: str, path: str | os.PathLike[str]) -> str:
    """Import ``path`` as ``kind`` (staff or customers); the report for the admin."""
    file = Path(path)
    if kind == "staff":
        columns, required = staff_columns(app[BOT].directory), "姓名/name"
    elif kind == "customers":
        columns, required = CUSTOMER_COLUMNS, "客户名称/name"
    else:
        raise ImportFailed(f"不支持导入「{kind}」 unknown kind (staff, customers)")
    table = await asyncio.to_thread(read_table, file, columns, required)
    try:
        report = await (import_staff(app, table) if kind == "staff" else import_customers(app, table))
    except DATABASE_ERRORS as exc:  # the transaction rolled back: nothing was written
        raise ImportFailed(f"写入数据库失败，未导入任何数据 database error, nothing imported: {exc}") from exc
    await app[BOT].understanding.refresh()
    return report.summary()
