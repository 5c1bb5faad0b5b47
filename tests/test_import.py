"""An admin imports the team and the customer list from the spreadsheets they already have.

Every test runs the real ``crmbot import`` command in-process on real files (CSV in several encodings, XLSX
written with openpyxl, the samples in tests/data) against the test database, then looks at what was stored.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Awaitable, Callable
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any, TypeVar

import openpyxl
import pytest
from click.testing import CliRunner, Result

from bot.app import load_settings
from bot.cli import main, running_app
from bot.keys import BOT
from bot.sql import default as db
from models.audit import AuditLog
from models.customers import Contact, Customer, Stage
from models.staff import Role, Staff
from tests.helpers import account_of
from tests.test_cli import CRMBOT

DATA = Path(__file__).parent / "data"
T = TypeVar("T")

STAFF_CSV = "姓名,企业微信账号,角色,上级\n张伟,zhangwei,销售,刘芳\n王磊,wanglei,销售,刘芳\n刘芳,liufang,主管,\n"


@pytest.fixture
def config(tmp_path: Path, database_url: str) -> Path:
    path = tmp_path / "crmbot.toml"
    path.write_text(f'[database]\nurl = "{database_url}"\n', encoding="utf-8")
    return path


def crmbot(config: Path, *args: str) -> Result:
    return CliRunner().invoke(main, [*args, "--config", str(config)])


def query(config: Path, fetch: Callable[[], Awaitable[T]]) -> T:
    """Run ``fetch`` against the database the command used (after the command has finished)."""

    async def go() -> T:
        async with running_app(load_settings(config)):
            return await fetch()

    return asyncio.run(go())


def write_csv(path: Path, text: str, encoding: str = "utf-8") -> Path:
    path.write_bytes(text.encode(encoding))
    return path


def write_xlsx(path: Path, rows: list[list[Any]], notes_first: bool = False) -> Path:
    workbook = openpyxl.Workbook()
    sheet = workbook.active
    assert sheet is not None
    if notes_first:  # templates often start with an instructions sheet
        sheet.title = "说明"
        sheet.append(["请在「客户」表中填写客户资料"])
        sheet = workbook.create_sheet("客户")
    for row in rows:
        sheet.append(row)
    workbook.save(path)
    return path


def assert_ok(result: Result) -> str:
    assert result.exit_code == 0, (result.exit_code, result.output, result.exception)
    return result.stdout


def assert_bad_input(result: Result) -> str:
    assert result.exit_code == 2, (result.exit_code, result.output)
    err = result.stderr.strip()
    assert err.startswith("错误 error:"), err
    assert "\n" not in err
    return err


async def staff_table() -> dict[str, tuple[str | None, str, str | None]]:
    """name → (wecom userid, role, manager's name)"""
    rows = await Staff.all().prefetch_related("manager")
    return {s.name: (await account_of(s, "wecom"), s.role.value, s.manager.name if s.manager else None) for s in rows}


async def customer(name: str) -> Customer | None:
    found = await Customer.get_or_none(name=name).prefetch_related("owner", "contacts")
    return found


async def counts() -> tuple[int, int, int, int]:
    return (
        await Staff.all().count(),
        await Customer.all().count(),
        await Contact.all().count(),
        await AuditLog.all().count(),
    )


# --- staff ------------------------------------------------------------------------------------------------------


def test_the_sample_staff_sheet_resolves_managers_named_further_down(config: Path) -> None:
    out = assert_ok(crmbot(config, "import", "staff", str(DATA / "staff.csv")))  # UTF-8 with BOM, Chinese headers

    assert "新增 6" in out and "拒绝 1" in out
    assert "第9行: 角色「实习生」无效" in out
    staff = query(config, staff_table)
    assert staff == {
        "张伟": ("zhangwei", "rep", "刘芳"),  # 刘芳 is only defined three rows later
        "王磊": ("wanglei", "rep", "刘芳"),
        "李娜": ("lina", "rep", "刘芳"),
        "刘芳": ("liufang", "manager", "陈总"),
        "陈总": ("chenzong", "director", None),
        "赵敏": ("ZHAOMIN", "rep", "刘芳"),  # full-width spaces trimmed, full-width id normalized
    }
    audits = query(config, lambda: AuditLog.filter(entity="staff").values_list("actor_name", "action", flat=False))
    assert sorted(audits) == [("import", "create")] * 6


def test_english_headers_in_xlsx(config: Path, tmp_path: Path) -> None:
    path = write_xlsx(
        tmp_path / "team.xlsx",
        [
            ["Name", "WeCom_UserID", "DingTalk_UserID", "Role", "Manager"],
            ["Alice Wang", "alice", 10086, "REP", "Bob Li"],
            [None, None, None, None, None],
            ["Bob Li", "bob", "ding_bob", "Manager", None],
        ],
    )
    out = assert_ok(crmbot(config, "import", "staff", str(path)))

    assert "新增 2" in out and "拒绝 0" in out

    async def accounts() -> list[tuple[str, str | None, Role]]:
        return [(s.name, await account_of(s, "dingtalk"), s.role) for s in await Staff.all().order_by("name")]

    staff = query(config, accounts)
    assert staff == [("Alice Wang", "10086", Role.REP), ("Bob Li", "ding_bob", Role.MANAGER)]


def test_unknown_manager_self_manager_and_cycles_are_rejected(config: Path, tmp_path: Path) -> None:
    path = write_csv(
        tmp_path / "staff.csv",
        "姓名,角色,上级\n甲,rep,乙\n乙,rep,甲\n丙,rep,丙\n丁,rep,查无此人\n戊,rep,丁\n己,manager,\n庚,rep,己\n",
    )
    out = assert_ok(crmbot(config, "import", "staff", str(path)))

    assert "第2行: 上级关系成环" in out and "第3行: 上级关系成环" in out
    assert "第4行: 上级不能是本人" in out
    assert "第5行: 上级「查无此人」不存在" in out
    assert "第6行: 上级「丁」不存在" in out  # 丁 itself was rejected, so 戊 cannot report to them
    assert query(config, staff_table) == {"己": (None, "manager", None), "庚": (None, "rep", "己")}


def test_reimporting_staff_updates_and_refuses_an_account_someone_else_holds(config: Path, tmp_path: Path) -> None:
    assert_ok(crmbot(config, "import", "staff", str(write_csv(tmp_path / "a.csv", STAFF_CSV))))
    second = "姓名,企业微信账号,角色,上级\n张伟,zhangwei,主管,\n王磊,zhangwei,销售,刘芳\n刘芳,liufang,主管,\n"
    out = assert_ok(crmbot(config, "import", "staff", str(write_csv(tmp_path / "b.csv", second))))

    assert "新增 0，更新 1，无变化 1" in out
    assert "第3行: 企业微信账号「zhangwei」已属于「张伟」" in out
    staff = query(config, staff_table)
    assert staff["张伟"] == ("zhangwei", "manager", "刘芳")  # blank 上级 keeps the stored manager
    assert staff["王磊"] == ("wanglei", "rep", "刘芳")
    update = query(config, lambda: AuditLog.get(entity="staff", action="update"))
    assert (update.before, update.after) == ({"role": "rep"}, {"role": "manager"})


def test_a_file_without_a_name_column_is_refused_and_writes_nothing(config: Path, tmp_path: Path) -> None:
    path = write_csv(tmp_path / "staff.csv", "企业微信账号,角色\nzhangwei,销售\n")
    err = assert_bad_input(crmbot(config, "import", "staff", str(path)))

    assert "姓名/name" in err
    assert query(config, counts) == (0, 0, 0, 0)


# --- customers --------------------------------------------------------------------------------------------------


def test_the_sample_customer_sheet(config: Path) -> None:
    assert_ok(crmbot(config, "import", "staff", str(DATA / "staff.csv")))
    out = assert_ok(crmbot(config, "import", "customers", str(DATA / "customers.csv")))

    assert out.splitlines()[0] == ("导入完成 imported 客户 customers: 新增 2，更新 0，无变化 0，合并重复行 1，拒绝 5")
    assert out.splitlines()[1:] == [
        "第5行: 等级「A+」无效，应为 A/B/C bad grade",
        "第6行: 负责人「赵六」不存在 unknown owner",
        "第7行: 电话「1380013800x」格式不正确 bad phone",
        "第8行: 外部联系人ID「abc123」应以 wm 或 wo 开头 bad external_userid",
        "第9行: 缺少客户名称 missing name",
    ]
    catl = query(config, lambda: customer("宁德时代新能源科技股份有限公司"))
    assert catl is not None
    assert catl.aliases == ["宁德时代", "CATL"]
    assert (catl.industry, catl.grade, catl.stage, catl.owner.name) == ("新能源", "A", Stage.QUOTE, "张伟")
    assert catl.tags == ["战略客户", "电池"]
    assert catl.contract_end == date(2026, 12, 31)
    assert catl.last_followup_at == datetime(2025, 11, 2, 2, 30, tzinfo=UTC)  # 10:30 in Asia/Shanghai
    assert catl.custom_fields == {"采购周期": "季度", "备注": "年框谈判中"}
    assert [(c.name, c.phone, c.external_userid) for c in catl.contacts] == [("曾工", "13900001001", "wmCATL001")]

    # Two rows for 徐工: one customer, both contacts, the second row's tag and note merged in.
    xcmg = query(config, lambda: customer("徐工集团工程机械股份有限公司"))
    assert xcmg is not None
    assert (xcmg.stage, xcmg.owner.name, xcmg.contract_end) == (Stage.INTENT, "王磊", date(2027, 3, 31))
    assert xcmg.tags == ["华东"] and xcmg.custom_fields == {"备注": "关键决策人"}
    contacts = sorted((c.name, c.phone, c.external_userid) for c in xcmg.contacts)
    assert contacts == [("吴总", "13800138000", None), ("周采购", "0516-87731234", "wmXCMG01")]

    stored = query(config, lambda: Customer.all().values_list("name", flat=True))
    assert sorted(stored) == ["宁德时代新能源科技股份有限公司", "徐工集团工程机械股份有限公司"]
    audits = query(config, lambda: AuditLog.filter(actor_name="import").values_list("action", "entity"))
    assert sorted(audits).count(("create", "customer")) == 2
    assert sorted(audits).count(("create", "contact")) == 3


def test_english_headers_xlsx_with_date_cells_on_the_second_sheet(config: Path, tmp_path: Path) -> None:
    assert_ok(crmbot(config, "import", "staff", str(write_csv(tmp_path / "staff.csv", STAFF_CSV))))
    path = write_xlsx(
        tmp_path / "customers.xlsx",
        [
            [
                "Name",
                "Aliases",
                "Industry",
                "Grade",
                "Stage",
                "Owner",
                "Tags",
                "Contact",
                "Phone",
                "External_UserID",
                "Contract_End",
                "Last_Followup_At",
                "Region",
            ],
            [
                "Sany Heavy Industry",
                "Sany, 三一",
                "Machinery",
                "b",
                "negotiation",
                "张伟",
                "key; export",
                "Mr Zheng",
                13800000005,
                "woSANY01",
                datetime(2027, 6, 30),
                datetime(2025, 3, 1, 15, 45),
                "华中",
            ],
            ["Goldwind", None, "Energy", "Ｃ", "won", "wanglei", None, None, None, None, "2026年1月31日", None, 7],
        ],
        notes_first=True,
    )
    out = assert_ok(crmbot(config, "import", "customers", str(path)))

    assert "新增 2" in out and "拒绝 0" in out
    sany = query(config, lambda: customer("Sany Heavy Industry"))
    assert sany is not None
    assert sany.aliases == ["Sany", "三一"] and sany.tags == ["key", "export"]
    assert (sany.grade, sany.stage, sany.owner.name) == ("B", Stage.NEGOTIATION, "张伟")
    assert sany.contract_end == date(2027, 6, 30)
    assert sany.last_followup_at == datetime(2025, 3, 1, 7, 45, tzinfo=UTC)
    assert sany.custom_fields == {"地区": "华中"}
    assert [(c.name, c.phone, c.external_userid) for c in sany.contacts] == [("Mr Zheng", "13800000005", "woSANY01")]
    goldwind = query(config, lambda: customer("Goldwind"))
    assert goldwind is not None
    assert (goldwind.grade, goldwind.stage, goldwind.owner.name) == ("C", Stage.WON, "王磊")  # owner by userid
    assert goldwind.contract_end == date(2026, 1, 31) and goldwind.custom_fields == {"地区": 7}


def test_gbk_csv_from_excel_in_china(config: Path, tmp_path: Path) -> None:
    assert_ok(crmbot(config, "import", "staff", str(write_csv(tmp_path / "staff.csv", STAFF_CSV, "gbk"))))
    text = "客户名称,阶段,负责人,合同到期\n恒力液压有限公司,谈判,张伟,2026-12-31\n潍柴动力,意向,王磊,20270115\n"
    out = assert_ok(crmbot(config, "import", "customers", str(write_csv(tmp_path / "c.csv", text, "gbk"))))

    assert "新增 2" in out
    rows = query(config, lambda: Customer.all().order_by("name").values_list("name", "stage", "contract_end"))
    assert sorted(rows) == sorted(
        [("恒力液压有限公司", Stage.NEGOTIATION, date(2026, 12, 31)), ("潍柴动力", Stage.INTENT, date(2027, 1, 15))]
    )


def test_reimport_updates_the_stored_customer_instead_of_duplicating(config: Path, tmp_path: Path) -> None:
    assert_ok(crmbot(config, "import", "staff", str(write_csv(tmp_path / "staff.csv", STAFF_CSV))))
    header = "客户名称,别名,等级,阶段,负责人,标签,联系人,电话,最近跟进,备注\n"
    first = header + "比亚迪股份有限公司,比亚迪,A,报价,张伟,新能源,周经理,13800000002,2025-05-10 09:00,老客户\n"
    assert_ok(crmbot(config, "import", "customers", str(write_csv(tmp_path / "1.csv", first))))
    # A later sheet: new stage and owner, one more tag and alias, a blank grade, an OLDER follow-up date,
    # the same contact with a new phone, and a second contact.
    second = (
        header
        + "比亚迪股份有限公司,BYD,,谈判,王磊,大客户,周经理,13900000002,2025-01-01 09:00,\n"
        + "比亚迪股份有限公司,,,,,,钱总,13700000002,,\n"
    )
    out = assert_ok(crmbot(config, "import", "customers", str(write_csv(tmp_path / "2.csv", second))))
    assert "新增 0，更新 1，无变化 0，合并重复行 1，拒绝 0" in out

    byd = query(config, lambda: customer("比亚迪股份有限公司"))
    assert byd is not None
    assert query(config, lambda: Customer.all().count()) == 1
    assert (byd.grade, byd.stage, byd.owner.name) == ("A", Stage.NEGOTIATION, "王磊")
    assert byd.aliases == ["比亚迪", "BYD"] and byd.tags == ["新能源", "大客户"]
    assert byd.last_followup_at == datetime(2025, 5, 10, 1, 0, tzinfo=UTC)  # never moved backwards
    assert byd.custom_fields == {"备注": "老客户"}
    assert sorted((c.name, c.phone) for c in byd.contacts) == [("周经理", "13900000002"), ("钱总", "13700000002")]
    update = query(config, lambda: AuditLog.get(entity="customer", action="update"))
    assert update.actor_name == "import"
    assert update.before == {"stage": "quote", "owner": "张伟", "aliases": ["比亚迪"], "tags": ["新能源"]}
    assert update.after == {
        "stage": "negotiation",
        "owner": "王磊",
        "aliases": ["比亚迪", "BYD"],
        "tags": ["新能源", "大客户"],
    }

    out = assert_ok(crmbot(config, "import", "customers", str(tmp_path / "2.csv")))  # the same file again
    assert "新增 0，更新 0，无变化 1" in out


def test_rejected_rows_are_reported_and_not_written(config: Path, tmp_path: Path) -> None:
    assert_ok(crmbot(config, "import", "staff", str(write_csv(tmp_path / "staff.csv", STAFF_CSV))))
    first = "客户名称,外部联系人ID\n华为技术有限公司,wmHW001\n"
    assert_ok(crmbot(config, "import", "customers", str(write_csv(tmp_path / "1.csv", first))))
    text = (
        "客户名称,阶段,负责人,外部联系人ID,合同到期,最近跟进,电话\n"
        "好客户,意向,张伟,wmGOOD1,2026-12-31,2025-01-02,021-55556666\n"  # 2
        "占用者,,,wmHW001,,,\n"  # 3: another customer's contact
        "重复者,,,wmGOOD1,,,\n"  # 4: claimed by row 2
        "错阶段,已签约,,,,,\n"  # 5
        "错日期,,,,下个月,,\n"  # 6
        "错时间,,,,,昨天下午,\n"  # 7
        "未来跟进,,,,,2999-01-01 10:00,\n"  # 8
        "多处错误,报价,不认识,wx123,,,\n"  # 9
        "　　,意向,张伟,,,,\n"  # 10: a name of full-width spaces is no name
    )
    out = assert_ok(crmbot(config, "import", "customers", str(write_csv(tmp_path / "2.csv", text))))

    assert "新增 1" in out and "拒绝 8" in out
    assert "第3行: 外部联系人ID「wmHW001」已属于客户「华为技术有限公司」" in out
    assert "第4行: 外部联系人ID「wmGOOD1」与第2行的「好客户」重复" in out
    assert "第5行: 阶段「已签约」无效" in out
    assert "第6行: 合同到期「下个月」不是有效日期" in out
    assert "第7行: 最近跟进「昨天下午」不是有效时间" in out
    assert "第8行: 最近跟进「2999-01-01 10:00」晚于现在" in out
    assert "第9行: 外部联系人ID「wx123」应以 wm 或 wo 开头" in out
    assert "第10行: 缺少客户名称" in out
    names = query(config, lambda: Customer.all().values_list("name", flat=True))
    assert sorted(names) == ["华为技术有限公司", "好客户"]
    huawei_contacts = query(config, lambda: Contact.filter(customer__name="华为技术有限公司").count())
    assert huawei_contacts == 1


def test_a_row_with_a_bad_cell_or_an_unknown_owner_writes_nothing(config: Path, tmp_path: Path) -> None:
    text = "客户名称,负责人,等级\n美的集团,不认识,D\n"
    out = assert_ok(crmbot(config, "import", "customers", str(write_csv(tmp_path / "c.csv", text))))
    assert "第2行: 等级「D」无效，应为 A/B/C bad grade" in out  # checked before the database
    assert query(config, counts) == (0, 0, 0, 0)
    text = "客户名称,负责人\n美的集团,不认识\n"
    out = assert_ok(crmbot(config, "import", "customers", str(write_csv(tmp_path / "d.csv", text))))
    assert "第2行: 负责人「不认识」不存在 unknown owner" in out
    assert query(config, counts) == (0, 0, 0, 0)


def test_a_corrupt_xlsx_exits_2_and_writes_nothing(config: Path, tmp_path: Path) -> None:
    path = tmp_path / "customers.xlsx"
    path.write_bytes(b"PK\x03\x04" + b"\x00not really a workbook" * 20)
    err = assert_bad_input(crmbot(config, "import", "customers", str(path)))

    assert "customers.xlsx" in err and "xlsx" in err
    assert query(config, counts) == (0, 0, 0, 0)


@pytest.mark.parametrize(
    ("name", "content", "expected"),
    [
        ("old.xls", b"\xd0\xcf\x11\xe0", ".xls"),
        ("customers.json", b"[]", ".csv"),
        ("empty.csv", b"", "客户名称/name"),
        ("title-only.xlsx", None, "客户名称/name"),
    ],
)
def test_files_that_cannot_be_used_exit_2(
    config: Path, tmp_path: Path, name: str, content: bytes | None, expected: str
) -> None:
    path = tmp_path / name
    if content is None:
        write_xlsx(path, [["客户导入模板"], ["公司", "电话"], ["华为", "1"]])
    else:
        path.write_bytes(content)
    err = assert_bad_input(crmbot(config, "import", "customers", str(path)))
    assert expected in err


def test_a_database_failure_midway_writes_nothing(config: Path, tmp_path: Path, database_url: str) -> None:
    assert_ok(crmbot(config, "import", "staff", str(write_csv(tmp_path / "staff.csv", STAFF_CSV))))
    if database_url.startswith("sqlite"):
        trigger = (
            "CREATE TRIGGER refuse BEFORE INSERT ON customer WHEN NEW.name = '拒收公司' "
            "BEGIN SELECT RAISE(ABORT, 'refused'); END"
        )
        statements = [trigger]
    else:
        statements = [
            "CREATE FUNCTION refuse() RETURNS trigger AS $$ BEGIN IF NEW.name = '拒收公司' THEN "
            "RAISE EXCEPTION 'refused'; END IF; RETURN NEW; END $$ LANGUAGE plpgsql",
            "CREATE TRIGGER refuse BEFORE INSERT ON customer FOR EACH ROW EXECUTE FUNCTION refuse()",
        ]

    async def install() -> None:
        for statement in statements:
            await db().execute_script(statement)

    query(config, install)
    before = query(config, counts)
    text = "客户名称,负责人,联系人\n甲公司,张伟,甲\n乙公司,王磊,乙\n拒收公司,张伟,丙\n丁公司,张伟,丁\n"
    err = assert_bad_input(crmbot(config, "import", "customers", str(write_csv(tmp_path / "c.csv", text))))

    assert "未导入任何数据" in err
    assert query(config, counts) == before  # 甲公司 and 乙公司 were rolled back with the rest


def test_after_a_customer_import_the_bot_knows_the_new_names(tmp_path: Path, config: Path, database_url: str) -> None:
    """A bot answering people loaded the names at start-up; ``crmbot import customers`` runs beside it as its own
    process (which never loads them); the bot knows the new names the next time it reads."""
    path = write_csv(tmp_path / "c.csv", "客户名称,别名\n潍柴动力股份有限公司,潍柴\n")
    settings = load_settings(os.devnull, database={"url": database_url})
    env = {k: v for k, v in os.environ.items() if not k.upper().startswith("CRMBOT_")}

    async def go() -> tuple[str, Any, Any]:
        async with running_app(settings, run_scheduler=True) as serving:
            before = serving[BOT].understanding.parse("客户 潍柴", datetime.now(UTC))
            proc = await asyncio.create_subprocess_exec(
                *CRMBOT,
                "import",
                "customers",
                str(path),
                "--config",
                str(config),
                env=env,
                stdout=asyncio.subprocess.PIPE,
            )
            out, _ = await proc.communicate()
            assert proc.returncode == 0
            await serving[BOT].understanding.ensure_fresh()
            return out.decode(), before, serving[BOT].understanding.parse("客户 潍柴", datetime.now(UTC))

    summary, before, parsed = asyncio.run(go())
    assert "新增 1" in summary
    assert before.slots.get("customer") != "潍柴动力股份有限公司"
    assert parsed.slots["customer"] == "潍柴动力股份有限公司"
