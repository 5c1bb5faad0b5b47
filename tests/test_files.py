"""Files and pictures reach people through the one outbox: on WeCom as an uploaded image or file message after the
text (uploaded once, sent once, also when a send fails or its answer is lost), on DingTalk as a signed, expiring
download link that serves the bytes (and nothing to a forged or expired link), at the terminal as a saved file."""

from __future__ import annotations

import asyncio
import struct
import zlib
from datetime import timedelta
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

from bot.files import store_file, sweep
from bot.keys import CLOCK, OUTBOX
from bot.types import Attachment, Reply
from models.files import StoredFile
from models.outbox import OutboxMessage, OutboxStatus
from models.staff import Role
from tests.driver import ConsoleChat
from tests.helpers import deliver_all, settle, staff_member


def png(width: int = 4, height: int = 3) -> bytes:
    """A real (tiny, grey) PNG image."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    rows = b"".join(b"\x00" + b"\x80" * width for _ in range(height))
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b"")


def uploads_of(sim: Any) -> list[dict[str, Any]]:
    return [c for c in sim.calls if c["endpoint"] == "media/upload"]


async def test_a_chart_reaches_wecom_as_its_text_then_an_uploaded_image(
    make_settings: Any, start_app: Any, wecom_sim: Any
) -> None:
    client = await start_app(make_settings())
    manager = await staff_member(name="王经理", wecom="wangjl", role=Role.MANAGER)
    picture = png()
    chart = await store_file("本周漏斗.png", picture, "image/png")
    await client.app[OUTBOX].push(manager, Reply("**本周漏斗**", "markdown", attachments=(chart,)), "test:chart")
    await deliver_all(client.app)

    [text, image] = wecom_sim.messages_to("wangjl")
    assert (text["msgtype"], text["markdown"]["content"]) == ("markdown", "**本周漏斗**")
    assert image["msgtype"] == "image"
    [upload] = wecom_sim.media_to("wangjl")
    assert (upload.type, upload.data, upload.content_type) == ("image", picture, "image/png")
    assert upload.filename == "本周漏斗.png"
    row = await OutboxMessage.get(dedupe_key="test:chart")
    assert row.status == OutboxStatus.SENT


async def test_a_failed_image_send_is_retried_without_a_second_upload_or_a_second_text(
    make_settings: Any, start_app: Any, wecom_sim: Any
) -> None:
    client = await start_app(make_settings())
    rep = await staff_member(name="张三", wecom="zhangsan", role=Role.REP)
    chart = await store_file("趋势.png", png(), "image/png")
    # The text goes out, then WeCom is busy for every quick retry of the image message.
    wecom_sim.fail_next(3, errcode=-1, endpoint="message/send", skip=1)
    await client.app[OUTBOX].push(rep, Reply("本月趋势如下", attachments=(chart,)), "test:retry")
    await deliver_all(client.app)

    assert wecom_sim.texts_to("zhangsan") == ["本月趋势如下"]
    assert [m["msgtype"] for m in wecom_sim.messages_to("zhangsan")] == ["text", "image"]
    assert len(uploads_of(wecom_sim)) == 1
    row = await OutboxMessage.get(dedupe_key="test:retry")
    assert row.status == OutboxStatus.SENT and row.attempts == 2


async def test_an_image_whose_answer_was_lost_is_shown_once(make_settings: Any, start_app: Any, wecom_sim: Any) -> None:
    client = await start_app(make_settings(wecom={"request_timeout_seconds": 0.3, "request_retries": 2}))
    rep = await staff_member(name="张三", wecom="zhangsan", role=Role.REP)
    chart = await store_file("趋势.png", png(), "image/png")
    # WeCom shows the image, but its answer comes after the bot stopped waiting: the repeat is checked and dropped.
    wecom_sim.lose_answers_next(1, seconds=1.0, endpoint="message/send")
    await client.app[OUTBOX].push(rep, Reply(attachments=(chart,)), "test:lost")
    await deliver_all(client.app)

    assert [m["msgtype"] for m in wecom_sim.messages_to("zhangsan")] == ["image"]
    assert wecom_sim.dropped_repeats() == 1
    assert len(uploads_of(wecom_sim)) == 1


async def test_a_spreadsheet_goes_to_wecom_as_a_file_message(
    make_settings: Any, start_app: Any, wecom_sim: Any
) -> None:
    client = await start_app(make_settings())
    rep = await staff_member(name="张三", wecom="zhangsan", role=Role.REP)
    data = b"PK\x03\x04 not really a workbook, but bytes all the same"
    sheet = await store_file("我的客户.xlsx", data)
    assert sheet.kind == "file"
    await client.app[OUTBOX].push(rep, Reply("已导出", attachments=(sheet,)), "test:file")
    await deliver_all(client.app)

    [upload] = wecom_sim.media_to("zhangsan")
    assert (upload.type, upload.filename, upload.data) == ("file", "我的客户.xlsx", data)
    assert upload.content_type == "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"


async def test_dingtalk_gets_a_signed_link_that_serves_the_file_and_refuses_forgeries(
    make_settings: Any, start_app: Any, dingtalk_sim: Any
) -> None:
    settings = make_settings(dingtalk=dingtalk_sim.settings(), server={"public_url": "https://crm.example.com"})
    client = await start_app(settings, clock=dingtalk_sim.clock, run_dispatcher=False, run_scheduler=False)
    rep = await staff_member(name="张三", dingtalk="ding_zhangsan", role=Role.REP)
    now = dingtalk_sim.clock.now()
    data = b"name,phone\n\xe5\x8d\x8e\xe4\xb8\xba,1\n"
    sheet = await store_file("我的客户.csv", data, "text/csv; charset=utf-8", now=now)
    chart = await store_file("漏斗.png", png(), now=now)
    await client.app[OUTBOX].push(rep, Reply("已导出", attachments=(sheet, chart)), "test:ding")
    await settle(client.app)

    [message] = dingtalk_sim.delivered_to("ding_zhangsan")
    assert message.msgtype == "sampleMarkdown"
    assert message.text.startswith("已导出")
    [(name, file_url), (alt, image_url)] = message.links
    assert (name, alt) == ("我的客户.csv", "图表")
    assert file_url.startswith("https://crm.example.com/files/")
    assert f"![图表]({image_url})" in message.text

    path = _local(file_url)
    resp = await client.get(path)
    assert resp.status == 200
    assert await resp.read() == data
    assert resp.headers["Cache-Control"] == "no-store"
    assert resp.headers["X-Content-Type-Options"] == "nosniff"
    assert resp.headers["Content-Type"].startswith("text/csv")
    assert "filename*=UTF-8''%E6%88%91%E7%9A%84%E5%AE%A2%E6%88%B7.csv" in resp.headers["Content-Disposition"]
    assert resp.headers["Content-Disposition"].startswith("attachment;")
    picture = await client.get(_local(image_url))
    assert picture.status == 200 and picture.headers["Content-Disposition"].startswith("inline;")

    query = parse_qs(urlsplit(path).query)
    other = f"/files/{chart.file_id}?" + urlencode({"exp": query["exp"][0], "sig": query["sig"][0]})
    later = f"/files/{sheet.file_id}?" + urlencode({"exp": int(query["exp"][0]) + 3600, "sig": query["sig"][0]})
    flipped = path[:-1] + ("0" if path[-1] != "0" else "1")
    for forged in (other, later, flipped, f"/files/{sheet.file_id}", f"/files/{sheet.file_id}?exp=x&sig=y"):
        refused = await client.get(forged)
        assert refused.status == 403, forged
        assert await refused.read() != data

    dingtalk_sim.clock.advance(timedelta(hours=25))  # past [files] link_hours
    assert (await client.get(path)).status == 403


async def test_files_past_their_expiry_are_swept_and_their_links_say_so(
    make_settings: Any, start_app: Any, dingtalk_sim: Any
) -> None:
    settings = make_settings(dingtalk=dingtalk_sim.settings(), files={"link_hours": 100})
    client = await start_app(settings, clock=dingtalk_sim.clock, run_dispatcher=False, run_scheduler=False)
    rep = await staff_member(name="张三", dingtalk="ding_zhangsan", role=Role.REP)
    now = client.app[CLOCK].now()
    sheet = await store_file("a.xlsx", b"123456789", now=now, keep_hours=72)
    kept = await store_file("b.xlsx", b"123456789", now=now + timedelta(hours=48), keep_hours=72)
    await client.app[OUTBOX].push(rep, Reply(attachments=(sheet,)), "test:sweep")
    await settle(client.app)
    [(_, url)] = dingtalk_sim.delivered_to("ding_zhangsan")[0].links

    dingtalk_sim.clock.advance(timedelta(hours=73))
    assert await sweep(client.app[CLOCK].now()) == 1
    assert await StoredFile.filter(id=kept.file_id).exists()
    assert (await client.get(_local(url))).status == 410


async def test_the_terminal_saves_the_file_and_prints_its_path(
    make_settings: Any, start_app: Any, tmp_path: Path
) -> None:
    client = await start_app(make_settings(files={"console_dir": str(tmp_path / "files")}), run_dispatcher=False)
    manager = await staff_member(name="王经理", role=Role.MANAGER)
    data = b"PK\x03\x04 workbook bytes"
    sheet = await store_file("团队客户.xlsx", data)
    await client.app[OUTBOX].push(manager, Reply("已导出团队客户", attachments=(sheet,)), "test:console")

    printed = await ConsoleChat(client.app).say(manager)
    assert "已导出团队客户" in printed
    [line] = [line for line in printed.splitlines() if line.startswith("文件已保存：")]
    saved = Path(line.removeprefix("文件已保存："))
    assert saved.parent == (tmp_path / "files").resolve()
    assert saved.name.endswith("团队客户.xlsx")
    assert await asyncio.to_thread(saved.read_bytes) == data


def test_outbox_rows_written_before_attachments_existed_still_read() -> None:
    old = {"text": "你好"}
    assert Reply.from_payload("text", old) == Reply("你好")
    reply = Reply("见附件", attachments=(Attachment("file", "a.xlsx", 7),))
    assert Reply.from_payload("text", reply.to_payload()) == reply


def _local(url: str) -> str:
    """The path and query of an absolute link, to ask the test server for it."""
    parts = urlsplit(url)
    return f"{parts.path}?{parts.query}"
