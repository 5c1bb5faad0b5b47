"""An admin exports data to Excel with ``crmbot export`` (run in-process on the test database, then the workbook
read back with openpyxl), and what an export writes imports back unchanged into a fresh database."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import openpyxl
import pytest
from click.testing import CliRunner, Result

from bot.cli import main
from tests.conftest import PG_URL, _admin, _with_database

STAFF_CSV = (
    "姓名,企业微信账号,角色,上级\n刘芳,liufang,主管,\n张伟,zhangwei,销售,刘芳\n王磊,wanglei,销售,刘芳\n"
    "赵强,zhaoqiang,主管,\n孙丽,sunli,销售,赵强\n"
)
OWNERS = ("张伟", "王磊", "刘芳", "孙丽")
STAGES = ("潜在", "意向", "方案", "报价", "谈判", "成交", "流失")
CUSTOMERS = 2005  # more than one chunk of the keyset pagination


def customers_csv() -> str:
    lines = [
        "客户名称,别名,行业,等级,阶段,负责人,标签,联系人,联系人角色,电话,外部联系人ID,合同到期,最近跟进,下次跟进,成交日期,地区,付款方式"
    ]
    for i in range(CUSTOMERS):
        stage = STAGES[i % len(STAGES)]
        alias = f"简称{i}" if i % 3 == 0 else ""
        tags = "重点;华东" if i % 4 == 0 else ""
        won = f"2026-0{1 + i % 9}-1{i % 10} 10:30" if stage == "成交" else ""
        contract = f"2027-0{1 + i % 9}-2{i % 10}" if i % 5 == 0 else ""
        last = f"2026-10-{10 + i % 20} 09:{i % 60:02d}"
        nxt = f"2026-12-{10 + i % 18} 14:00" if i % 2 else ""
        row = [
            f"客户{i:04d}有限公司", alias, "制造" if i % 2 else "能源", "ABC"[i % 3], stage, OWNERS[i % 4], tags,
            f"联系人{i}", "采购", f"1380000{i:04d}", f"wm{i:06d}", contract, last, nxt, won,
            ("华东", "华南", "")[i % 3], "月结60天" if i % 7 == 0 else "",
        ]  # fmt: skip
        lines.append(",".join(row))
        if i % 50 == 0:  # a second contact: a second row of the same customer
            lines.append(
                ",".join([f"客户{i:04d}有限公司", *[""] * 6, f"技术{i}", "技术", f"1390000{i:04d}", *[""] * 5])
            )
    return "\n".join(lines) + "\n"


OPPORTUNITIES_CSV = (
    "客户名称,商机名称,金额,阶段,预计成交,赢率,负责人,来源\n"
    "客户0000有限公司,二期扩容,120000,报价,2026-12-31,60%,张伟,展会\n"
    "客户0001有限公司,备件年框,35000.5,意向,,,王磊,\n"
    "客户0002有限公司,新产线,2000000,谈判,2027-01-15,,刘芳,老客户转介绍\n"
)
ORDERS_CSV = (
    "客户名称,下单日期,金额,订单号,状态,产品,数量,行金额\n"
    "客户0000有限公司,2026-11-01,15000,SO-001,下单,液压泵,10,10000\n"
    "客户0000有限公司,2026-11-01,15000,SO-001,下单,密封圈,100,5000\n"
    "客户0003有限公司,2026-11-05,8000,SO-002,已发货,,,\n"
)


def crmbot(config: Path, *args: str) -> Result:
    return CliRunner().invoke(main, [*args, "--config", str(config)])


def ok(result: Result) -> str:
    assert result.exit_code == 0, (result.exit_code, result.output, result.exception)
    return result.stdout


def bad_input(result: Result) -> str:
    assert result.exit_code == 2, (result.exit_code, result.output)
    err = result.stderr.strip()
    assert err.startswith("错误 error:") and "\n" not in err, err
    return err


def config_for(path: Path, url: str) -> Path:
    path.write_text(f'[database]\nurl = "{url}"\n', encoding="utf-8")
    return path


@pytest.fixture
def config(tmp_path: Path, database_url: str) -> Path:
    return config_for(tmp_path / "crmbot.toml", database_url)


@contextlib.contextmanager
def fresh_database(tmp_path: Path) -> Iterator[str]:
    """Another empty database: an SQLite file, or a PostgreSQL database dropped afterwards."""
    if not PG_URL:
        yield f"sqlite://{tmp_path / 'fresh.sqlite3'}"
        return
    name = f"crmbot_x_{uuid.uuid4().hex[:12]}"
    asyncio.run(_admin(f'CREATE DATABASE "{name}"'))
    try:
        yield _with_database(PG_URL, name)
    finally:
        asyncio.run(_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def sheet_rows(path: Path) -> list[tuple[Any, ...]]:
    book = openpyxl.load_workbook(path, read_only=True)
    try:
        [sheet] = book.worksheets
        return [tuple(r) for r in sheet.iter_rows(values_only=True)]
    finally:
        book.close()


def load_everything(config: Path, tmp_path: Path) -> None:
    ok(crmbot(config, "import", "staff", str(write(tmp_path / "staff.csv", STAFF_CSV))))
    ok(crmbot(config, "import", "customers", str(write(tmp_path / "customers.csv", customers_csv()))))
    ok(crmbot(config, "import", "opportunities", str(write(tmp_path / "opps.csv", OPPORTUNITIES_CSV))))
    ok(crmbot(config, "import", "orders", str(write(tmp_path / "orders.csv", ORDERS_CSV))))


def test_an_export_imports_back_into_a_fresh_database_unchanged(config: Path, tmp_path: Path) -> None:
    load_everything(config, tmp_path)
    first = {kind: tmp_path / f"first-{kind}.xlsx" for kind in ("customers", "opportunities", "orders")}
    for kind, path in first.items():
        assert "已导出" in ok(crmbot(config, "export", kind, str(path)))

    customers = sheet_rows(first["customers"])
    assert customers[0][:6] == ("客户名称", "别名", "行业", "等级", "阶段", "负责人")
    assert len(customers) == 1 + CUSTOMERS + len(range(0, CUSTOMERS, 50))
    # (its stage is the deal's now: 报价)
    assert customers[1][:7] == ("客户0000有限公司", "简称0", "能源", "A", "报价", "张伟", "重点、华东")
    assert customers[2][7:10] == ("技术0", "技术", "13900000000")  # the second contact, its own row
    assert customers[1][12] == datetime(2026, 10, 10, 9, 0)  # a real date, in local time
    assert customers[0][15:] == ("付款方式", "地区")  # custom fields, one column each
    assert customers[1][15:] == ("月结60天", "华东")

    with fresh_database(tmp_path) as url:
        other = config_for(tmp_path / "fresh.toml", url)
        ok(crmbot(other, "import", "staff", str(tmp_path / "staff.csv")))
        for kind, path in first.items():
            ok(crmbot(other, "import", kind, str(path)))
        for kind, path in first.items():
            again = tmp_path / f"again-{kind}.xlsx"
            ok(crmbot(other, "export", kind, str(again)))
            assert sheet_rows(again) == sheet_rows(path), kind


def test_the_workbook_has_a_frozen_header_real_dates_and_set_widths(config: Path, tmp_path: Path) -> None:
    ok(crmbot(config, "import", "staff", str(write(tmp_path / "staff.csv", STAFF_CSV))))
    ok(crmbot(config, "import", "customers", str(write(tmp_path / "c.csv", customers_csv()))))
    ok(crmbot(config, "import", "orders", str(write(tmp_path / "orders.csv", ORDERS_CSV))))
    path = tmp_path / "orders.xlsx"
    assert "3 行" in ok(crmbot(config, "export", "orders", str(path)))

    book = openpyxl.load_workbook(path)
    sheet = book.active
    assert sheet is not None
    assert sheet.freeze_panes == "A2"
    assert sheet["A1"].value == "客户名称" and sheet["A1"].font.b
    assert sheet.column_dimensions["A"].width == 28
    assert sheet["B2"].is_date and sheet["B2"].value == datetime(2026, 11, 1)
    assert [sheet.cell(r, 7).value for r in (2, 3)] == ["液压泵", "密封圈"]  # one row per order line
    assert sheet["C2"].value == 15000


def test_an_export_within_a_staff_members_scope_or_a_team(config: Path, tmp_path: Path) -> None:
    load_everything(config, tmp_path)
    rep, team, everyone = tmp_path / "rep.xlsx", tmp_path / "team.xlsx", tmp_path / "all.xlsx"
    ok(crmbot(config, "export", "customers", str(rep), "--as", "zhangwei"))
    ok(crmbot(config, "export", "customers", str(team), "--team", "刘芳"))
    ok(crmbot(config, "export", "customers", str(everyone)))

    owners = {name: {row[5] for row in sheet_rows(path)[1:]} for name, path in
              (("rep", rep), ("team", team), ("all", everyone))}  # fmt: skip
    assert owners == {"rep": {"张伟"}, "team": {"张伟", "王磊", "刘芳"}, "all": set(OWNERS)}
    since = tmp_path / "since.xlsx"
    ok(crmbot(config, "export", "orders", str(since), "--since", "2026-11-03"))
    assert [row[3] for row in sheet_rows(since)[1:]] == ["SO-002"]

    bad_input(crmbot(config, "export", "customers", str(tmp_path / "x.xlsx"), "--as", "zhangwei", "--team", "刘芳"))
    assert "manager" in bad_input(crmbot(config, "export", "customers", str(tmp_path / "x.xlsx"), "--team", "张伟"))


def test_bad_input_exits_2_with_one_line_and_writes_nothing(config: Path, tmp_path: Path) -> None:
    target = tmp_path / "out.xlsx"
    assert "unknown export" in bad_input(crmbot(config, "export", "invoices", str(target)))
    assert ".xlsx" in bad_input(crmbot(config, "export", "customers", str(tmp_path / "out.csv")))
    bad_input(crmbot(config, "export", "customers", str(tmp_path / "missing" / "out.xlsx")))
    bad_input(crmbot(config, "export", "customers", str(target), "--since", "last week"))
    bad_input(crmbot(config, "export", "customers", str(target), "--as", "nobody"))
    assert not target.exists() and not list(tmp_path.glob("*.part"))


def test_the_report_is_a_funnel_and_a_sheet_per_person(config: Path, tmp_path: Path) -> None:
    load_everything(config, tmp_path)
    path = tmp_path / "report.xlsx"
    ok(crmbot(config, "export", "report", str(path), "--team", "刘芳"))
    book = openpyxl.load_workbook(path, read_only=True)
    funnel, people = ([tuple(r) for r in sheet.iter_rows(values_only=True)] for sheet in book.worksheets)
    book.close()
    assert funnel[0] == ("阶段", "商机数", "金额")
    assert dict((r[0], r[1:]) for r in funnel[1:])["报价"] == (1, 120000)
    assert dict((r[0], r[1:]) for r in funnel[1:])["谈判"] == (1, 2000000)
    by_name = {r[0]: r for r in people[1:]}
    assert set(by_name) == {"刘芳", "张伟", "王磊"}
    assert by_name["张伟"][1] == "销售"
    assert by_name["张伟"][2] == len(range(0, CUSTOMERS, 4))  # customers owned
    assert by_name["张伟"][7:9] == (1, 15000)  # orders of their customers and their total


def test_exporting_nothing_still_gives_a_workbook_with_its_header(config: Path, tmp_path: Path) -> None:
    for kind in ("followups", "tickets", "audit"):
        path = tmp_path / f"{kind}.xlsx"
        assert "0 行" in ok(crmbot(config, "export", kind, str(path)))
        [header] = sheet_rows(path)
        assert header[0]


def test_parse_answers_the_export_intent_and_leaves_questions_alone(config: Path) -> None:
    lines = ok(crmbot(config, "parse", "导出我的客户", "导出团队客户", "导出客户", "怎么导出客户？")).splitlines()
    assert [line.split("\t")[1] for line in lines] == ["export_customers"] * 3 + ["unknown"]
    assert '"whose": "mine"' in lines[0] and '"whose": "team"' in lines[1]


def test_a_value_that_looks_like_a_formula_stays_text(config: Path, tmp_path: Path) -> None:
    ok(crmbot(config, "import", "staff", str(write(tmp_path / "staff.csv", STAFF_CSV))))
    name = '=HYPERLINK("http://evil.example/","点我")'
    csv = '客户名称,负责人,标签\n"=HYPERLINK(""http://evil.example/"",""点我"")",张伟,=1+1\n'
    ok(crmbot(config, "import", "customers", str(write(tmp_path / "c.csv", csv))))
    path = tmp_path / "customers.xlsx"
    ok(crmbot(config, "export", "customers", str(path)))

    sheet = openpyxl.load_workbook(path).active
    assert sheet is not None
    assert (sheet["A2"].value, sheet["A2"].data_type) == (name, "s")
    assert (sheet["G2"].value, sheet["G2"].data_type) == ("=1+1", "s")
