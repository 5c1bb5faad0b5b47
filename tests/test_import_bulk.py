"""An admin imports a long customer list, chunk by chunk, and can always run it again: a second run writes nothing,
an import killed midway (or stopped by a database failure) and run again ends exactly as one clean run, and
customers the file leaves without an owner, new or already stored, are offered to lead assignment while owned
ones keep their rep.

Imports run as the admin runs them: ``crmbot import customers`` (in-process, or as a subprocess that is killed).
"""

from __future__ import annotations

import asyncio
import json
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from bot.demo import load_demo
from bot.sql import default as db
from models.audit import AuditLog
from models.customers import Contact, Customer
from models.people import LeadAssignment
from models.staff import Staff
from tests.driver import WeComChat
from tests.helpers import WECOM, deliver_all
from tests.simulators.wecom import WeComSimulator
from tests.test_import import STAFF_CSV, assert_ok, crmbot, query, write_csv
from tests.test_people_leads import LEADS

ROOT = Path(__file__).resolve().parent.parent
ROWS = 600
CHUNK = "40"


@pytest.fixture
def config(tmp_path: Path, database_url: str) -> Path:
    path = tmp_path / "crmbot.toml"
    path.write_text(f'[database]\nurl = "{database_url}"\n', encoding="utf-8")
    return path


def sheet(rows: int = ROWS) -> str:
    """A customer list: every tenth customer on two rows (the second row far below the first, in another chunk,
    with another contact and tag), owners by name or by account, some without one, contacts with external ids."""
    lines = ["客户名称,别名,行业,等级,阶段,负责人,标签,联系人,电话,外部联系人ID,合同到期,最近跟进,区域,备注"]
    owners = ["张伟", "wanglei", "", "刘芳"]
    for i in range(rows):
        n = i if i < rows - rows // 10 else (i - (rows - rows // 10)) * 9  # the last tenth repeat earlier names
        repeat = i >= rows - rows // 10
        lines.append(
            f"客户{n:05d}有限公司,{'' if repeat else f'客户{n:05d}'},{'制造' if n % 2 else '能源'},{'ABC'[n % 3]},"
            f"{'意向' if n % 3 else '报价'},{owners[n % 4]},{'回访' if repeat else '重点'},"
            f"{'钱总' if repeat else '联系人'}{n},138{n:08d},{'' if repeat else f'wm{n:08d}'},"
            f"2027-0{1 + n % 9}-15,2025-0{1 + n % 9}-02 10:30,{'华东' if n % 2 else '华北'},{'备注' if repeat else ''}"
        )
    return "\n".join(lines) + "\n"


async def snapshot() -> dict[str, Any]:
    """Everything an import writes, without ids or clock times: customers, contacts and the audit rows."""
    customers = []
    for c in await Customer.all().order_by("name").prefetch_related("owner"):
        customers.append(
            (c.name, c.aliases, c.industry, c.grade, c.stage.value, c.owner.name if c.owner else None, c.tags,
             c.custom_fields, str(c.contract_end), str(c.last_followup_at), c.won_at, c.ladder_from)
        )  # fmt: skip
    contacts = sorted(
        (str(n), str(p), str(r), str(e))
        for n, p, r, e in await Contact.all().values_list("customer__name", "name", "phone", "external_userid")
    )
    audits = sorted(
        (str(a), str(e), json.dumps(after, ensure_ascii=False, sort_keys=True))
        for a, e, after in await AuditLog.filter(actor_name="import").values_list("action", "entity", "after")
    )
    return {"customers": customers, "contacts": contacts, "audits": audits}


def test_a_long_list_in_chunks_then_the_same_file_again_changes_nothing(config: Path, tmp_path: Path) -> None:
    assert_ok(crmbot(config, "import", "staff", str(write_csv(tmp_path / "staff.csv", STAFF_CSV))))
    path = write_csv(tmp_path / "customers.csv", sheet())

    out = assert_ok(crmbot(config, "import", "customers", str(path), "--chunk-rows", CHUNK))

    unique = ROWS - ROWS // 10
    assert out.splitlines()[0] == (
        f"导入完成 imported 客户 customers: 新增 {unique}，更新 0，无变化 0，合并重复行 {ROWS // 10}，拒绝 0"
    )
    first = query(config, snapshot)
    assert len(first["customers"]) == unique and len(first["contacts"]) == ROWS
    # A customer whose second row came in a later chunk: both contacts, both tags, its note, one create row.
    [twice] = [c for c in first["customers"] if c[0] == "客户00018有限公司"]
    assert twice[1] == ["客户00018"] and twice[6] == ["重点", "回访"] and twice[7] == {"地区": "华北", "备注": "备注"}
    assert [c for c in first["contacts"] if c[0] == "客户00018有限公司"] == [
        ("客户00018有限公司", "联系人18", "13800000018", "wm00000018"),
        ("客户00018有限公司", "钱总18", "13800000018", "None"),
    ]
    creates = [a for a in first["audits"] if a[:2] == ("create", "customer")]
    assert len(creates) == unique
    owners = [c[5] for c in first["customers"][:4]]
    assert owners[:2] == ["张伟", "王磊"] and owners[3] == "刘芳"  # by name or by account
    assert owners[2] in ("张伟", "王磊")  # without one: a lead, given to a rep as each chunk commits

    rerun = assert_ok(crmbot(config, "import", "customers", str(path), "--chunk-rows", CHUNK))

    assert f"新增 0，更新 0，无变化 {unique}，合并重复行 {ROWS // 10}，拒绝 0" in rerun
    assert query(config, snapshot) == first


class Lock:
    """The customer table's write lock, taken from outside the import: while it is held the import can commit
    nothing more (it waits), so what is counted under it is what a kill at that moment leaves behind."""

    def __init__(self, database_url: str) -> None:
        self.url = database_url
        self.loop = asyncio.new_event_loop()

    def count_under_lock(self) -> int:
        if self.url.startswith("sqlite://"):
            self.sqlite = sqlite3.connect(self.url.removeprefix("sqlite://"), isolation_level=None, timeout=30)
            self.sqlite.execute("BEGIN IMMEDIATE")
            return int(self.sqlite.execute("SELECT COUNT(*) FROM customer").fetchone()[0])
        return int(self.loop.run_until_complete(self._pg_lock()))

    async def _pg_lock(self) -> int:
        self.pg = await asyncpg.connect(self.url.replace("postgres://", "postgresql://"))
        await self.pg.execute("BEGIN")
        await self.pg.execute("LOCK TABLE customer IN EXCLUSIVE MODE")
        return int(await self.pg.fetchval("SELECT COUNT(*) FROM customer"))

    def release(self) -> None:
        if self.url.startswith("sqlite://"):
            self.sqlite.execute("ROLLBACK")
            self.sqlite.close()
        else:
            self.loop.run_until_complete(self.pg.execute("ROLLBACK"))
            self.loop.run_until_complete(self.pg.close())


async def emptied() -> None:
    await AuditLog.filter(actor_name="import", entity__in=["customer", "contact"]).delete()
    await Customer.all().delete()


def test_an_import_killed_midway_and_run_again_ends_as_one_clean_run(
    config: Path, tmp_path: Path, database_url: str
) -> None:
    assert_ok(crmbot(config, "import", "staff", str(write_csv(tmp_path / "staff.csv", STAFF_CSV))))
    path = write_csv(tmp_path / "customers.csv", sheet())
    assert_ok(crmbot(config, "import", "customers", str(path), "--chunk-rows", CHUNK))
    clean = query(config, snapshot)
    query(config, emptied)  # the same database without the customers, for the run that is killed
    assert query(config, lambda: Contact.all().count()) == 0

    command = [sys.executable, "-m", "bot.cli", "import", "customers", str(path), "--chunk-rows", CHUNK]
    proc = subprocess.Popen([*command, "--config", str(config)], cwd=ROOT, stdout=subprocess.DEVNULL)
    lock = Lock(database_url)
    try:
        while lock.count_under_lock() == 0 and proc.poll() is None:  # until a chunk or more is committed
            lock.release()
            time.sleep(0.05)  # room for the import to take the lock, also on a busy machine
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        lock.release()
    finally:
        if proc.poll() is None:
            proc.kill()
        lock.loop.close()
    assert proc.returncode == -signal.SIGKILL
    killed = query(config, lambda: Customer.all().count())
    assert 0 < killed < len(clean["customers"])  # killed midway, whole chunks committed

    out = assert_ok(crmbot(config, "import", "customers", str(path), "--chunk-rows", CHUNK))

    assert "拒绝 0" in out and f"无变化 {killed}" in out
    assert query(config, snapshot) == clean


async def test_a_reimported_customer_nobody_owns_is_offered_as_a_lead_and_an_owned_one_keeps_its_rep(
    start_app: Any, make_settings: Any, wecom_sim: WeComSimulator, tmp_path: Path, database_url: str
) -> None:
    # The demo team on the real clock: the import runs in a process of its own, at the time it really is.
    settings = make_settings(keywords={"buying_signal_tag": "", "ticket_mode": "off"}, leads=LEADS)
    client = await start_app(settings, run_scheduler=False)
    await load_demo(client.app)
    chat = WeComChat(client, wecom_sim, deliver=True)
    # 远景能源 has sat in the public pool since an earlier list; 华为 is 张三's.
    await Customer.create(name="远景能源", industry="新能源")
    config = tmp_path / "crmbot.toml"
    config.write_text(
        f'[database]\nurl = "{database_url}"\n'
        f'[wecom]\ncorp_id = "{WECOM.corp_id}"\nagent_id = {WECOM.agent_id}\nsecret = "{WECOM.secret}"\n'
        f'token = "{WECOM.token}"\nencoding_aes_key = "{WECOM.encoding_aes_key}"\napi_base = "{wecom_sim.url}"\n'
        f'[leads]\nsecret = "{LEADS["secret"]}"\nmax_open_per_rep = 1\nreturn_hours = 48\n'
        '[[leads.routes]]\nregion = "华北"\nteam = "刘经理"\n[[leads.routes]]\nregion = "华东"\nteam = "王经理"\n',
        encoding="utf-8",
    )
    text = "客户名称,区域,联系人,电话,负责人\n远景能源,华东,马总,13700000001,\n华为技术有限公司,华东,,,\n"
    path = write_csv(tmp_path / "again.csv", text)

    command = [sys.executable, "-m", "bot.cli", "import", "customers", str(path), "--config", str(config)]
    result = await asyncio.to_thread(subprocess.run, command, cwd=ROOT, capture_output=True, text=True, check=True)
    await deliver_all(client.app)

    out = result.stdout
    assert "新增 0，更新 2" in out  # 远景能源 gains a region and a contact, 华为 a region
    envision = await Customer.get(name="远景能源").prefetch_related("owner")
    huawei = await Customer.get(name="华为技术有限公司").prefetch_related("owner")
    # 王经理's team in 华东, one open lead each: 张三 holds 三一重工 already, so 李四 takes it and is told.
    assert envision.owner is not None and envision.owner.name == "李四"
    assert huawei.owner is not None and huawei.owner.name == "张三"
    [told] = chat.sent_to("lisi")
    assert "新线索" in told and "客户：远景能源" in told and "地区：华东" in told
    assert "建议今天内联系马总（13700000001）" in told
    assert not any("华为" in t and "新线索" in t for t in chat.sent_to("zhangsan"))
    assert await LeadAssignment.filter(customer_id=envision.id, staff__name="李四").count() == 1
    assert await Staff.filter(name="李四").count() == 1


def test_a_database_failure_midway_says_how_far_the_file_got_and_a_rerun_finishes_it(
    config: Path, tmp_path: Path, database_url: str
) -> None:
    assert_ok(crmbot(config, "import", "staff", str(write_csv(tmp_path / "staff.csv", STAFF_CSV))))
    if database_url.startswith("sqlite"):
        install = [
            "CREATE TRIGGER refuse BEFORE INSERT ON customer WHEN NEW.name = '拒收公司' "
            "BEGIN SELECT RAISE(ABORT, 'refused'); END"
        ]
        remove = ["DROP TRIGGER refuse"]
    else:
        install = [
            "CREATE FUNCTION refuse() RETURNS trigger AS $$ BEGIN IF NEW.name = '拒收公司' THEN "
            "RAISE EXCEPTION 'refused'; END IF; RETURN NEW; END $$ LANGUAGE plpgsql",
            "CREATE TRIGGER refuse BEFORE INSERT ON customer FOR EACH ROW EXECUTE FUNCTION refuse()",
        ]
        remove = ["DROP TRIGGER refuse ON customer"]

    def run(statements: list[str]) -> None:
        async def go() -> None:
            for statement in statements:
                await db().execute_script(statement)

        query(config, go)

    run(install)
    text = "客户名称,负责人,联系人\n甲公司,张伟,甲\n乙公司,王磊,乙\n拒收公司,张伟,丙\n丁公司,张伟,丁\n"
    path = write_csv(tmp_path / "c.csv", text)
    result = crmbot(config, "import", "customers", str(path), "--chunk-rows", "2")

    assert result.exit_code == 2
    assert "第3行及之前的已导入" in result.stderr and "重新运行同一命令" in result.stderr
    names = query(config, lambda: Customer.all().order_by("name").values_list("name", flat=True))
    assert sorted(names) == ["乙公司", "甲公司"]  # the first chunk; the second rolled back whole

    run(remove)
    out = assert_ok(crmbot(config, "import", "customers", str(path), "--chunk-rows", "2"))

    assert "新增 2，更新 0，无变化 2" in out
    names = query(config, lambda: Customer.all().values_list("name", flat=True))
    assert sorted(names) == sorted(["甲公司", "乙公司", "拒收公司", "丁公司"])
    assert query(config, lambda: AuditLog.filter(entity="customer", action="create").count()) == 4
