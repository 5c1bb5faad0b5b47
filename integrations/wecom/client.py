"""The WeCom server API client (``/cgi-bin/...``) on the app's shared aiohttp session.

It owns the app's access token (one fetch at a time behind an ``asyncio.Lock``; concurrent callers wait for that
fetch; a token WeCom reports invalid or expired is refreshed once and the call repeated), a few quick retries for
transient failures (errcode -1 "system busy", 45033 concurrency limit, HTTP 5xx, timeouts; a POST whose request
may have been applied, a timeout or a dropped connection, is not repeated here but left to the outbox, which
repeats it so that WeCom can drop it as a duplicate), and the mapping of
WeCom error codes onto the outbox's retry policy: ``DeliveryError`` (try again later, with ``retry_after``) or
``PermanentDeliveryError`` (never). Secrets and tokens never appear in logs or error messages.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any

import aiohttp

from bot.channels import DeliveryError, PermanentDeliveryError
from bot.jsontext import compact_json, parse_json
from integrations.wecom.settings import WeComSettings

log = logging.getLogger(__name__)

_JSON_HEADERS = {"Content-Type": "application/json; charset=utf-8"}

# errcodes (PROTOCOLS.md §4, WC-doc 90313)
BUSY = -1
INVALID_SECRET = 40001
INVALID_CORPID = 40013
INVALID_TOKEN = 40014
INVALID_AGENTID = 40056
TOKEN_EXPIRED = 42001
FREQUENCY_LIMIT = 45009
CONCURRENCY_LIMIT = 45033

TOKEN_ERRORS = {INVALID_TOKEN, TOKEN_EXPIRED, INVALID_SECRET}  # on an API call: the token is stale
TRANSIENT = {BUSY, CONCURRENCY_LIMIT}
CONFIG_ERRORS = {INVALID_SECRET, INVALID_CORPID, INVALID_AGENTID, 40082, 60020, 48002}
# How long before its announced expiry a token is renewed, so that no call carries one that dies in flight.
TOKEN_MARGIN_SECONDS = 300.0
CONFIG_RETRY_SECONDS = 300.0


class WeComAPIError(Exception):
    """WeCom answered with a non-zero errcode."""

    def __init__(self, api: str, errcode: int, errmsg: str) -> None:
        super().__init__(f"wecom {api}: errcode {errcode} ({errmsg})")
        self.api = api
        self.errcode = errcode
        self.errmsg = errmsg


class WeComConfigError(DeliveryError):
    """The app's WeCom credentials are wrong (secret, corp id, agent id).

    Not permanent for the message: once an administrator fixes the configuration, the queued messages leave, so
    the outbox keeps retrying them slowly (``retry_after``) instead of dropping them.
    """


class _Transient(Exception):
    """A failure worth retrying; ``maybe_applied`` when WeCom may have acted on the request all the same."""

    def __init__(self, reason: str, retry_after: float | None = None, *, maybe_applied: bool = False) -> None:
        super().__init__(reason)
        self.retry_after = retry_after
        self.maybe_applied = maybe_applied


class WeComClient:
    """One self-built app (corp id + agent id + secret) on one aiohttp session."""

    def __init__(self, settings: WeComSettings, session: Callable[[], aiohttp.ClientSession]) -> None:
        self.settings = settings
        self.agent_id = settings.agent_id
        self._session = session
        self._base = settings.api_base.rstrip("/") + "/cgi-bin/"
        self._token: str | None = None
        self._token_deadline = 0.0  # time.monotonic() after which the token is renewed
        self._token_lock = asyncio.Lock()
        self.token_fetches = 0

    # -- access token ---------------------------------------------------------------------------------------

    async def token(self, stale: str | None = None) -> str:
        """A valid access token; ``stale`` is a token WeCom just rejected, so a fresh one is fetched.

        Concurrent callers wait on the lock for one fetch, then all use its result.
        """
        async with self._token_lock:
            current = self._token
            if current is not None and current != stale and time.monotonic() < self._token_deadline:
                return current
            return await self._fetch_token()

    async def _fetch_token(self) -> str:
        params = {"corpid": self.settings.corp_id, "corpsecret": self.settings.secret}
        data = await self._call("GET", "gettoken", params=params, with_token=False)
        token = data.get("access_token")
        if not isinstance(token, str) or not token:
            raise DeliveryError("wecom gettoken: no access_token in the answer")
        expires_in = float(data.get("expires_in") or 7200)
        self._token = token
        self._token_deadline = time.monotonic() + max(expires_in - TOKEN_MARGIN_SECONDS, expires_in / 2)
        self.token_fetches += 1
        log.info("wecom access token refreshed (expires in %ss)", int(expires_in))
        return token

    def forget_token(self) -> None:
        self._token = None

    # -- API calls ------------------------------------------------------------------------------------------

    async def post(self, api: str, body: dict[str, Any]) -> dict[str, Any]:
        """POST ``body`` to ``/cgi-bin/<api>`` with the access token; the answer when errcode is 0."""
        return await self._call("POST", api, json=body)

    async def get(self, api: str, params: dict[str, str]) -> dict[str, Any]:
        """GET ``/cgi-bin/<api>`` with ``params`` and the access token; the answer when errcode is 0."""
        return await self._call("GET", api, params=params)

    async def send_message(self, body: dict[str, Any]) -> dict[str, Any]:
        """``message/send``; ``agentid`` is filled in. Returns the answer (msgid, response_code, invaliduser)."""
        body = {**body, "agentid": self.agent_id}
        answer = await self.post("message/send", body)
        if answer.get("invaliduser"):
            # All recipients invalid is errcode 81013; a partial miss still delivered to the others.
            log.warning("wecom message/send: some recipients are not reachable by the app: %s", answer["invaliduser"])
        return answer

    async def upload_media(self, media_type: str, filename: str, data: bytes, content_type: str) -> str:
        """``media/upload`` (multipart, field ``media``): a temporary media id, valid for three days."""

        def form() -> aiohttp.FormData:  # a FormData is spent once sent: each attempt builds its own
            # WeCom shows the filename as given: UTF-8 in the part header, not percent-encoded.
            body = aiohttp.FormData(quote_fields=False)
            body.add_field("media", data, filename=filename, content_type=content_type)
            return body

        answer = await self._call("POST", "media/upload", params={"type": media_type}, form=form)
        media_id = answer.get("media_id")
        if not isinstance(media_id, str) or not media_id:
            raise DeliveryError("wecom media/upload: no media_id in the answer")
        return media_id

    async def update_template_card(self, userids: list[str], response_code: str, replace_name: str) -> dict[str, Any]:
        """Turn a clicked button_interaction card's buttons into one disabled label (``replace_name``)."""
        body = {
            "userids": userids,
            "agentid": self.agent_id,
            "response_code": response_code,
            "button": {"replace_name": replace_name},
        }
        return await self.post("message/update_template_card", body)

    async def _call(
        self,
        method: str,
        api: str,
        *,
        params: dict[str, str] | None = None,
        json: dict[str, Any] | None = None,
        form: Callable[[], aiohttp.FormData] | None = None,
        with_token: bool = True,
    ) -> dict[str, Any]:
        """One API call with the token, quick retries for transient failures and one token refresh."""
        attempts = self.settings.request_retries + 1
        delay = self.settings.retry_delay_seconds
        refreshed = False
        last: _Transient | None = None
        attempt = 0
        while attempt < attempts:
            attempt += 1
            token = await self.token() if with_token else None
            try:
                return await self._once(method, api, params, json, token, form)
            except _Transient as exc:
                last = exc
                if exc.retry_after is not None:  # a rate limit: retrying within seconds only makes it worse
                    break
                if exc.maybe_applied and method == "POST":  # a blind repeat could deliver a message twice
                    break
                if attempt < attempts:
                    log.info("wecom %s: %s; retrying in %.2fs", api, exc, delay)
                    await asyncio.sleep(delay)
                    delay *= 2
            except WeComAPIError as exc:
                if with_token and exc.errcode in TOKEN_ERRORS and not refreshed:
                    # The token died early (or was revoked): fetch a new one once and repeat this call.
                    refreshed = True
                    await self.token(stale=token)
                    attempt -= 1
                    continue
                raise self._classify(exc) from exc
        assert last is not None
        raise DeliveryError(str(last), retry_after=last.retry_after)

    async def _once(
        self,
        method: str,
        api: str,
        params: dict[str, str] | None,
        json: dict[str, Any] | None,
        token: str | None,
        form: Callable[[], aiohttp.FormData] | None = None,
    ) -> dict[str, Any]:
        query = dict(params or {})
        if token is not None:
            query["access_token"] = token
        timeout = aiohttp.ClientTimeout(total=self.settings.request_timeout_seconds)
        # JSON bodies as UTF-8, compact: what WeCom's own examples send, and a third of the bytes (and of the
        # encoding time) of ASCII escapes for a Chinese text.
        body: bytes | aiohttp.FormData | None = form() if form else None
        headers = None
        if json is not None:
            body, headers = compact_json(json).encode(), _JSON_HEADERS
        try:
            async with self._session().request(
                method, self._base + api, params=query, data=body, headers=headers, timeout=timeout
            ) as resp:
                if resp.status == 429:
                    raise _Transient(f"wecom {api}: HTTP 429", self.settings.rate_limit_retry_seconds)
                if resp.status >= 500:
                    raise _Transient(f"wecom {api}: HTTP {resp.status}")
                if resp.status != 200:
                    raise PermanentDeliveryError(f"wecom {api}: HTTP {resp.status}")
                try:
                    data = await resp.json(loads=parse_json, content_type=None)
                except ValueError as exc:
                    raise _Transient(f"wecom {api}: answer is not JSON") from exc
        except TimeoutError as exc:
            raise _Transient(f"wecom {api}: timed out", maybe_applied=True) from exc
        except aiohttp.ClientConnectorError as exc:  # no connection: the request never left
            raise _Transient(f"wecom {api}: {type(exc).__name__}") from exc
        except aiohttp.ClientError as exc:
            raise _Transient(f"wecom {api}: {type(exc).__name__}", maybe_applied=True) from exc
        if not isinstance(data, dict):
            raise _Transient(f"wecom {api}: unexpected answer")
        errcode = int(data.get("errcode") or 0)
        if errcode == 0:
            return data
        errmsg = str(data.get("errmsg") or "")
        if errcode in TRANSIENT:
            raise _Transient(f"wecom {api}: errcode {errcode} ({errmsg})")
        if errcode == FREQUENCY_LIMIT:
            raise _Transient(f"wecom {api}: errcode {errcode} ({errmsg})", self.settings.rate_limit_retry_seconds)
        raise WeComAPIError(api, errcode, errmsg)

    def _classify(self, exc: WeComAPIError) -> Exception:
        if exc.errcode in CONFIG_ERRORS or exc.errcode in TOKEN_ERRORS:
            # errmsg can echo request details, never the secret itself; the secret is not in this message.
            log.error(
                "wecom %s rejected the app's configuration (corp_id=%s agent_id=%s): errcode %s. "
                "Check [wecom] corp_id, agent_id and secret.",
                exc.api,
                self.settings.corp_id,
                self.agent_id,
                exc.errcode,
            )
            self.forget_token()
            return WeComConfigError(str(exc), retry_after=CONFIG_RETRY_SECONDS)
        return PermanentDeliveryError(str(exc))
