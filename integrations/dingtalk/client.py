"""The DingTalk open-API client on the app's shared ``aiohttp`` session: access token, batchSend, session webhooks.

The access token (``POST /v1.0/oauth2/accessToken``) is cached behind an ``asyncio.Lock`` so concurrent sends
fetch it once; it is renewed ``token_refresh_margin_seconds`` before it expires (by the app clock) and at once
when DingTalk answers that it is invalid (HTTP 401 / ``InvalidAuthentication``), after which the call is repeated
once. Failures are mapped onto the outbox's retry policy, which is the only retry loop: HTTP 5xx, timeouts,
network errors and throttling (HTTP 429, ``...QpsLimit...`` / ``Throttling`` codes, webhook errcodes 130101 and
410100) raise ``DeliveryError``; other client errors raise ``PermanentDeliveryError``. Tokens and webhook URLs
(which embed a session credential) never appear in logs.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import aiohttp

from bot.channels import DeliveryError, PermanentDeliveryError
from bot.clock import Clock
from bot.jsontext import JSONError, parse_json
from integrations.dingtalk.settings import DingTalkSettings

log = logging.getLogger(__name__)

TOKEN_PATH = "/v1.0/oauth2/accessToken"
BATCH_SEND_PATH = "/v1.0/robot/oToMessages/batchSend"
BATCH_LIMIT = 20
_INVALID_TOKEN_CODES = {"invalidauthentication", "invalidaccesstoken", "accesstokenexpired", "invalid.accesstoken"}
_THROTTLED_WEBHOOK_CODES = {130101, 410100}
SESSION_GONE_CODE = 300001  # "session 不存在": the sessionWebhook expired or was never valid


class WebhookGone(Exception):
    """The sessionWebhook no longer exists; the message must go another way."""


@dataclass(frozen=True, slots=True)
class BatchResult:
    process_query_key: str
    invalid: list[str] = field(default_factory=list)
    flow_controlled: list[str] = field(default_factory=list)


def _retry_after(headers: Any, default: float) -> float:
    try:
        return max(float(headers.get("Retry-After", "")), default)
    except (TypeError, ValueError):
        return default


def _code(data: Any) -> str:
    return str(data.get("code", "")) if isinstance(data, dict) else ""


class DingTalkClient:
    def __init__(self, settings: DingTalkSettings, session: Callable[[], aiohttp.ClientSession], clock: Clock) -> None:
        self.settings = settings
        self._session = session
        self._clock = clock
        self._lock = asyncio.Lock()
        self._token = ""
        self._renew_at: datetime | None = None

    @property
    def _timeout(self) -> aiohttp.ClientTimeout:
        return aiohttp.ClientTimeout(total=self.settings.request_timeout_seconds)

    def _url(self, path: str) -> str:
        return self.settings.api_base.rstrip("/") + path

    async def _post(self, url: str, body: dict[str, Any], headers: dict[str, str] | None = None) -> tuple[int, Any]:
        """POST JSON; (status, decoded JSON or None). Network trouble is a ``DeliveryError``."""
        try:
            async with self._session().post(url, json=body, headers=headers, timeout=self._timeout) as resp:
                text = await resp.text()
                try:
                    data = parse_json(text) if text else None
                except JSONError:
                    data = None
                if resp.status == 429:
                    raise DeliveryError(
                        f"dingtalk throttled: HTTP 429 {_code(data)}".strip(),
                        retry_after=_retry_after(resp.headers, self.settings.throttle_retry_seconds),
                    )
                if resp.status >= 500:
                    raise DeliveryError(f"dingtalk HTTP {resp.status} {_code(data)}".strip())
                return resp.status, data
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise DeliveryError(f"dingtalk unreachable: {type(exc).__name__}") from exc

    # --- access token -------------------------------------------------------------------------------------------

    async def access_token(self) -> str:
        async with self._lock:
            now = self._clock.now()
            if self._token and self._renew_at is not None and now < self._renew_at:
                return self._token
            status, data = await self._post(
                self._url(TOKEN_PATH), {"appKey": self.settings.app_key, "appSecret": self.settings.app_secret}
            )
            token = data.get("accessToken") if isinstance(data, dict) else None
            if status != 200 or not isinstance(token, str) or not token:
                # A wrong key/secret is a configuration error; keep the messages queued until it is fixed.
                log.error("dingtalk access token refused: HTTP %s %s", status, _code(data))
                raise DeliveryError(f"dingtalk access token refused: HTTP {status} {_code(data)}".strip())
            try:
                lifetime = int(data.get("expireIn", 7200))
            except (TypeError, ValueError):
                lifetime = 7200
            margin = min(self.settings.token_refresh_margin_seconds, lifetime // 2)
            self._token = token
            self._renew_at = now + timedelta(seconds=lifetime - margin)
            log.info("dingtalk access token renewed, valid for %ss", lifetime)
            return token

    def invalidate(self, token: str) -> None:
        """Forget ``token`` (if it is still the cached one) so that the next call fetches a new one."""
        if self._token == token:
            self._token = ""
            self._renew_at = None

    async def call(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        """POST an authenticated open-API call; renews the token once if DingTalk says it is invalid."""
        for attempt in range(2):
            token = await self.access_token()
            status, data = await self._post(self._url(path), body, {"x-acs-dingtalk-access-token": token})
            code = _code(data)
            if status == 401 or code.lower() in _INVALID_TOKEN_CODES:
                self.invalidate(token)
                if attempt == 0:
                    continue
                raise DeliveryError(f"dingtalk rejected a fresh access token: {code or status}")
            lowered = code.lower()
            if "qpslimit" in lowered or "throttl" in lowered or "flowcontrol" in lowered:
                raise DeliveryError(f"dingtalk throttled: {code}", retry_after=self.settings.throttle_retry_seconds)
            if status != 200 or not isinstance(data, dict):
                message = data.get("message", "") if isinstance(data, dict) else ""
                raise PermanentDeliveryError(f"dingtalk {path} HTTP {status} {code} {message}".strip())
            return data
        raise AssertionError("unreachable")

    # --- messages -----------------------------------------------------------------------------------------------

    async def batch_send(self, user_ids: Sequence[str], msg_key: str, msg_param: dict[str, Any]) -> BatchResult:
        """Send one robot message to up to 20 users (``/v1.0/robot/oToMessages/batchSend``)."""
        if not 1 <= len(user_ids) <= BATCH_LIMIT:
            raise ValueError(f"batchSend takes 1 to {BATCH_LIMIT} users, got {len(user_ids)}")
        data = await self.call(
            BATCH_SEND_PATH,
            {
                "robotCode": self.settings.robot_code or self.settings.app_key,
                "userIds": list(user_ids),
                "msgKey": msg_key,
                "msgParam": json.dumps(msg_param, ensure_ascii=False),
            },
        )
        return BatchResult(
            process_query_key=str(data.get("processQueryKey", "")),
            invalid=[str(u) for u in data.get("invalidStaffIdList") or []],
            flow_controlled=[str(u) for u in data.get("flowControlledStaffIdList") or []],
        )

    async def post_webhook(self, url: str, body: dict[str, Any]) -> dict[str, Any]:
        """Answer in a conversation through its sessionWebhook (no token needed)."""
        status, data = await self._post(url, body)
        errcode = data.get("errcode", 0) if isinstance(data, dict) else None
        if status == 404 or errcode == SESSION_GONE_CODE:
            raise WebhookGone(f"sessionWebhook gone (HTTP {status}, errcode {errcode})")
        if errcode in _THROTTLED_WEBHOOK_CODES:
            raise DeliveryError(
                f"dingtalk webhook throttled: {errcode}", retry_after=self.settings.throttle_retry_seconds
            )
        if status != 200 or errcode != 0:
            errmsg = data.get("errmsg", "") if isinstance(data, dict) else ""
            raise PermanentDeliveryError(f"dingtalk webhook HTTP {status} errcode {errcode} {errmsg}".strip())
        return data if isinstance(data, dict) else {}
