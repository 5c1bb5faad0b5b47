"""WeCom chat archive (会话内容存档): Tencent's Finance SDK through ctypes, and the puller that feeds the archive.

``FinanceSdk`` binds ``libWeWorkFinanceSdk_C.so`` (NewSdk/Init/GetChatData/DecryptData/slices/DestroySdk) with
explicit argtypes and restypes; slice buffers are read by their length, never as C strings. ``ArchivePuller``
reads from the stored cursor, decrypts each item (RSA PKCS#1 v1.5 on ``encrypt_random_key`` with the private key
of that item's ``publickey_ver``, then ``DecryptData``), hands the batch to the one archive path together with
its failures and the new cursor (one transaction), and tells the admins about items it could not decrypt.
``normalize_record`` turns a decrypted record (also the JSON Lines import format) into an ``IncomingMessage``;
it is the only code that reads the archive's field names.
"""

from __future__ import annotations

import asyncio
import base64
import ctypes
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from bot.archive import Failure, archive_batch, cursor_of
from bot.context import Services
from bot.jsontext import JSONError, parse_json
from bot.types import IncomingMessage, Reply
from integrations.wecom.settings import WeComSettings
from models.staff import Role, Staff

log = logging.getLogger(__name__)

RETRYABLE = {10001, 10002, 10003}  # network, parse, system: try again
UNKNOWN_KEY_VERSION = 10007
DECRYPT_FAILED = 10006
TEXT_FIELDS = {  # msgtype → fields of its object that are worth searching
    "text": ("content",),
    "markdown": ("content",),
    "link": ("title", "description"),
    "file": ("filename",),
    "weapp": ("title", "description"),
    "location": ("title", "address"),
    "news": ("title",),
    "chatrecord": ("title",),
    "todo": ("title", "content"),
    "vote": ("votetitle",),
    "meeting": ("topic",),
    "calendar": ("title", "place"),
    "card": ("corpname",),
}


class NotArchivable(ValueError):
    """A record that is not a chat-archive message (the reason says why)."""


class SdkError(RuntimeError):
    def __init__(self, call: str, code: int) -> None:
        super().__init__(f"{call} returned {code}")
        self.call = call
        self.code = code


# -- normalization --------------------------------------------------------------------------------------------------


def normalize_record(record: dict[str, Any]) -> IncomingMessage:
    """A decrypted chat-archive record → the neutral message (the whole record kept in ``raw``)."""
    msgid = record.get("msgid")
    if not isinstance(msgid, str) or not msgid:
        raise NotArchivable("missing msgid")
    if len(msgid) > 128:
        raise NotArchivable("msgid longer than 128 characters")
    action = record.get("action", "send")
    msgtime = record.get("msgtime", record.get("time"))
    if isinstance(msgtime, bool) or not isinstance(msgtime, int | float):
        raise NotArchivable("missing or non-numeric msgtime")
    try:
        sent_at = datetime.fromtimestamp(msgtime / 1000, UTC)
    except (OverflowError, OSError, ValueError) as exc:
        raise NotArchivable("msgtime out of range") from exc
    sender = record.get("from", record.get("user", ""))
    tolist = record.get("tolist", [])
    if not isinstance(sender, str) or not isinstance(tolist, list) or not all(isinstance(u, str) for u in tolist):
        raise NotArchivable("from must be a string and tolist a list of strings")
    if action not in ("send", "recall", "switch"):
        raise NotArchivable(f"unknown action {action!r}")
    if action == "send" and not sender:
        raise NotArchivable("missing from")
    msgtype = str(record.get("msgtype") or action)
    room = record.get("roomid") or ""
    event, event_key = "", ""
    if action == "recall":
        revoke = record.get("revoke")
        event, event_key = "recall", str(revoke.get("pre_msgid", "")) if isinstance(revoke, dict) else ""
    return IncomingMessage(
        platform="wecom",
        msgid=msgid,
        sender=sender[:64],
        text=_text_of(msgtype, record),
        sent_at=sent_at,
        msgtype=msgtype[:32],
        conversation_id=str(room)[:128],
        is_group=bool(room),
        to_bot=False,
        receivers=tuple(tolist),
        event=event,
        event_key=event_key,
        raw=record,
    )


def _text_of(msgtype: str, record: dict[str, Any]) -> str:
    body = record.get(msgtype)
    if msgtype == "mixed" and isinstance(body, dict):
        parts = []
        for item in body.get("item", []):
            if isinstance(item, dict) and item.get("type") == "text":
                try:
                    parts.append(str(parse_json(item.get("content", "{}")).get("content", "")))
                except (ValueError, AttributeError):
                    continue
        return " ".join(p for p in parts if p).strip()
    if not isinstance(body, dict):
        return ""
    return " ".join(str(body[f]) for f in TEXT_FIELDS.get(msgtype, ()) if body.get(f)).strip()


# -- the SDK ----------------------------------------------------------------------------------------------------


class Slice(ctypes.Structure):
    _fields_ = [("buf", ctypes.c_void_p), ("len", ctypes.c_int)]


SliceP = ctypes.POINTER(Slice)


class FinanceSdk:
    """``libWeWorkFinanceSdk_C.so`` through ctypes. Blocking: call it from a worker thread."""

    def __init__(self, library: str) -> None:
        lib = ctypes.CDLL(library)
        lib.NewSdk.argtypes = []
        lib.NewSdk.restype = ctypes.c_void_p
        lib.Init.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_char_p]
        lib.Init.restype = ctypes.c_int
        lib.DestroySdk.argtypes = [ctypes.c_void_p]
        lib.DestroySdk.restype = None
        lib.NewSlice.argtypes = []
        lib.NewSlice.restype = SliceP
        lib.FreeSlice.argtypes = [SliceP]
        lib.FreeSlice.restype = None
        lib.GetContentFromSlice.argtypes = [SliceP]
        lib.GetContentFromSlice.restype = ctypes.c_void_p  # not c_char_p: the content is read by length
        lib.GetSliceLen.argtypes = [SliceP]
        lib.GetSliceLen.restype = ctypes.c_int
        lib.GetChatData.argtypes = [
            ctypes.c_void_p,
            ctypes.c_ulonglong,
            ctypes.c_uint,
            ctypes.c_char_p,
            ctypes.c_char_p,
            ctypes.c_int,
            SliceP,
        ]
        lib.GetChatData.restype = ctypes.c_int
        lib.DecryptData.argtypes = [ctypes.c_char_p, ctypes.c_char_p, SliceP]
        lib.DecryptData.restype = ctypes.c_int
        self._lib = lib
        self._sdk: int | None = None

    def init(self, corp_id: str, secret: str) -> None:
        sdk = self._lib.NewSdk()
        if not sdk:
            raise SdkError("NewSdk", -1)
        code = self._lib.Init(sdk, corp_id.encode(), secret.encode())
        if code != 0:
            self._lib.DestroySdk(sdk)
            raise SdkError("Init", code)
        self._sdk = sdk

    def close(self) -> None:
        if self._sdk:
            self._lib.DestroySdk(self._sdk)
            self._sdk = None

    def _call_into_slice(self, name: str, call: Callable[[Any], int]) -> bytes:
        out = self._lib.NewSlice()
        try:
            code = call(out)
            if code != 0:
                raise SdkError(name, code)
            length = self._lib.GetSliceLen(out)
            pointer = self._lib.GetContentFromSlice(out)
            return ctypes.string_at(pointer, length) if pointer and length > 0 else b""
        finally:
            self._lib.FreeSlice(out)

    def get_chat_data(self, seq: int, limit: int, proxy: str = "", password: str = "", timeout: int = 10) -> bytes:
        if self._sdk is None:
            raise SdkError("GetChatData", 10000)
        sdk = self._sdk
        return self._call_into_slice(
            "GetChatData",
            lambda out: int(self._lib.GetChatData(sdk, seq, limit, proxy.encode(), password.encode(), timeout, out)),
        )

    def decrypt_data(self, encrypt_key: bytes, encrypt_msg: bytes) -> bytes:
        return self._call_into_slice(
            "DecryptData", lambda out: int(self._lib.DecryptData(encrypt_key, encrypt_msg, out))
        )


# -- the puller -------------------------------------------------------------------------------------------------


@dataclass
class PullSummary:
    batches: int = 0
    archived: int = 0
    duplicates: int = 0
    failures: int = 0
    seq: int = 0
    error: str = ""
    failed_items: list[Failure] = field(default_factory=list)

    def line(self) -> str:
        text = (
            f"archived={self.archived} duplicates={self.duplicates} failures={self.failures} "
            f"seq={self.seq} batches={self.batches}"
        )
        return text + (f" error={self.error}" if self.error else "")


def load_private_keys(paths: dict[int, str]) -> dict[int, rsa.RSAPrivateKey]:
    keys: dict[int, rsa.RSAPrivateKey] = {}
    for version, path in paths.items():
        key = serialization.load_pem_private_key(Path(path).read_bytes(), password=None)
        if not isinstance(key, rsa.RSAPrivateKey):
            raise ValueError(f"archive private key {version} ({path}) is not an RSA key")
        keys[int(version)] = key
    return keys


class ArchivePuller:
    """Pulls the chat archive into the database, from the stored cursor, one committed batch at a time."""

    def __init__(
        self,
        bot: Services,
        settings: WeComSettings,
        *,
        sdk: FinanceSdk | None = None,
        on_fetched: Callable[[int], None] | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self.bot = bot
        self.settings = settings
        self.source = f"wecom:{settings.corp_id}"
        self.keys = load_private_keys(settings.archive_private_keys)
        self._sdk = sdk
        self._ready = False
        self._lock = asyncio.Lock()
        # Called with the number of items after each fetch and decrypt, before the commit (crash tests).
        self.on_fetched = on_fetched
        self._sleep = sleep

    async def _ensure_sdk(self) -> FinanceSdk:
        if self._sdk is None:
            self._sdk = await asyncio.to_thread(FinanceSdk, self.settings.archive_sdk_path)
        if not self._ready:
            await asyncio.to_thread(self._sdk.init, self.settings.corp_id, self.settings.archive_secret)
            self._ready = True
        return self._sdk

    def close(self) -> None:
        if self._sdk is not None:
            self._sdk.close()
            self._ready = False

    async def pull(self) -> PullSummary:
        """Pull until the archive has nothing newer; safe to call from several places at once."""
        async with self._lock:
            summary = PullSummary()
            try:
                await self._pull(summary)
            except SdkError as exc:
                summary.error = str(exc)
                log.error("wecom archive: %s (cursor stays at %d)", exc, summary.seq)
            log.info("wecom archive pull: %s", summary.line())
            if summary.failed_items:
                await self._tell_admins(summary)
            return summary

    async def _pull(self, summary: PullSummary) -> None:
        sdk = await self._ensure_sdk()
        limit = self.settings.archive_batch_limit
        while True:
            seq = await cursor_of(self.source)
            summary.seq = seq
            items = await self._fetch(sdk, seq, limit)
            if not items:
                return
            messages, failures = await asyncio.to_thread(self._decrypt_all, sdk, items)
            if self.on_fetched is not None:
                self.on_fetched(len(items))
            last = max(int(item.get("seq", 0)) for item in items)
            result = await archive_batch(self.bot, messages, source=self.source, seq=last, failures=failures)
            summary.batches += 1
            summary.archived += len(result.new)
            summary.duplicates += result.duplicates
            summary.failures += len(failures)
            summary.failed_items.extend(failures)
            summary.seq = last
            if len(items) < limit or last <= seq:
                return

    async def _fetch(self, sdk: FinanceSdk, seq: int, limit: int) -> list[dict[str, Any]]:
        s = self.settings
        attempt = 0
        while True:
            try:
                raw = await asyncio.to_thread(
                    sdk.get_chat_data, seq, limit, s.archive_proxy, s.archive_proxy_password, s.archive_timeout_seconds
                )
                data = parse_json(raw)
                code = int(data.get("errcode", 0))
                if code != 0:
                    raise SdkError("GetChatData", code)
                items = data.get("chatdata") or []
                return [i for i in items if isinstance(i, dict)]
            except SdkError as exc:
                if exc.code not in RETRYABLE or attempt >= s.archive_retries:
                    raise
                delay = s.archive_retry_backoff_seconds * (2**attempt)
                attempt += 1
                log.warning("wecom archive: %s, retry %d in %.1fs", exc, attempt, delay)
                await self._sleep(delay)
            except ValueError as exc:  # the SDK answered something that is not JSON
                raise SdkError("GetChatData", 10002) from exc

    def _decrypt_all(self, sdk: FinanceSdk, items: list[dict[str, Any]]) -> tuple[list[IncomingMessage], list[Failure]]:
        messages: list[IncomingMessage] = []
        failures: list[Failure] = []
        for item in items:
            try:
                messages.append(self._decrypt(sdk, item))
            except _ItemFailed as exc:
                failures.append(exc.failure)
        return messages, failures

    def _decrypt(self, sdk: FinanceSdk, item: dict[str, Any]) -> IncomingMessage:
        seq = int(item.get("seq", 0))
        msgid = str(item.get("msgid", ""))
        version = item.get("publickey_ver")
        version = int(version) if isinstance(version, int | str) and str(version).isdigit() else None

        def fail(code: int, reason: str) -> _ItemFailed:
            return _ItemFailed(Failure(seq=seq, msgid=msgid, code=code, reason=reason, key_version=version))

        key = self.keys.get(version) if version is not None else None
        if key is None:
            raise fail(UNKNOWN_KEY_VERSION, f"no private key configured for publickey_ver {version}")
        try:
            random_key = key.decrypt(base64.b64decode(str(item.get("encrypt_random_key", ""))), padding.PKCS1v15())
        except ValueError as exc:
            reason = f"RSA decrypt of encrypt_random_key failed (wrong private key for version {version}?): {exc}"
            raise fail(DECRYPT_FAILED, reason) from None
        try:
            plain = sdk.decrypt_data(random_key, str(item.get("encrypt_chat_msg", "")).encode())
        except SdkError as exc:
            # With OpenSSL >= 3.2 a wrong private key yields random bytes instead of an error, which surfaces here.
            raise fail(exc.code, f"DecryptData failed (wrong private key for version {version}?)") from None
        try:
            record = parse_json(plain)
        except JSONError as exc:
            raise fail(
                DECRYPT_FAILED,
                f"decrypted content is not JSON ({exc.msg}; wrong private key for version {version}?)",
            ) from None
        if not isinstance(record, dict):
            raise fail(DECRYPT_FAILED, "decrypted content is not a JSON object")
        record.setdefault("msgid", msgid)
        try:
            return normalize_record(record)
        except NotArchivable as exc:
            raise fail(0, str(exc)) from None

    async def _tell_admins(self, summary: PullSummary) -> None:
        first = summary.failed_items[0]
        versions = sorted({f.key_version for f in summary.failed_items if f.key_version is not None})
        text = (
            f"会话存档：有 {summary.failures} 条消息未能存档（例如 seq {first.seq}：{first.reason}）。"
            f"已记录在存档失败列表中，涉及密钥版本 {versions or '未知'}，请检查 [wecom] archive_private_keys 配置。"
        )
        for admin in await Staff.filter(role=Role.ADMIN, active=True):
            key = f"archive_failures:{self.source}:{first.seq}:{first.msgid}:{admin.id}"
            await self.bot.outbox.push(admin, Reply(text), key)
        self.bot.outbox.wake()


class _ItemFailed(Exception):
    def __init__(self, failure: Failure) -> None:
        super().__init__(failure.reason)
        self.failure = failure
