"""WeCom callbacks: the official vectors, and what happens to bad or repeated requests."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from bot.clock import Clock
from integrations.wecom.normalize import NotAMessage, _parse_flat, _parse_hardened, parse_xml
from models.messages import Message
from tests.helpers import WECOM, post_wecom, settle, signed_callback, text_xml

# Tencent WXBizMsgCrypt Sample.py (PROTOCOLS.md §1 vector B)
VERIFY = {
    "msg_signature": "012bc692d0a58dd4b10f8dfe5c4ac00ae211ebeb",
    "timestamp": "1476416373",
    "nonce": "47744683",
    "echostr": "fsi1xnbH4yQh0+PJxcOdhhK6TDXkjMyhEPA7xB2TGz6b+g7xyAbEkRxN/3cNXW9qdqjnoVzEtpbhnFyq6SVHyA==",
}
PUSH_QUERY = {
    "msg_signature": "0c3914025cb4b4d68103f6bfc8db550f79dcf48e",
    "timestamp": "1476422779",
    "nonce": "1597212914",
}
PUSH_ENCRYPT = (
    "Kl7kjoSf6DMD1zh7rtrHjFaDapSCkaOnwu3bqLc5tAybhhMl9pFeK8NslNPVdMwmBQTNoW4mY7AIjeLvEl3NyeTkAgGzBhzTtRLNshw2AEew+kkYcD"
    "+Fq72Kt00fT0WnN87hGrW8SqGc+NcT3mu87Ha3dz1pSDi6GaUA6A0sqfde0VJPQbZ9U+3JWcoD4Z5jaU0y9GSh010wsHF8KZD24YhmZH4ch4Ka7ilEbj"
    "bfvhKkNL65HHL0J6EYJIZUC2pFrdkJ7MhmEbU2qARR4iQHE7wy24qy0cRX3Mfp6iELcDNfSsPGjUQVDGxQDCWjayJOpcwocugux082f49HKYg84EpHSG"
    "XAyh+/oxwaWbvL6aSDPOYuPDGOCI8jmnKiypE+"
)
PUSH_BODY = (
    "<xml><ToUserName><![CDATA[ww1436e0e65a779aee]]></ToUserName>"
    f"<Encrypt><![CDATA[{PUSH_ENCRYPT}]]></Encrypt><AgentID><![CDATA[1000002]]></AgentID></xml>"
)


def signed_at(query: dict[str, str], seconds_later: int = 10) -> Clock:
    """A clock shortly after the moment a vector was signed: its timestamp is from 2016."""
    return Clock(datetime.fromtimestamp(int(query["timestamp"]) + seconds_later, UTC))


async def test_url_verification_answers_the_official_vector(make_settings: Any, start_app: Any) -> None:
    client = await start_app(make_settings(), clock=signed_at(VERIFY))
    resp = await client.get("/wecom/callback", params=VERIFY)
    assert resp.status == 200
    assert await resp.text() == "1288432023552776189"


async def test_url_verification_with_a_raw_plus_in_echostr(make_settings: Any, start_app: Any) -> None:
    client = await start_app(make_settings(), clock=signed_at(VERIFY))
    raw = "&".join(f"{k}={v}" for k, v in VERIFY.items())  # '+' unescaped, as some proxies forward it
    resp = await client.get("/wecom/callback?" + raw)
    assert await resp.text() == "1288432023552776189"


async def test_url_verification_with_a_wrong_signature_is_forbidden(make_settings: Any, start_app: Any) -> None:
    client = await start_app(make_settings(), clock=signed_at(VERIFY))
    resp = await client.get("/wecom/callback", params={**VERIFY, "msg_signature": "0" * 40})
    assert resp.status == 403


async def test_url_verification_signed_long_ago_is_forbidden(make_settings: Any, start_app: Any) -> None:
    client = await start_app(make_settings(), clock=signed_at(VERIFY, seconds_later=301))
    resp = await client.get("/wecom/callback", params=VERIFY)
    assert resp.status == 403


async def test_the_official_push_vector_is_stored_once(make_settings: Any, start_app: Any) -> None:
    client = await start_app(make_settings(), clock=signed_at(PUSH_QUERY))
    for _ in range(2):  # WeCom retries the same message
        resp = await client.post("/wecom/callback", params=PUSH_QUERY, data=PUSH_BODY)
        assert resp.status == 200
    await settle(client.app)
    rows = await Message.filter(platform="wecom", msgid="1456453720")
    assert len(rows) == 1
    assert (rows[0].sender, rows[0].text) == ("ChenJiaShun", "你好")


async def test_a_forged_signature_is_forbidden_and_writes_nothing(make_settings: Any, start_app: Any) -> None:
    client = await start_app(make_settings(), clock=signed_at(PUSH_QUERY))
    resp = await client.post("/wecom/callback", params={**PUSH_QUERY, "msg_signature": "f" * 40}, data=PUSH_BODY)
    assert resp.status == 403
    assert await Message.all().count() == 0


async def test_malformed_bodies_are_rejected_and_write_nothing(make_settings: Any, start_app: Any) -> None:
    client = await start_app(make_settings())
    for body in ["not xml", "<xml><Nothing/></xml>", "<xml><Encrypt>", ""]:
        resp = await client.post("/wecom/callback", params=PUSH_QUERY, data=body)
        assert resp.status == 400, body
    # a well-signed envelope whose content is not a valid ciphertext
    query, _ = signed_callback("<xml/>")
    crypto = WECOM.crypto
    bogus = "QUJD"  # base64 of 3 bytes: not a whole AES block
    query["msg_signature"] = crypto.sign(query["timestamp"], query["nonce"], bogus)
    resp = await client.post("/wecom/callback", params=query, data=f"<xml><Encrypt>{bogus}</Encrypt></xml>")
    assert resp.status == 400
    assert await Message.all().count() == 0


async def test_an_oversized_body_is_rejected(make_settings: Any, start_app: Any) -> None:
    client = await start_app(make_settings(server={"max_body_bytes": 4096}))
    resp = await client.post("/wecom/callback", params=PUSH_QUERY, data=b"<xml>" + b"a" * 10_000 + b"</xml>")
    assert resp.status == 413
    assert await Message.all().count() == 0


async def test_a_message_for_another_corp_is_forbidden(make_settings: Any, start_app: Any) -> None:
    client = await start_app(make_settings())
    other = WECOM.__class__(**{**WECOM.__dict__, "corp_id": "wwOTHERCORP"})
    resp = await post_wecom(client, text_xml("zhangsan", "帮助", 1), corp=other)
    assert resp.status == 403
    assert await Message.all().count() == 0


# -- reading the XML: the flat fast path agrees with the XML parser ----------------------------------------------

_TAGS = st.sampled_from(["ToUserName", "FromUserName", "Content", "MsgId", "A", "x_1"])
_TEXT = st.text(alphabet=st.sampled_from(list("ab 中文\t\n\r]>&<[!-;\x00\x0b\ufffe")), max_size=12)


_PROLOGUES = [
    '<?xml version="1.0" encoding="UTF-8"?>',
    '<?xml version="1.0" encoding="GBK"?>',
    "<!DOCTYPE xml>",
    '<!DOCTYPE xml [<!ENTITY a "b">]>',
]


@st.composite
def _documents(draw: st.DrawFn) -> str:
    """Documents around WeCom's flat shape: CDATA or plain fields, odd characters, repeats, stray markup."""
    parts = []
    for tag in draw(st.lists(_TAGS, min_size=0, max_size=4)):
        text = draw(_TEXT)
        parts.append(f"<{tag}><![CDATA[{text}]]></{tag}>" if draw(st.booleans()) else f"<{tag}>{text}</{tag}>")
    doc = draw(st.sampled_from(["", " ", "\n"])).join(parts)
    before = draw(st.sampled_from(["", " ", "\ufeff", *_PROLOGUES]))
    after = draw(st.sampled_from(["", "\n", "x"]))
    return f"{before}<xml>{doc}</xml>{after}"


def _by_parser(doc: str) -> dict[str, Any] | str:
    try:
        return _parse_hardened(doc)
    except NotAMessage:
        return "malformed"


@given(_documents())
@settings(max_examples=1000, deadline=None)
def test_the_flat_reader_takes_only_what_the_xml_parser_reads_the_same_way(doc: str) -> None:
    flat, parsed = _parse_flat(doc), _by_parser(doc)
    if flat is not None:
        assert flat == parsed
    if parsed != "malformed":
        assert parse_xml(doc) == parsed


def test_the_official_envelope_and_message_take_the_flat_reader() -> None:
    assert _parse_flat(PUSH_BODY) == _parse_hardened(PUSH_BODY)
    message = text_xml("zhangsan", "你好 ]]]> & <b>", 1)
    assert _parse_flat(message) is None  # CDATA cannot hold "]]>": the parser decides
    assert _parse_flat(text_xml("zhangsan", "漏油了，急！<>&", 2))["Content"] == "漏油了，急！<>&"
