"""The WeCom chat archive: WeCom says there is something new, the bot pulls it through the Finance SDK (a stand-in
library with the same C ABI, built here with gcc), and every message lands once in its customer's profile — also
with unknown key versions, SDK errors, recalls, and a crash between the pull and the commit."""

from __future__ import annotations

import base64
import ctypes
import json
import secrets
import shutil
import subprocess
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from tortoise import connections

from bot import search
from bot.demo import load_demo
from bot.keys import BOT
from integrations.wecom import WECOM_ARCHIVE
from integrations.wecom.archive import ArchivePuller
from models.archive import ArchiveCursor, ArchiveFailure
from models.customers import Customer
from models.messages import Message
from tests.helpers import WECOM, deliver_all, post_wecom, require_tool

STANDIN = Path(__file__).resolve().parent / "simulators" / "finance_standin.c"
T0 = datetime(2026, 5, 6, 10, 0, tzinfo=UTC)


@pytest.fixture(scope="session")
def standin_lib(tmp_path_factory: pytest.TempPathFactory) -> str:
    """The stand-in libWeWorkFinanceSdk_C.so, compiled for this test session."""
    gcc = require_tool(shutil.which("gcc"), "gcc is not installed: it builds the stand-in of Tencent's Finance SDK")
    out = tmp_path_factory.mktemp("sdk") / "libWeWorkFinanceSdk_C.so"
    subprocess.run([gcc, "-shared", "-fPIC", "-O2", "-o", str(out), str(STANDIN)], check=True)
    return str(out)


@pytest.fixture(scope="session")
def key_pairs(tmp_path_factory: pytest.TempPathFactory) -> dict[int, tuple[rsa.RSAPrivateKey, Path]]:
    """RSA-2048 key pairs for publickey_ver 3 and 4, the private keys as PEM files."""
    folder = tmp_path_factory.mktemp("keys")
    pairs = {}
    for version in (3, 4):
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        path = folder / f"v{version}.pem"
        pem = key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL, serialization.NoEncryption()
        )
        path.write_bytes(pem)
        pairs[version] = (key, path)
    return pairs


class ArchiveServer:
    """What Tencent holds for the corp: the recorded batches the stand-in serves, encrypted as the real ones are."""

    def __init__(self, lib: str, path: Path, keys: dict[int, tuple[rsa.RSAPrivateKey, Path]]) -> None:
        self.path = path
        self.keys = keys
        self.seq = 0
        path.write_text("")
        ctypes.CDLL(lib).StandinLoad(str(path).encode())  # the config call: serve this file, reset faults

    def add(self, record: dict[str, Any], version: int = 3, encrypt_for: int | None = None) -> int:
        """Record one decrypted message; ``encrypt_for`` another key version than the one announced."""
        self.seq += 1
        random_key = secrets.token_hex(16).encode()
        public = self.keys[encrypt_for or version][0].public_key() if (encrypt_for or version) in self.keys else None
        if public is None:  # a version we hold no key pair for: encrypt with a fresh one
            public = rsa.generate_private_key(public_exponent=65537, key_size=2048).public_key()
        # Half a UTF-16 pair in a text goes out as JSON's escape for it (``\\ud800``), as any JSON writer sends it.
        plain = b"WWFS:" + json.dumps(record, ensure_ascii=False).encode("utf-8", "backslashreplace")
        cipher = bytes(b ^ random_key[i % len(random_key)] for i, b in enumerate(plain))
        item = {
            "seq": self.seq,
            "msgid": record["msgid"],
            "publickey_ver": version,
            "encrypt_random_key": base64.b64encode(public.encrypt(random_key, padding.PKCS1v15())).decode(),
            "encrypt_chat_msg": base64.b64encode(cipher).decode(),
        }
        with self.path.open("a") as f:
            f.write(json.dumps(item) + "\n")
        return self.seq

    def fault(self, errcode: int) -> None:
        with self.path.open("a") as f:
            f.write(json.dumps({"errcode": errcode}) + "\n")


def chat(i: int, sender: str, to: str, text: str = "", **extra: Any) -> dict[str, Any]:
    record: dict[str, Any] = {
        "msgid": f"arc{i:03d}",
        "action": "send",
        "from": sender,
        "tolist": [to],
        "roomid": "",
        "msgtime": int((T0 + timedelta(minutes=i)).timestamp() * 1000),
        "msgtype": "text",
        "text": {"content": text},
    }
    record.update(extra)
    return record


@pytest.fixture
def archive_settings(
    make_settings: Callable[..., Any], standin_lib: str, key_pairs: dict[int, Any]
) -> Callable[..., Any]:
    def make(**wecom: Any) -> Any:
        return make_settings(
            wecom={
                "archive_sdk_path": standin_lib,
                "archive_secret": "archive-secret",
                "archive_private_keys": {v: str(p) for v, (_, p) in key_pairs.items()},
                "archive_pull_interval_seconds": 0,
                "archive_retry_backoff_seconds": 0,
                **wecom,
            }
        )

    return make


@pytest.fixture
def server(standin_lib: str, key_pairs: dict[int, Any], tmp_path: Path) -> ArchiveServer:
    return ArchiveServer(standin_lib, tmp_path / "recorded.jsonl", key_pairs)


def notify_xml() -> str:
    return (
        f"<xml><ToUserName><![CDATA[{WECOM.corp_id}]]></ToUserName><FromUserName><![CDATA[sys]]></FromUserName>"
        f"<CreateTime>{int(T0.timestamp()) + secrets.randbelow(10**6)}</CreateTime><MsgType><![CDATA[event]]></MsgType>"
        f"<Event><![CDATA[msgaudit_notify]]></Event><AgentID>{WECOM.agent_id}</AgentID></xml>"
    )


def puller(app: Any) -> ArchivePuller:
    found: ArchivePuller = app[WECOM_ARCHIVE]
    return found


async def test_wecom_notifies_and_the_conversation_lands_in_the_profile_once(
    archive_settings: Any, start_app: Any, server: ArchiveServer, wecom_sim: Any
) -> None:
    client = await start_app(archive_settings())
    await load_demo(client.app)
    huawei = await Customer.get(name="华为技术有限公司")
    await Customer.filter(id=huawei.id).update(last_followup_at=T0 - timedelta(days=1))
    server.add(chat(1, "wmHW001", "zhangsan", "请问耐高温材料的交期？"))
    server.add(chat(2, "zhangsan", "wmHW001", "下周三发货，耐高温材料共 20 吨"))
    server.add(
        chat(3, "wmHW001", "zhangsan", msgtype="image", image={"md5sum": "abc", "filesize": 1234, "sdkfileid": "F1"})
    )
    server.add(chat(4, "wmBYD01", "zhangsan", "", roomid="wrRoom1", tolist=["zhangsan", "lisi"]))
    server.add(chat(5, "zhangsan", "lisi", "内部讨论：华为的价格", roomid="wrRoom1"))

    assert (await post_wecom(client, notify_xml())).status == 200
    await deliver_all(client.app)
    assert wecom_sim.texts_to("sys") == []  # the platform's own event gets no answer

    rows = {m.msgid: m for m in await Message.filter(to_bot=False, msgid__startswith="arc")}
    assert sorted(rows) == ["arc001", "arc002", "arc003", "arc004", "arc005"]
    assert {rows[i].customer_id for i in ("arc001", "arc002", "arc003")} == {huawei.id}
    assert rows["arc005"].customer_id == rows["arc004"].customer_id  # the room belongs to 比亚迪
    assert rows["arc003"].msgtype == "image"
    assert rows["arc003"].payload["raw"]["image"]["sdkfileid"] == "F1"
    assert rows["arc001"].staff_id == rows["arc002"].staff_id is not None
    await huawei.refresh_from_db()
    assert huawei.last_followup_at == T0 + timedelta(minutes=2)  # the rep's reply counts as contact
    assert await ArchiveCursor.get(source=f"wecom:{WECOM.corp_id}").values_list("seq", flat=True) == 5

    # WeCom notifies again and the periodic pull runs too: nothing doubles
    await post_wecom(client, notify_xml())
    await deliver_all(client.app)
    summary = await puller(client.app).pull()
    assert (summary.archived, summary.failures) == (0, 0)
    assert await Message.filter(msgid__startswith="arc").count() == 5
    # an older reply arriving late does not move the last contact back
    old = chat(6, "zhangsan", "wmHW001", "补发：上月的报价")
    old["msgtime"] = int((T0 - timedelta(hours=5)).timestamp() * 1000)
    server.add(old)
    assert (await puller(client.app).pull()).archived == 1
    await huawei.refresh_from_db()
    assert huawei.last_followup_at == T0 + timedelta(minutes=2)
    found = await search.search(connections.get("default"), "耐高温材料", staff=None, customer_id=huawei.id)
    assert [h.msgid for h in found.hits] == ["demo-1", "demo-0", "arc002", "arc001"]  # the demo's are newer


async def test_unknown_key_versions_and_wrong_keys_are_recorded_and_the_admin_is_told(
    archive_settings: Any, start_app: Any, server: ArchiveServer, wecom_sim: Any
) -> None:
    client = await start_app(archive_settings())
    await load_demo(client.app)
    server.add(chat(1, "wmHW001", "zhangsan", "第一条"), version=3)
    server.add(chat(2, "wmHW001", "zhangsan", "新密钥版本"), version=7)  # no key 7 configured
    server.add(chat(3, "wmHW001", "zhangsan", "错的密钥"), version=3, encrypt_for=4)  # announced 3, really 4
    server.add(chat(4, "wmHW001", "zhangsan", "第四条用新版本 4"), version=4)

    summary = await puller(client.app).pull()
    await deliver_all(client.app)

    assert (summary.archived, summary.failures, summary.seq) == (2, 2, 4)
    assert sorted(await Message.filter(msgid__startswith="arc").values_list("msgid", flat=True)) == [
        "arc001",
        "arc004",
    ]
    failures = {f.seq: f for f in await ArchiveFailure.all()}
    assert sorted(failures) == [2, 3]
    assert (failures[2].code, failures[2].key_version, failures[2].msgid) == (10007, 7, "arc002")
    assert "publickey_ver 7" in failures[2].reason
    assert failures[3].key_version == 3 and "wrong private key" in failures[3].reason
    [notice] = wecom_sim.texts_to("admin")
    assert "2 条消息未能存档" in notice and "archive_private_keys" in notice
    # the cursor moved past the recorded failures: the next pull does not repeat them
    again = await puller(client.app).pull()
    assert (again.archived, again.failures) == (0, 0)
    assert await ArchiveFailure.all().count() == 2


async def test_a_record_holding_half_a_utf16_pair_is_recorded_and_the_rest_archived(
    archive_settings: Any, start_app: Any, server: ArchiveServer
) -> None:
    """No column can store half of a UTF-16 pair: such a record is a failed item like an undecryptable one, and
    the messages around it are archived (it used to fail the batch's write, and every pull after it again)."""
    client = await start_app(archive_settings())
    await load_demo(client.app)
    server.add(chat(1, "wmHW001", "zhangsan", "第一条"))
    server.add(chat(2, "wmHW001", "zhangsan", "半个\ud800字符"))
    server.add(chat(3, "wmHW001", "zhangsan", "第三条"))

    summary = await puller(client.app).pull()

    assert (summary.archived, summary.failures, summary.seq) == (2, 1, 3)
    assert sorted(await Message.filter(msgid__startswith="arc").values_list("msgid", flat=True)) == [
        "arc001",
        "arc003",
    ]
    [failure] = await ArchiveFailure.all()
    assert (failure.seq, failure.msgid) == (2, "arc002") and "surrogate" in failure.reason
    again = await puller(client.app).pull()
    assert (again.archived, again.failures) == (0, 0)


async def test_network_parse_and_system_errors_are_retried(
    archive_settings: Any, start_app: Any, server: ArchiveServer
) -> None:
    client = await start_app(archive_settings())
    server.fault(10001)
    server.fault(10002)
    server.fault(10003)
    server.add(chat(1, "wmX1", "zhangsan", "你好"))
    summary = await puller(client.app).pull()
    assert (summary.archived, summary.error) == (1, "")


async def test_an_sdk_error_that_persists_stops_the_pull_without_moving_the_cursor(
    archive_settings: Any, start_app: Any, server: ArchiveServer
) -> None:
    client = await start_app(archive_settings(archive_retries=1))
    server.fault(10001)
    server.fault(10001)  # still failing after the one retry
    server.add(chat(1, "wmX1", "zhangsan", "你好"))
    summary = await puller(client.app).pull()
    assert summary.error == "GetChatData returned 10001"
    assert await Message.filter(msgid="arc001").count() == 0
    assert await ArchiveCursor.all().count() == 0
    assert (await puller(client.app).pull()).archived == 1  # the faults are over: the same range arrives


async def test_a_crash_between_pull_and_commit_loses_nothing_and_doubles_nothing(
    archive_settings: Any, start_app: Any, server: ArchiveServer
) -> None:
    client = await start_app(archive_settings(archive_batch_limit=2))
    for i in range(1, 6):
        server.add(chat(i, "wmHW001", "zhangsan", f"消息{i}"))
    first = puller(client.app)
    fetched: list[int] = []

    def crash_on_second_batch(count: int) -> None:
        fetched.append(count)
        if len(fetched) == 2:
            raise SystemExit("killed after GetChatData, before the commit")

    first.on_fetched = crash_on_second_batch
    with pytest.raises(SystemExit):
        await first.pull()
    assert sorted(await Message.filter(msgid__startswith="arc").values_list("msgid", flat=True)) == [
        "arc001",
        "arc002",
    ]
    assert await ArchiveCursor.get(source=f"wecom:{WECOM.corp_id}").values_list("seq", flat=True) == 2

    # the process restarts: a new puller (new SDK handle) continues from the committed cursor
    rerun = ArchivePuller(client.app[BOT], client.app[BOT].settings.wecom)
    summary = await rerun.pull()
    rerun.close()
    assert summary.archived == 3
    msgids = await Message.filter(msgid__startswith="arc").order_by("sent_at").values_list("msgid", flat=True)
    assert msgids == ["arc001", "arc002", "arc003", "arc004", "arc005"]


async def test_a_recalled_message_is_kept_but_no_longer_found(
    archive_settings: Any, start_app: Any, server: ArchiveServer
) -> None:
    client = await start_app(archive_settings())
    await load_demo(client.app)
    server.add(chat(1, "zhangsan", "wmHW001", "给您特价 9.5 折"))
    server.add(chat(2, "zhangsan", "wmHW001", "特价仅限本月"))
    recall = chat(3, "zhangsan", "wmHW001", msgtype="revoke", action="recall", revoke={"pre_msgid": "arc001"})
    server.add(recall)
    await puller(client.app).pull()

    found = await search.search(connections.get("default"), "特价", staff=None, limit=0)
    assert [h.msgid for h in found.hits] == ["arc002"]
    recalled = await Message.get(msgid="arc001")
    assert recalled.text == "给您特价 9.5 折" and recalled.payload["recalled"] is True
    assert (await Message.get(msgid="arc003")).msgtype == "revoke"


def test_slices_are_read_by_length_not_as_c_strings(standin_lib: str) -> None:
    """DecryptData output with a NUL byte inside comes back whole."""
    from integrations.wecom.archive import FinanceSdk, SdkError

    sdk = FinanceSdk(standin_lib)
    key = b"0123456789abcdef"
    plain = b"WWFS:" + b'{"a":"x\x00y"}'
    cipher = base64.b64encode(bytes(b ^ key[i % len(key)] for i, b in enumerate(plain)))
    assert sdk.decrypt_data(key, cipher) == b'{"a":"x\x00y"}'
    with pytest.raises(SdkError) as wrong:
        sdk.decrypt_data(b"another key 1234", cipher)
    assert wrong.value.code == 10006
    with pytest.raises(SdkError):
        sdk.get_chat_data(0, 10)  # not initialized
    sdk.init("ww-corp", "secret")
    sdk.close()
