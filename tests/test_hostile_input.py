"""Hostile input at the webhooks costs nothing and changes nothing: XML bombs, external entities, oversized, deeply
nested or wrongly encoded bodies, validly signed junk (bad padding, an absurd CreateTime), stale or forged
timestamps, and DingTalk JSON that is too deep or not UTF-8 each get a 4xx, write nothing, and leave one warning
line without a traceback. ``/healthz`` answers 503 at once when the database is locked."""

from __future__ import annotations

import base64
import json
import logging
import sqlite3
import time
from typing import Any

import pytest
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from models.messages import Message
from models.seen import SeenSignature
from tests.conftest import PG_URL
from tests.helpers import WECOM, post_dingtalk, post_wecom, signed_callback, text_xml

BILLION_LAUGHS = (
    '<?xml version="1.0"?><!DOCTYPE xml [<!ENTITY a "lollollollollollollollollollol">'
    + "".join(f'<!ENTITY {chr(98 + i)} "{("&" + chr(97 + i) + ";") * 10}">' for i in range(9))
    + "]><xml><Encrypt>&j;</Encrypt></xml>"
)
EXTERNAL_ENTITY = (
    '<?xml version="1.0"?><!DOCTYPE xml [<!ENTITY x SYSTEM "file:///etc/passwd">]><xml><Encrypt>&x;</Encrypt></xml>'
)


def deep(levels: int, inner: str = "") -> str:
    return "<xml>" + "<a>" * levels + inner + "</a>" * levels + "</xml>"


def envelope(encrypt: str, at: float | None = None) -> tuple[dict[str, str], str]:
    """Query and body for an ``Encrypt`` value of our choosing, signed as WeCom signs."""
    timestamp, nonce = str(int(time.time() if at is None else at)), "1597212914"
    query = {"msg_signature": WECOM.crypto.sign(timestamp, nonce, encrypt), "timestamp": timestamp, "nonce": nonce}
    return query, f"<xml><ToUserName><![CDATA[{WECOM.corp_id}]]></ToUserName><Encrypt>{encrypt}</Encrypt></xml>"


def raw_ciphertext(plain: bytes) -> str:
    """``plain`` AES-encrypted with the corp's key exactly as given: no framing, no padding added."""
    key = base64.b64decode(WECOM.encoding_aes_key + "=")
    encryptor = Cipher(algorithms.AES(key), modes.CBC(key[:16])).encryptor()
    return base64.b64encode(encryptor.update(plain) + encryptor.finalize()).decode()


def framed(message: bytes, padding: bytes) -> bytes:
    """WeCom's plaintext frame around ``message`` for our corp, followed by ``padding`` as given."""
    return b"r" * 16 + len(message).to_bytes(4, "big") + message + WECOM.corp_id.encode() + padding


def refused_once(caplog: pytest.LogCaptureFixture, reason: str = "") -> None:
    """Exactly one warning about the refused request, containing ``reason``; no error and no traceback anywhere."""
    ours = [r for r in caplog.records if r.name.startswith("integrations.") and r.levelno >= logging.WARNING]
    assert len(ours) == 1, [r.getMessage() for r in ours]
    assert reason in ours[0].getMessage()
    assert ours[0].levelno == logging.WARNING
    assert not [r for r in caplog.records if r.exc_info or r.levelno >= logging.ERROR]
    caplog.clear()


async def nothing_written() -> None:
    assert await Message.all().count() == 0
    assert await SeenSignature.all().count() == 0


# -- WeCom: before authentication ----------------------------------------------------------------------------------


async def test_a_billion_laughs_envelope_is_refused_without_expanding(
    make_settings: Any, start_app: Any, caplog: pytest.LogCaptureFixture
) -> None:
    client = await start_app(make_settings())
    query, _ = signed_callback(text_xml("zhangsan", "帮助", 1))
    for body in (BILLION_LAUGHS, BILLION_LAUGHS.replace("<xml>", "<xml><ToUserName>x</ToUserName>")):
        resp = await client.post("/wecom/callback", params=query, data=body.encode())
        assert resp.status == 400
        refused_once(caplog, "DTDForbidden")  # refused at the DOCTYPE, before a single entity is defined
    await nothing_written()


async def test_an_external_entity_is_refused(
    make_settings: Any, start_app: Any, caplog: pytest.LogCaptureFixture
) -> None:
    client = await start_app(make_settings())
    query, _ = signed_callback(text_xml("zhangsan", "帮助", 1))
    resp = await client.post("/wecom/callback", params=query, data=EXTERNAL_ENTITY.encode())
    assert resp.status == 400
    assert "root:" not in await resp.text()
    refused_once(caplog, "DTDForbidden")
    await nothing_written()


async def test_oversized_envelopes_are_refused(
    make_settings: Any, start_app: Any, caplog: pytest.LogCaptureFixture
) -> None:
    client = await start_app(make_settings(server={"max_body_bytes": 1024 * 1024}))
    query, _ = signed_callback(text_xml("zhangsan", "帮助", 1))
    for size in (300 * 1024, 2 * 1024 * 1024):  # over the envelope's limit, then over the server's too
        resp = await client.post(
            "/wecom/callback", params=query, data=b"<xml><Encrypt>" + b"A" * size + b"</Encrypt></xml>"
        )
        assert resp.status == 413, size
        refused_once(caplog, "too large")
    await nothing_written()


async def test_deep_nesting_is_refused(make_settings: Any, start_app: Any, caplog: pytest.LogCaptureFixture) -> None:
    client = await start_app(make_settings())
    query, _ = signed_callback(text_xml("zhangsan", "帮助", 1))
    for levels in (10, 15_000):
        resp = await client.post("/wecom/callback", params=query, data=deep(levels, "<Encrypt>QUJD</Encrypt>"))
        assert resp.status == 400, levels
        refused_once(caplog, "nested deeper")
    # the same inside a validly signed, encrypted message
    resp = await post_wecom(client, deep(1000))
    assert resp.status == 400
    refused_once(caplog, "nested deeper")
    await nothing_written()


async def test_bodies_that_are_not_utf8_are_refused(
    make_settings: Any, start_app: Any, caplog: pytest.LogCaptureFixture
) -> None:
    client = await start_app(make_settings())
    query, body = signed_callback(text_xml("zhangsan", "你好", 1))
    gbk = body.replace("<xml>", "<xml><Note>中文</Note>").encode("gbk")
    declared = [f'<?xml version="1.0" encoding="{name}"?>' + body for name in ("GBK", "x-unknown", "UTF-16")]
    cases: list[tuple[bytes, dict[str, str]]] = [
        (gbk, {}),
        (b"\xff\xfe" + body.encode("utf-16-le"), {}),
        (gbk, {"Content-Type": "text/xml; charset=x-unknown"}),
        *((d.encode(), {}) for d in declared),
    ]
    for data, headers in cases:
        resp = await client.post("/wecom/callback", params=query, data=data, headers=headers)
        assert resp.status == 400, data[:60]
        refused_once(caplog)
    # a message inside a validly signed envelope that declares another encoding
    resp = await post_wecom(client, '<?xml version="1.0" encoding="GBK"?>' + deep(1))
    assert resp.status == 400
    refused_once(caplog, "encoding")
    await nothing_written()


@pytest.mark.parametrize(
    ("offset", "timestamp"),
    [(-5 * 86400, None), (365 * 86400, None), (-310, None), (310, None), (0, "abc"), (0, ""), (0, "-1"), (0, "1e9")],
)
async def test_timestamps_outside_the_window_are_forbidden(
    make_settings: Any, start_app: Any, caplog: pytest.LogCaptureFixture, offset: int, timestamp: str | None
) -> None:
    client = await start_app(make_settings())
    query, body = signed_callback(text_xml("zhangsan", "帮助", 1), at=time.time() + offset)
    if timestamp is not None:  # signed over the bad value, so that only the value is wrong
        query = {
            **query,
            "timestamp": timestamp,
            "msg_signature": WECOM.crypto.sign(timestamp, query["nonce"], _encrypt(body)),
        }
    resp = await client.post("/wecom/callback", params=query, data=body.encode())
    assert resp.status == 403
    refused_once(caplog, "timestamp")
    await nothing_written()


async def test_signatures_and_timestamps_that_are_not_ascii_are_forbidden(
    make_settings: Any, start_app: Any, caplog: pytest.LogCaptureFixture
) -> None:
    client = await start_app(make_settings())
    query, body = signed_callback(text_xml("zhangsan", "帮助", 1))
    full_width = "".join(chr(ord(c) + 0xFEE0) for c in query["timestamp"])  # digits, to str.isdigit
    for raw in (f"msg_signature=签名&timestamp={query['timestamp']}", "msg_signature=%ff%fe&timestamp=1"):
        resp = await client.post(f"/wecom/callback?{raw}&nonce={query['nonce']}", data=body.encode())
        assert resp.status == 403, raw
        refused_once(caplog)
    resp = await client.post("/wecom/callback", params={**query, "timestamp": full_width}, data=body.encode())
    assert resp.status == 403
    refused_once(caplog, "timestamp")
    await nothing_written()


def _encrypt(body: str) -> str:
    return body.split("<Encrypt><![CDATA[")[1].split("]]>")[0]


async def test_the_window_edges_and_the_configured_window(make_settings: Any, start_app: Any) -> None:
    client = await start_app(make_settings(wecom={"callback_window_seconds": 3600}))
    for i, offset in enumerate((-3000, 3000), start=1):  # inside an hour, outside the default five minutes
        query, body = signed_callback(text_xml("zhangsan", "帮助", i), at=time.time() + offset)
        assert (await client.post("/wecom/callback", params=query, data=body.encode())).status == 200
    assert await Message.all().count() == 2


# -- WeCom: validly signed junk ---------------------------------------------------------------------------------------


async def test_validly_signed_ciphertexts_with_bad_padding_are_refused(
    make_settings: Any, start_app: Any, caplog: pytest.LogCaptureFixture
) -> None:
    client = await start_app(make_settings())
    message = text_xml("zhangsan", "帮助", 1).encode()
    unpadded = framed(message, b"")
    fill = 32 - len(unpadded) % 32
    bad = [
        framed(message, bytes([fill]) * (fill - 1) + b"\x00"),  # padding byte 0
        framed(message, bytes([fill - 1]) * (fill - 1) + bytes([fill])),  # inconsistent bytes
        framed(message, b"\x21" * fill) if fill < 32 else framed(message, b"\x21" * 32),  # 33: beyond a block
        b"\x00" * 32,  # all zero
    ]
    for plain in bad:
        assert len(plain) % 32 == 0
        query, body = envelope(raw_ciphertext(plain))
        resp = await client.post("/wecom/callback", params=query, data=body)
        assert resp.status == 400
        refused_once(caplog, "padding")
    # well padded, but the length field points beyond the plaintext
    plain = b"r" * 16 + (10**6).to_bytes(4, "big") + b"x" * 10
    query, body = envelope(raw_ciphertext(plain + bytes([2]) * 2))
    assert (await client.post("/wecom/callback", params=query, data=body)).status == 400
    refused_once(caplog, "length")
    await nothing_written()


@pytest.mark.parametrize("created", ["100000000000000000000", "abc", "-5", "4294967296", "1.5"])
async def test_a_validly_signed_absurd_create_time_is_refused(
    make_settings: Any, start_app: Any, caplog: pytest.LogCaptureFixture, created: str
) -> None:
    client = await start_app(make_settings())
    xml = text_xml("zhangsan", "帮助", 1).replace(f"<CreateTime>{int(time.time())}</CreateTime>", "")
    xml = xml.replace("</xml>", f"<CreateTime>{created}</CreateTime></xml>")
    resp = await post_wecom(client, xml)
    assert resp.status == 400
    refused_once(caplog, "CreateTime")
    await nothing_written()


async def test_a_billion_laughs_inside_a_signed_message_is_refused(
    make_settings: Any, start_app: Any, caplog: pytest.LogCaptureFixture
) -> None:
    client = await start_app(make_settings())
    resp = await post_wecom(client, BILLION_LAUGHS)
    assert resp.status == 400
    refused_once(caplog, "DTDForbidden")
    await nothing_written()


# -- DingTalk ---------------------------------------------------------------------------------------------------------


async def all_refused(
    client: Any, sim: Any, bodies: list[bytes], caplog: pytest.LogCaptureFixture, reason: str
) -> None:
    """Each of ``bodies``, freshly signed, gets a 400 and one warning with ``reason``; nothing is written."""
    for body in bodies:
        resp = await post_dingtalk(client, body, sim.app_secret, sim.fresh_timestamp())
        assert resp.status == 400
        refused_once(caplog, reason)
    await nothing_written()


async def test_dingtalk_json_nested_deep_is_refused(
    make_settings: Any, start_app: Any, dingtalk_sim: Any, caplog: pytest.LogCaptureFixture
) -> None:
    client = await start_app(make_settings(dingtalk=dingtalk_sim.settings()), clock=dingtalk_sim.clock)
    good = dingtalk_sim.message("ding_zhangsan", "帮助")
    bodies = [
        b"[" * 100_000 + b"]" * 100_000,
        json.dumps({**good, "extra": "X"}).replace('"X"', "[" * 100_000 + "]" * 100_000).encode(),
        json.dumps({**good, "extra": [[[[[[[[["too deep"]]]]]]]]]}).encode(),
    ]
    await all_refused(client, dingtalk_sim, bodies, caplog, "nested deeper")


async def test_dingtalk_bodies_that_are_not_utf8_are_refused(
    make_settings: Any, start_app: Any, dingtalk_sim: Any, caplog: pytest.LogCaptureFixture
) -> None:
    client = await start_app(make_settings(dingtalk=dingtalk_sim.settings()), clock=dingtalk_sim.clock)
    text = json.dumps(dingtalk_sim.message("ding_zhangsan", "跟进 华为"), ensure_ascii=False)
    bodies = [text.encode("gbk"), text.encode("utf-16"), b'{"msgId": "\xff"}']
    await all_refused(client, dingtalk_sim, bodies, caplog, "UTF-8")


async def test_a_lone_surrogate_is_refused_where_it_arrives(
    make_settings: Any, start_app: Any, dingtalk_sim: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """Half of a UTF-16 pair (``\\ud800``) is valid JSON syntax, but no column can store it: the body is refused
    as malformed, before anything is written, instead of failing the write with a server error."""
    client = await start_app(make_settings(dingtalk=dingtalk_sim.settings()), clock=dingtalk_sim.clock)
    good = dingtalk_sim.message("ding_zhangsan", "帮助")
    bodies = [
        json.dumps({**good, "text": {"content": "帮助\ud800"}}).encode(),
        json.dumps({**good, "senderNick": "\udfff张三"}).encode(),
    ]
    assert all(b"\\ud" in body for body in bodies)
    await all_refused(client, dingtalk_sim, bodies, caplog, "not JSON")
    # the same message without the half pair is taken
    resp = await post_dingtalk(
        client, json.dumps(good).encode(), dingtalk_sim.app_secret, dingtalk_sim.fresh_timestamp()
    )
    assert resp.status == 200


# -- /healthz ---------------------------------------------------------------------------------------------------------


async def test_healthz_says_the_database_is_locked_while_another_process_holds_it(
    make_settings: Any, start_app: Any, database_url: str
) -> None:
    if PG_URL:
        pytest.skip("locking the database file is SQLite's; PostgreSQL has no such lock to hold")
    client = await start_app(make_settings(), run_dispatcher=False, run_scheduler=False)
    assert (await client.get("/healthz")).status == 200
    other = sqlite3.connect(database_url.removeprefix("sqlite://"), isolation_level=None)
    try:
        other.execute("BEGIN EXCLUSIVE")
        resp = await client.get("/healthz")
        assert resp.status == 503
        assert await resp.json() == {"status": "error", "database": "locked"}
    finally:
        other.execute("ROLLBACK")
        other.close()
    assert await (await client.get("/healthz")).json() == {"status": "ok", "database": "ok"}
