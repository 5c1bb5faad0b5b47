"""The one way out: every reply and every push is an outbox row first, then a platform adapter sends it.

``Outbox.enqueue`` writes the row (inside the caller's transaction, idempotent on ``dedupe_key``); the
dispatcher claims due rows with a lease (a conditional update, safe with several instances), hands them to the
platform's ``ChannelAdapter``, and marks them sent, or reschedules them with exponential backoff when the
platform fails, or marks them failed after ``max_attempts``. Rows for one recipient go out in order.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Protocol

from tortoise.backends.base.client import BaseDBAsyncClient
from tortoise.expressions import F, Q

from bot.clock import Clock
from bot.config import OutboxSettings
from bot.types import Platform, Reply
from models.outbox import OutboxMessage, OutboxStatus
from models.staff import Staff

log = logging.getLogger(__name__)

CLAIM_BATCH = 200


class DeliveryError(Exception):
    """The platform did not take the message this time; try again later (``retry_after`` seconds if known)."""

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class PermanentDeliveryError(Exception):
    """The platform will never take this message (bad recipient, malformed content): do not retry."""


class ChannelAdapter(Protocol):
    """Sends one outbox message on one platform; returns what the platform answered (message id, card handle)."""

    platform: Platform

    async def send(self, recipient: str, reply: Reply, reply_to: dict[str, Any]) -> dict[str, Any]: ...


@dataclass(frozen=True, slots=True)
class Address:
    platform: Platform
    recipient: str


def console_address(staff: Staff) -> Address:
    return Address("console", f"staff:{staff.id}")


class Outbox:
    def __init__(self, settings: OutboxSettings, clock: Clock) -> None:
        self.settings = settings
        self.clock = clock
        self.adapters: dict[str, ChannelAdapter] = {}
        # Staff members whose pushes go to a live console session (``crmbot chat``) instead of their platform.
        self.console_staff: set[int] = set()
        self._wake = asyncio.Event()

    def register(self, adapter: ChannelAdapter) -> None:
        self.adapters[adapter.platform] = adapter

    def address_of(self, staff: Staff) -> Address:
        """Where a push to ``staff`` goes: a live console, else WeCom, else DingTalk, else a later console."""
        if staff.id in self.console_staff:
            return console_address(staff)
        if staff.wecom_userid and "wecom" in self.adapters:
            return Address("wecom", staff.wecom_userid)
        if staff.dingtalk_userid and "dingtalk" in self.adapters:
            return Address("dingtalk", staff.dingtalk_userid)
        return console_address(staff)

    async def enqueue(
        self,
        address: Address,
        reply: Reply,
        dedupe_key: str,
        *,
        staff_id: int | None = None,
        not_before: datetime | None = None,
        reply_to: dict[str, Any] | None = None,
        using_db: BaseDBAsyncClient | None = None,
    ) -> None:
        """Queue ``reply``; a second enqueue with the same ``dedupe_key`` is a no-op."""
        payload = reply.to_payload()
        if reply_to:
            payload["reply_to"] = reply_to
        row = OutboxMessage(
            dedupe_key=dedupe_key[:191],
            platform=address.platform,
            recipient=address.recipient,
            staff_id=staff_id,
            kind=reply.kind,
            payload=payload,
            not_before=not_before or self.clock.now(),
        )
        await OutboxMessage.bulk_create([row], ignore_conflicts=True, using_db=using_db)

    async def push(
        self,
        staff: Staff,
        reply: Reply,
        dedupe_key: str,
        *,
        not_before: datetime | None = None,
        using_db: BaseDBAsyncClient | None = None,
    ) -> None:
        """Queue a push to a staff member on the platform they are reachable on."""
        await self.enqueue(
            self.address_of(staff),
            reply,
            dedupe_key,
            staff_id=staff.id,
            not_before=not_before,
            using_db=using_db,
        )

    def wake(self) -> None:
        self._wake.set()

    async def drain_once(self, now: datetime | None = None) -> int:
        """Claim every due row this instance can send, send them, and return how many were attempted."""
        now = now or self.clock.now()
        claimed = await self._claim(now)
        if not claimed:
            return 0
        by_recipient: dict[tuple[str, str], list[OutboxMessage]] = defaultdict(list)
        for row in claimed:
            by_recipient[(row.platform, row.recipient)].append(row)
        await asyncio.gather(*(self._send_in_order(rows, now) for rows in by_recipient.values()))
        return len(claimed)

    async def drain(self, now: datetime | None = None) -> int:
        """Drain until nothing due is left (rows rescheduled for later stay)."""
        total = 0
        while n := await self.drain_once(now):
            total += n
        return total

    async def run(self) -> None:
        """The dispatcher loop: drain, then sleep until woken or the poll interval passes."""
        while True:
            # Cleared before draining: a wake-up that arrives while a drain is sending is kept for the next round.
            self._wake.clear()
            try:
                await self.drain_once()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("outbox drain failed; retrying")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=self.settings.poll_seconds)

    def _claimable(self, now: datetime) -> Q:
        due = Q(status=OutboxStatus.PENDING, not_before__lte=now) | Q(status=OutboxStatus.SENDING, lease_until__lt=now)
        platforms = Q(platform__in=[p for p in self.adapters if p != "console"])
        if "console" in self.adapters and self.console_staff:
            platforms |= Q(platform="console", staff_id__in=list(self.console_staff))
        return due & platforms

    async def _claim(self, now: datetime) -> list[OutboxMessage]:
        if not self.adapters:
            return []
        candidates = await OutboxMessage.filter(self._claimable(now)).order_by("id").limit(CLAIM_BATCH)
        lease_until = now + timedelta(seconds=self.settings.lease_seconds)
        claimed = []
        for row in candidates:
            # Conditional update: only one instance wins a row, whatever the database.
            won = await OutboxMessage.filter(id=row.id, status=row.status, attempts=row.attempts).update(
                status=OutboxStatus.SENDING, lease_until=lease_until, attempts=F("attempts") + 1
            )
            if won:
                row.attempts += 1
                claimed.append(row)
        return claimed

    async def _send_in_order(self, rows: Iterable[OutboxMessage], now: datetime) -> None:
        for row in rows:
            await self._send_one(row, now)

    async def _send_one(self, row: OutboxMessage, now: datetime) -> None:
        adapter = self.adapters[row.platform]
        payload = dict(row.payload)
        reply_to = payload.pop("reply_to", {})
        reply = Reply.from_payload(row.kind, payload)  # type: ignore[arg-type]
        try:
            result = await adapter.send(row.recipient, reply, reply_to)
        except PermanentDeliveryError as exc:
            log.error("outbox %s to %s:%s failed permanently: %s", row.id, row.platform, row.recipient, exc)
            await self._finish(row, OutboxStatus.FAILED, error=str(exc))
        except (DeliveryError, OSError, TimeoutError) as exc:
            retry_after = exc.retry_after if isinstance(exc, DeliveryError) else None
            await self._retry_later(row, now, str(exc) or type(exc).__name__, retry_after)
        except Exception as exc:
            log.exception("outbox %s: adapter crashed", row.id)
            await self._retry_later(row, now, repr(exc), None)
        else:
            await self._finish(row, OutboxStatus.SENT, result=result, sent_at=self.clock.now())

    async def _retry_later(self, row: OutboxMessage, now: datetime, error: str, retry_after: float | None) -> None:
        if row.attempts >= self.settings.max_attempts:
            log.error("outbox %s to %s gave up after %s attempts: %s", row.id, row.platform, row.attempts, error)
            await self._finish(row, OutboxStatus.FAILED, error=error)
            return
        delay = min(self.settings.backoff_initial_seconds * 2 ** (row.attempts - 1), self.settings.backoff_max_seconds)
        if retry_after is not None:
            delay = max(delay, retry_after)
        log.warning("outbox %s to %s failed (%s); retry in %.1fs", row.id, row.platform, error, delay)
        await OutboxMessage.filter(id=row.id, status=OutboxStatus.SENDING).update(
            status=OutboxStatus.PENDING,
            not_before=now + timedelta(seconds=delay),
            lease_until=None,
            last_error=error[:2000],
        )

    async def _finish(
        self,
        row: OutboxMessage,
        status: OutboxStatus,
        *,
        error: str = "",
        result: dict[str, Any] | None = None,
        sent_at: datetime | None = None,
    ) -> None:
        await OutboxMessage.filter(id=row.id).update(
            status=status, lease_until=None, last_error=error[:2000], result=result or {}, sent_at=sent_at
        )
