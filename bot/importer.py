"""``crmbot import``: staff and customers from the spreadsheets admins already have (.csv or .xlsx).

A file is read whole, cleaned and checked before anything is written, then written in ONE transaction: either
every accepted row lands or (on a fatal error) nothing does. Headers may be Chinese or English; unknown customer
columns are kept as custom fields. Cleaning: whitespace (full-width too) is trimmed, ids and phone numbers are
normalized to half-width, blank rows are skipped.

What an import never does is lose data that is already stored:

* a blank cell keeps the stored value; aliases and tags are added to the stored ones; custom fields are merged;
* ``last_followup_at`` only moves forward (an old spreadsheet must not make a customer look neglected);
* rows naming the same staff member or customer are MERGED into one record (later non-blank cells win, lists and
  custom fields are combined, every row's contact is kept), because exports often list one row per contact;
* a name already in the database updates that record instead of creating a duplicate.

A row that cannot be used is rejected with its row number and the reason, and the rest of the file is imported.
``ImportFailed`` is for files that cannot be used at all (unreadable, unknown kind, no name column) and for a
database failure while writing; either way the transaction leaves nothing behind.
"""

from __future__ import annotations

import asyncio
import codecs
import csv
import io
import os
import re
import sqlite3
import unicodedata
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import asyncpg
from aiohttp import web
from tortoise.exceptions import BaseORMException
from tortoise.transactions import in_transaction

from bot.app import BOT, CLOCK, SETTINGS
from models.audit import AuditLog
from models.customers import STAGE_LABELS, Contact, Customer, Stage
from models.staff import Role, Staff

ACTOR = "import"
AUDIT_PLATFORM = "cli"
HEADER_SEARCH_ROWS = 10  # a title row or two above the header is common in templates
CHUNK = 500  # ids per IN (...) query

Cell = str | int | float | bool | datetime | date | time | None
# Tortoise wraps most driver errors; a few (e.g. a PostgreSQL trigger's RAISE) arrive as the driver's own.
DATABASE_ERRORS: tuple[type[Exception], ...] = (BaseORMException, sqlite3.Error, asyncpg.PostgresError)


class ImportFailed(Exception):
    """The file cannot be imported at all; nothing was written. The message is one line for the admin."""


# ---------------------------------------------------------------------------------------------------------------
# Columns


STAFF_COLUMNS: dict[str, tuple[str, ...]] = {
    "name": ("姓名", "name", "员工姓名", "名字"),
    "wecom_userid": ("企业微信账号", "wecom_userid", "企业微信", "企微账号", "企业微信userid", "wecom"),
    "dingtalk_userid": ("钉钉账号", "dingtalk_userid", "钉钉", "钉钉userid", "dingtalk"),
    "role": ("角色", "role"),
    "manager": ("上级", "manager", "直属上级", "汇报对象"),
}

CUSTOMER_COLUMNS: dict[str, tuple[str, ...]] = {
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

COLUMN_LABELS = {"staff": "姓名/name", "customers": "客户名称/name"}

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
LIST_SEPARATORS = re.compile(r"[;；、,，|]")
ACCOUNT_ID = re.compile(r"^[A-Za-z0-9_.@\-]{1,64}$")
EXTERNAL_ID = re.compile(r"^w[mo][A-Za-z0-9_\-]{1,62}$")
PHONE = re.compile(r"^\+?[0-9()\-]{5,24}$")
ZERO_WIDTH = dict.fromkeys(map(ord, "\u200b\u200c\u200d\u2060\ufeff"))


def _header_key(header: str) -> str:
    key = unicodedata.normalize("NFKC", header).translate(ZERO_WIDTH).casefold()
    return re.sub(r"[\s*_\-]+", "", key)


def _column_index(columns: dict[str, tuple[str, ...]]) -> dict[str, str]:
    return {_header_key(label): canonical for canonical, labels in columns.items() for label in labels}


@dataclass
class Table:
    """A sheet: which column holds which field, unknown columns by header, and the data rows by row number."""

    fields: dict[str, int]
    extras: dict[str, int]
    rows: list[tuple[int, list[Cell]]]


def _map_header(row: Sequence[Cell], index: dict[str, str]) -> tuple[dict[str, int], dict[str, int]]:
    fields: dict[str, int] = {}
    extras: dict[str, int] = {}
    for i, cell in enumerate(row):
        header = clean_text(cell)
        if not header:
            continue
        key = _header_key(header)
        # "合同到期(YYYY-MM-DD)": a hint in brackets after a known header
        canonical = index.get(key) or index.get(re.sub(r"[(\[].*[)\]]$", "", key))
        if canonical is None:
            extras.setdefault(header, i)
        elif canonical in fields:
            raise ImportFailed(f"列「{header}」重复 duplicate column {canonical!r}")
        else:
            fields[canonical] = i
    return fields, extras


def _table(rows: Iterable[tuple[int, Sequence[Cell]]], index: dict[str, str]) -> Table | None:
    """The table under the first row (of the first few non-blank ones) that has the name column, or None."""
    it = iter(rows)
    seen = 0
    for _, row in it:
        if _blank(row):
            continue
        fields, extras = _map_header(row, index)
        if "name" in fields:
            data = [(n, list(r)) for n, r in it if not _blank(r)]
            return Table(fields, extras, data)
        seen += 1
        if seen >= HEADER_SEARCH_ROWS:
            break
    return None


def _blank(row: Sequence[Cell]) -> bool:
    return all(clean_text(c) == "" for c in row)


# ---------------------------------------------------------------------------------------------------------------
# Reading files


def read_table(path: Path, kind: str) -> Table:
    columns = STAFF_COLUMNS if kind == "staff" else CUSTOMER_COLUMNS
    index = _column_index(columns)
    if not path.is_file():
        raise ImportFailed(f"文件不存在 file not found: {path}")
    suffix = path.suffix.lower()
    if suffix in (".csv", ".txt", ".tsv"):
        table = _table(_csv_rows(path), index)
    elif suffix in (".xlsx", ".xlsm"):
        table = _xlsx_table(path, index)
    elif suffix == ".xls":
        raise ImportFailed(f"{path.name}: 不支持旧版 .xls，请在 Excel 中另存为 .xlsx 或 .csv (.xls is not supported)")
    else:
        raise ImportFailed(f"{path.name}: 只支持 .csv 和 .xlsx 文件 (expected .csv or .xlsx)")
    if table is None:
        raise ImportFailed(f"{path.name}: 缺少必填列「{COLUMN_LABELS[kind]}」 missing required column")
    return table


def _decode(data: bytes, name: str) -> str:
    if data.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):  # Excel's "Unicode text"
        return data.decode("utf-16")
    for encoding in ("utf-8-sig", "gb18030"):  # Excel in China saves CSV as GBK
        try:
            return data.decode(encoding)
        except UnicodeDecodeError:
            continue
    raise ImportFailed(f"{name}: 无法识别文件编码，请另存为 UTF-8 CSV (unknown text encoding)")


def _csv_rows(path: Path) -> Iterator[tuple[int, Sequence[Cell]]]:
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ImportFailed(f"{path.name}: 无法读取文件 cannot read: {exc.strerror}") from exc
    if b"\x00" in data[:4096] and not data.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        raise ImportFailed(f"{path.name}: 不是文本 CSV 文件 (binary data)")
    text = _decode(data, path.name)
    first = text.split("\n", 1)[0]
    delimiter = "\t" if first.count("\t") > first.count(",") else ","
    try:
        records = list(csv.reader(io.StringIO(text, newline=""), delimiter=delimiter))
    except csv.Error as exc:
        raise ImportFailed(f"{path.name}: CSV 格式错误 malformed CSV: {exc}") from exc
    # Row numbers are records, which is what Excel shows when the CSV is opened there.
    return iter([(n, list(r)) for n, r in enumerate(records, start=1)])


def _xlsx_table(path: Path, index: dict[str, str]) -> Table | None:
    import openpyxl

    try:
        workbook = openpyxl.load_workbook(path, read_only=True, data_only=True)
    except Exception as exc:  # zipfile, XML and openpyxl errors all mean the same to the admin
        raise ImportFailed(f"{path.name}: 无法读取 Excel 文件 unreadable xlsx ({type(exc).__name__})") from exc
    try:
        for sheet in workbook.worksheets:  # the first sheet that has the header (templates put 说明 first)
            rows = ((n, list(r)) for n, r in enumerate(sheet.iter_rows(values_only=True), start=1))
            table = _table(rows, index)
            if table is not None:
                return table
        return None
    except ImportFailed:
        raise
    except Exception as exc:
        raise ImportFailed(f"{path.name}: 无法读取 Excel 文件 unreadable xlsx ({type(exc).__name__})") from exc
    finally:
        workbook.close()


# ---------------------------------------------------------------------------------------------------------------
# Cleaning cells


def clean_text(cell: Cell) -> str:
    """A cell as trimmed text: whitespace (full-width too) and zero-width marks removed, runs of spaces single."""
    if cell is None:
        return ""
    if isinstance(cell, float) and cell.is_integer():
        cell = int(cell)
    if isinstance(cell, datetime) and cell.time() == time(0):
        cell = cell.date()
    return " ".join(str(cell).translate(ZERO_WIDTH).split())


def clean_id(cell: Cell) -> str:
    """Ids and phone numbers: half-width (NFKC), no whitespace at all."""
    return "".join(unicodedata.normalize("NFKC", clean_text(cell)).split())


def split_list(cell: Cell) -> list[str]:
    out: list[str] = []
    for part in LIST_SEPARATORS.split(clean_text(cell)):
        part = part.strip()
        if part and part not in out:
            out.append(part)
    return out


def _excel_serial(value: float) -> datetime | None:
    if 1 <= value < 2958466:  # Excel's serial day numbers (1900 date system)
        return datetime(1899, 12, 30) + timedelta(days=value)
    return None


_DATE = re.compile(r"^(\d{4})\s*[-/.年]\s*(\d{1,2})\s*[-/.月]\s*(\d{1,2})\s*日?$")
_DATETIME = re.compile(
    r"^(\d{4})\s*[-/.年]\s*(\d{1,2})\s*[-/.月]\s*(\d{1,2})\s*日?(?:[\sT]*(\d{1,2})\s*[:时点]\s*(\d{1,2})"
    r"(?:\s*[:分]\s*(\d{1,2})(?:\.\d+)?\s*秒?)?\s*分?)?$"
)


def parse_date(cell: Cell) -> date:
    """2026-12-31, 2026/12/31, 2026.12.31, 2026年12月31日, 20261231, or an Excel date cell; ValueError else."""
    if isinstance(cell, datetime):
        return cell.date()
    if isinstance(cell, date):
        return cell
    if isinstance(cell, int | float) and not isinstance(cell, bool) and (moment := _excel_serial(float(cell))):
        return moment.date()
    text = unicodedata.normalize("NFKC", clean_text(cell))
    if m := _DATE.match(text):
        return date(int(m[1]), int(m[2]), int(m[3]))
    if re.fullmatch(r"\d{8}", text):
        return date(int(text[:4]), int(text[4:6]), int(text[6:]))
    moment = parse_datetime(cell, ZoneInfo("UTC"))  # "2026-12-31 00:00" is a date too
    return moment.date()


def parse_datetime(cell: Cell, tz: ZoneInfo) -> datetime:
    """A moment; without a zone it is local time in ``tz``; a bare date is local midnight. ValueError else."""
    moment: datetime
    if isinstance(cell, datetime):
        moment = cell
    elif isinstance(cell, date):
        moment = datetime.combine(cell, time(0))
    elif isinstance(cell, int | float) and not isinstance(cell, bool) and _excel_serial(float(cell)):
        moment = _excel_serial(float(cell)) or datetime.min
    else:
        text = unicodedata.normalize("NFKC", clean_text(cell))
        if m := _DATETIME.match(text):
            moment = datetime(int(m[1]), int(m[2]), int(m[3]), int(m[4] or 0), int(m[5] or 0), int(m[6] or 0))
        else:
            moment = datetime.fromisoformat(text)  # ValueError for anything else
    return moment if moment.tzinfo else moment.replace(tzinfo=tz)


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


def _cell(row: list[Cell], table: Table, key: str) -> Cell:
    i = table.fields.get(key)
    return row[i] if i is not None and i < len(row) else None


def _merge_by_name(records: list[Record], report: Report) -> dict[str, Record]:
    by_name: dict[str, Record] = {}
    for record in records:
        if record.name in by_name:
            by_name[record.name].merge(record)
            report.merged += 1
        else:
            by_name[record.name] = record
    return by_name


def _audit(
    action: str, entity: str, entity_id: object, before: dict[str, Any] | None, after: dict[str, Any]
) -> AuditLog:
    return AuditLog(
        actor_id=None,
        actor_name=ACTOR,
        action=action,
        entity=entity,
        entity_id=str(entity_id),
        before=before,
        after=after,
        platform=AUDIT_PLATFORM,
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


def _staff_records(table: Table, report: Report) -> list[Record]:
    records = []
    for number, row in table.rows:
        name = clean_text(_cell(row, table, "name"))
        if not name:
            report.reject(number, "缺少姓名 missing name")
            continue
        record = Record(name, [number])
        errors = _too_long(("姓名", name, 64))
        for key, label in (("wecom_userid", "企业微信账号"), ("dingtalk_userid", "钉钉账号")):
            if value := clean_id(_cell(row, table, key)):
                if ACCOUNT_ID.match(value):
                    record.values[key] = value
                else:
                    errors.append(f"{label}「{value}」格式不正确 bad {key}")
        if role_text := clean_text(_cell(row, table, "role")):
            role = ROLES.get(unicodedata.normalize("NFKC", role_text).casefold())
            if role is None:
                errors.append(
                    f"角色「{role_text}」无效，应为 销售/主管/总监/管理员 (rep|manager|director|admin) bad role"
                )
            else:
                record.values["role"] = role
        if manager := clean_text(_cell(row, table, "manager")):
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
    report = Report("staff", ignored_columns=list(table.extras))
    records = _merge_by_name(_staff_records(table, report), report)

    async with in_transaction():
        existing = {s.name: s for s in await Staff.all()}
        names_by_id = {s.id: s.name for s in existing.values()}

        # Accounts are unique: not held by someone else in the database, nor by an earlier record of the file.
        holders: dict[tuple[str, str], str] = {}
        for staff in existing.values():
            for key in ("wecom_userid", "dingtalk_userid"):
                if value := getattr(staff, key):
                    holders[(key, value)] = staff.name
        for record in list(records.values()):
            errors = []
            for key, label in (("wecom_userid", "企业微信账号"), ("dingtalk_userid", "钉钉账号")):
                value = record.values.get(key)
                holder = holders.get((key, value)) if value else None
                if holder is not None and holder != record.name:
                    errors.append(f"{label}「{value}」已属于「{holder}」 {key} already used")
            if errors:
                report.reject(record, *errors)
                del records[record.name]
                continue
            for key in ("wecom_userid", "dingtalk_userid"):
                if value := record.values.get(key):
                    holders[(key, value)] = record.name

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
            values: dict[str, Any] = {k: v for k, v in record.values.items() if k != "manager"}
            current = existing.get(record.name)
            if current is None:
                new = await Staff.create(name=record.name, **values)
                saved[new.name] = new
                created.add(new.name)
                changes[new.name] = ({}, {"name": new.name, **values})
                continue
            fields = [k for k, v in values.items() if getattr(current, k) != v]
            changes[record.name] = ({k: getattr(current, k) for k in fields}, {k: values[k] for k in fields})
            if fields:
                for key in fields:
                    setattr(current, key, values[key])
                await current.save(update_fields=fields)

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


def _customer_records(table: Table, report: Report, tz: ZoneInfo, now: datetime) -> list[Record]:
    records = []
    for number, row in table.rows:
        name = clean_text(_cell(row, table, "name"))
        if not name:
            report.reject(number, "缺少客户名称 missing name")
            continue
        record = Record(name, [number])
        errors = _too_long(("客户名称", name, 128))
        if industry := clean_text(_cell(row, table, "industry")):
            record.values["industry"] = industry
        if owner := clean_text(_cell(row, table, "owner")):
            record.values["owner"] = owner
        if grade_text := clean_text(_cell(row, table, "grade")):
            grade = unicodedata.normalize("NFKC", grade_text).upper().removesuffix("级").removesuffix("类")
            if grade in GRADES:
                record.values["grade"] = grade
            else:
                errors.append(f"等级「{grade_text}」无效，应为 A/B/C bad grade")
        if stage_text := clean_text(_cell(row, table, "stage")):
            stage = STAGES.get(unicodedata.normalize("NFKC", stage_text).casefold())
            if stage is None:
                labels = "/".join(STAGE_LABELS.values())
                errors.append(f"阶段「{stage_text}」无效，应为 {labels} 或 lead/intent/… bad stage")
            else:
                record.values["stage"] = stage
        aliases = [a for a in split_list(_cell(row, table, "aliases")) if a != name]
        record.lists = {"aliases": aliases, "tags": split_list(_cell(row, table, "tags"))}

        cell = _cell(row, table, "contract_end")
        if clean_text(cell):
            try:
                record.values["contract_end"] = parse_date(cell)
            except ValueError:
                errors.append(f"合同到期「{clean_text(cell)}」不是有效日期（如 2026-12-31） bad date")
        for key, label in (("last_followup_at", "最近跟进"), ("next_followup_at", "下次跟进"), ("won_at", "成交日期")):
            cell = _cell(row, table, key)
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
            name=clean_text(_cell(row, table, "contact")),
            role=clean_text(_cell(row, table, "contact_role")),
        )
        if phone := clean_id(_cell(row, table, "phone")):
            digits = sum(c.isdigit() for c in phone)
            if PHONE.match(phone) and 5 <= digits <= 20:
                contact.phone = phone
            else:
                errors.append(f"电话「{clean_text(_cell(row, table, 'phone'))}」格式不正确 bad phone")
        if external := clean_id(_cell(row, table, "external_userid")):
            if EXTERNAL_ID.match(external):
                contact.external_userid = external
            else:
                errors.append(f"外部联系人ID「{external}」应以 wm 或 wo 开头 bad external_userid")
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
                record.custom[header] = _custom_value(value)
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
    report = Report("customers")
    records = _merge_by_name(_customer_records(table, report, settings.tz, app[CLOCK].now()), report)

    async with in_transaction():
        staff_by_key: dict[str, Staff] = {}
        all_staff = await Staff.all()
        staff_names = {s.id: s.name for s in all_staff}
        for staff in all_staff:
            for key in (staff.dingtalk_userid, staff.wecom_userid, staff.name):
                if key:
                    staff_by_key[key] = staff
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
                await _save_contacts(customer, [], record.contacts, audits)
                continue
            before, after = _customer_changes(customer, values, record)
            if before:
                for key, value in after.items():
                    setattr(customer, key, value)
                await customer.save(update_fields=[*after, "updated_at"])
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
    return report


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
            audits.append(_audit("create", "contact", contact.id, None, {"customer": customer.name, **values}))
            changed += 1
            continue
        after = {k: v for k, v in values.items() if getattr(contact, k) != v}
        if after:
            before = {k: getattr(contact, k) for k in after}
            for key, value in after.items():
                setattr(contact, key, value)
            await contact.save(update_fields=list(after))
            audits.append(_audit("update", "contact", contact.id, before, {"customer": customer.name, **after}))
            changed += 1
    return changed


# ---------------------------------------------------------------------------------------------------------------
# Entry point


async def run_import(app: web.Application, kind: str, path: str | os.PathLike[str]) -> str:
    """Import ``path`` as ``kind`` (staff, customers, messages, orders); the report for the admin."""
    file = Path(path)
    if kind == "messages":
        from bot.archive import import_jsonl

        return str(await import_jsonl(app, file))
    if kind == "orders":
        from bot.orders import import_orders

        return str(await import_orders(app, file))
    if kind not in ("staff", "customers"):
        raise ImportFailed(f"不支持导入「{kind}」 unknown kind (staff, customers, messages, orders)")
    table = await asyncio.to_thread(read_table, file, kind)
    try:
        report = await (import_staff(app, table) if kind == "staff" else import_customers(app, table))
    except DATABASE_ERRORS as exc:  # the transaction rolled back: nothing was written
        raise ImportFailed(f"写入数据库失败，未导入任何数据 database error, nothing imported: {exc}") from exc
    await app[BOT].understanding.refresh()
    return report.summary()
