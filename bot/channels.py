"""The one way out: every reply and every push is an outbox row first, then a platform adapter sends it.

``Outbox.enqueue`` writes the row (inside the caller's transaction, idempotent on ``dedupe_key``); the
dispatcher claims a batch of due rows with a lease in one statement (claims take turns under an advisory lock
and skip locked rows on PostgreSQL, the single writer serializes them on SQLite: several instances never claim
the same row, and a row waits while another to the same recipient is leased, so each recipient's rows go out
in order) and hands them to the platform's ``ChannelAdapter`` (recipients concurrently, each recipient's rows
in order). Delivery is as close to exactly-once as the platforms allow:

- A claimed row is marked in flight by its claim (``attempted_at``, committed with the lease, before any request):
  from then on it may have reached the person. A later send of a row so marked (after a timeout, a lost answer or
  a crash) tells the adapter when that was (``maybe_sent_at``), so that the platform can drop it as a duplicate
  (WeCom's duplicate check; see ``integrations/wecom/channel.py`` and docs/DELIVERY.md for what DingTalk allows).
- Each send's outcome is written as soon as it returns: sent, rescheduled with exponential backoff when the
  platform failed, or failed after ``max_attempts``. Outcomes and lease renewals are group-committed (what
  is waiting when a commit starts goes into it; outcomes alone are gathered for up to ``GATHER_SECONDS``), so no
  finished send waits for the slowest one of its batch, and a batch costs a few commits, not one per send.
- The lease never runs out under a running send: it is renewed every quarter of ``lease_seconds`` while the batch
  is out, each send is cut off after ``send_timeout_seconds`` (at most half the lease), and a send starts only if
  the lease as last renewed outlasts that bound. A crashed instance's rows are therefore claimed again within one
  (short) lease, and re-sent as possible duplicates.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import defaultdict
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

from tortoise import connections
from tortoise.backends.base.client import BaseDBAsyncClient
from tortoise.transactions import in_transaction

from bot import sql
from bot.clock import Clock
from bot.config import OutboxSettings
from bot.identity import Directory, Identity, accounts_by_staff, accounts_of
from bot.jsontext import compact_json, parse_json
from bot.types import Platform, Reply
from models.outbox import OutboxStatus
from models.staff import Staff

log = logging.getLogger(__name__)

CLAIM_BATCH = 500
# While callbacks keep arriving (``Outbox(busy=…)``) a claim takes fewer rows and fewer sends are out at once: a
# claim holds SQLite's one connection, which every acknowledgement needs, and every answer to a send is work the
# event loop does before it gets to the callbacks that arrived with it.
BUSY_CLAIM_BATCH = 64
BUSY_SENDS = 16
# Batches a drain has out at once: the next is claimed when the last is half sent (``Outbox.drain``).
OVERLAPPING = 2
# Outcomes alone wait up to this long for the sends finishing about then: a batch's sends returning one by one
# would otherwise cost a commit (a sync to disk on SQLite) each. A renewal, which sends wait for, and the batch's
# end go at once.
GATHER_SECONDS = 0.1
# pg_advisory_xact_lock key that serializes outbox claims between instances ("crmoutbx").
CLAIM_LOCK_KEY = 0x63726D6F75746278


class DeliveryError(Exception):
    """The platform did not take the message this time; try again later (``retry_after`` seconds if known)."""

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class PermanentDeliveryError(Exception):
    """The platform will never take this message (bad recipient, malformed content): do not retry."""


# What a channel adapter answers for a card it sent: the handle with which the card can be updated later.
CARD_HANDLE = "card_handle"


class ChannelAdapter(Protocol):
    """Sends one outbox message on one platform; returns what the platform answered (message id, ``CARD_HANDLE``).

    ``live_for`` is None for a channel that serves everyone, or the staff ids it serves right now (a terminal
    session): pushes to those people go there first, and only their rows are claimed for it. ``maybe_sent_at`` is
    set when an earlier send of this same message began then and its outcome is unknown: it may have reached the
    person, so the adapter sends it in a way the platform can recognise as a repeat, if the platform has one.
    ``rate_limits`` are the platform's limits per recipient: claims hold a recipient's rows past them until the
    recipient has a free slot again (``outbox_quota``, shared by every instance).
    """

    platform: Platform
    live_for: set[int] | None
    rate_limits: tuple[RateLimit, ...]

    async def send(
        self, recipient: str, reply: Reply, reply_to: dict[str, Any], *, maybe_sent_at: datetime | None = None
    ) -> dict[str, Any]: ...


@dataclass(frozen=True, slots=True)
class RateLimit:
    """At most ``count`` messages to one recipient within any ``seconds`` (a platform's per-person limit)."""

    count: int
    seconds: float

    @property
    def interval(self) -> timedelta:
        return timedelta(seconds=self.seconds / self.count)

    @property
    def burst(self) -> timedelta:
        """How far ahead of now a recipient's next free slot may be while a send may still start: ``count``
        sends in a row, then one every ``interval``."""
        return timedelta(seconds=self.seconds) - self.interval


@dataclass(frozen=True, slots=True)
class Address:
    platform: Platform
    recipient: str


@dataclass(frozen=True, slots=True)
class Queued:
    """One reply to queue (``Outbox.enqueue_many``)."""

    address: Address
    reply: Reply
    dedupe_key: str
    staff_id: int | None = None
    reply_to: dict[str, Any] | None = None
    not_before: datetime | None = None


class Outbox:
    def __init__(
        self,
        settings: OutboxSettings,
        clock: Clock,
        directory: Directory | None = None,
        pace: Callable[[], Awaitable[None]] | None = None,
        busy: Callable[[], bool] | None = None,
    ) -> None:
        self.settings = settings
        self.clock = clock
        self.directory = directory or Directory()
        self._pace = pace  # awaited by the dispatcher before each drain (see ``run``)
        self._busy = busy or (lambda: False)  # callbacks arriving now: claims and sends in smaller slices
        self._busy_sends = asyncio.Semaphore(BUSY_SENDS)
        self.adapters: dict[str, ChannelAdapter] = {}
        self._wake = asyncio.Event()
        self._stopping = False

    def register(self, adapter: ChannelAdapter) -> None:
        self.adapters[adapter.platform] = adapter

    async def address_of(self, staff: Staff, using_db: BaseDBAsyncClient | None = None) -> Address:
        """Where a push to ``staff`` goes: a channel live for them right now, else the first platform (in
        registration order) that reaches them and can send, else the platform that reaches everyone (where it
        waits until they come)."""
        return self._address(staff.id, await accounts_of(staff.id, using_db))

    async def addresses_of(
        self, staff: Iterable[Staff], using_db: BaseDBAsyncClient | None = None
    ) -> dict[int, Address]:
        """``address_of`` several staff members, their accounts read in one query: staff id → address (a staff
        member no platform reaches is left out)."""
        accounts = await accounts_by_staff({s.id for s in staff}, using_db)
        found = {staff_id: self._reach(staff_id, of) for staff_id, of in accounts.items()}
        return {staff_id: address for staff_id, address in found.items() if address is not None}

    def _address(self, staff_id: int, accounts: dict[str, str]) -> Address:
        address = self._reach(staff_id, accounts)
        if address is None:
            raise LookupError(f"no platform reaches staff member {staff_id}")
        return address

    def _reach(self, staff_id: int, accounts: dict[str, str]) -> Address | None:
        def reach(identity: Identity) -> Address | None:
            recipient = identity.recipient(staff_id, accounts.get(identity.platform))
            return Address(identity.platform, recipient) if recipient is not None else None

        identities = self.directory.identities
        live = [i for i in identities if (a := self.adapters.get(i.platform)) and a.live_for and staff_id in a.live_for]
        sending = [i for i in identities if (a := self.adapters.get(i.platform)) and a.live_for is None]
        waiting = [i for i in identities if i.fallback]
        for identity in (*live, *sending, *waiting):
            if (address := reach(identity)) is not None:
                return address
        return None

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
        queued = Queued(address, reply, dedupe_key, staff_id, reply_to, not_before)
        await self.enqueue_many([queued], using_db=using_db)

    async def enqueue_many(self, queued: list[Queued], *, using_db: BaseDBAsyncClient | None = None) -> None:
        """Queue several replies in one statement (a batch's answers; ``ENQUEUE_ROWS`` a statement); each
        ``dedupe_key`` at most once."""
        if not queued:
            return
        conn = using_db or connections.get("default")
        now, created = self.clock.now().astimezone(UTC), datetime.now(UTC)
        for start in range(0, len(queued), ENQUEUE_ROWS):
            await self._insert(conn, queued[start : start + ENQUEUE_ROWS], now, created)

    @staticmethod
    async def _insert(conn: BaseDBAsyncClient, queued: list[Queued], now: datetime, created: datetime) -> None:
        values: list[Any] = []
        for q in queued:
            payload = q.reply.to_payload()
            if q.reply_to:
                payload["reply_to"] = q.reply_to
            values += (
                q.dedupe_key[:191],
                q.address.platform,
                q.address.recipient,
                q.staff_id,
                q.reply.kind,
                compact_json(payload),
                OutboxStatus.PENDING.value,
                q.not_before.astimezone(UTC) if q.not_before is not None else now,
                created,
            )
        # Every reply and push passes here: one plain statement, without the ORM's per-call query building.
        rows = ", ".join([_ENQUEUE_ROW] * len(queued))
        await conn.execute_query(sql.for_conn(_ENQUEUE_SQL.format(rows=rows), conn), values)

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
            await self.address_of(staff, using_db),
            reply,
            dedupe_key,
            staff_id=staff.id,
            not_before=not_before,
            using_db=using_db,
        )

    def wake(self) -> None:
        self._wake.set()

    @property
    def send_timeout(self) -> float:
        """How long one send may take: at most half the lease, which is renewed every quarter of it."""
        return min(self.settings.send_timeout_seconds, self.settings.lease_seconds / 2)

    async def drain_once(self, now: datetime | None = None, half_sent: asyncio.Event | None = None) -> int:
        """Claim a batch of due rows, send them, record their outcomes; return how many were claimed.
        ``half_sent`` is set once half of the batch has been sent."""
        now = now or self.clock.now()
        claimed = await self._claim(now, BUSY_CLAIM_BATCH if self._busy() else CLAIM_BATCH)
        if not claimed:
            return 0
        claim = _Claim(claimed, asyncio.get_running_loop().time() + self.settings.lease_seconds, half_sent=half_sent)
        ledger = _Ledger({row.id for row in claimed})
        by_recipient: dict[tuple[str, str], list[Claimed]] = defaultdict(list)
        for row in claimed:
            by_recipient[(row.platform, row.recipient)].append(row)
        renewing = asyncio.create_task(self._renew(claim, ledger))
        try:
            await asyncio.gather(*(self._send_in_order(rows, now, claim, ledger) for rows in by_recipient.values()))
        finally:
            renewing.cancel()
            # Also when cancelled mid-batch: what was sent is recorded, the rest is sent again after the lease.
            ledger.close()
            await asyncio.shield(ledger.commit())
        return len(claimed)

    async def drain(self, now: datetime | None = None) -> int:
        """Drain until nothing due is left (rows rescheduled for later stay), or until ``stop``; return how many
        rows were claimed.

        Batches overlap: the next claim is made once the current batch is half sent, so the recipients done by
        then go on while the slowest sends of the batch finish (a recipient's next rows wait for its row out on
        a lease: a claim skips them). At most ``OVERLAPPING`` batches are out at once. Each batch runs in a task
        of its own: Tortoise keeps the current transaction in a context variable, and a transaction broken by a
        lost connection (PostgreSQL restarted, pg_terminate_backend) can leave it set, so every later
        transaction in the same context would fail as a nested one.
        """
        total = 0
        running: set[asyncio.Task[int]] = set()

        def harvest() -> None:
            nonlocal total
            for task in [t for t in running if t.done()]:
                running.discard(task)
                total += task.result()

        try:
            while not self._stopping:
                if self._pace is not None:  # e.g. callbacks arriving right now are acknowledged first
                    await self._pace()
                alone = not running
                half_sent = asyncio.Event()
                batch = asyncio.create_task(self.drain_once(now, half_sent))
                running.add(batch)
                halfway = asyncio.create_task(half_sent.wait())
                await asyncio.wait({batch, halfway}, return_when=asyncio.FIRST_COMPLETED)
                halfway.cancel()
                if batch.done() and not batch.result():  # nothing to claim now
                    running.discard(batch)
                    if alone:
                        break
                    harvest()
                    if running:  # what is due may wait for their recipients
                        await asyncio.wait(running, return_when=asyncio.FIRST_COMPLETED)
                harvest()
                while len(running) >= OVERLAPPING:
                    await asyncio.wait(running, return_when=asyncio.FIRST_COMPLETED)
                    harvest()
            while running:
                await asyncio.wait(running, return_when=asyncio.FIRST_COMPLETED)
                harvest()
        finally:
            if running:  # failing: the other batches still record what they sent
                await asyncio.gather(*running, return_exceptions=True)
        return total

    async def run(self) -> None:
        """The dispatcher loop: drain, then sleep until woken or the poll interval passes, until ``stop``.

        It stops between batches rather than being cancelled: a drain cancelled inside a database call could
        leave a connection checked out of the pool mid-transaction.
        """
        self._stopping = False
        while not self._stopping:
            # Cleared before draining: a wake-up that arrives while a drain is sending is kept for the next round.
            self._wake.clear()
            try:
                await self.drain()
            except Exception:
                log.exception("outbox drain failed; retrying")
            if not self._stopping:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), timeout=self.settings.poll_seconds)

    def stop(self) -> None:
        """Let ``run`` finish its current drain and return."""
        self._stopping = True
        self._wake.set()

    def _claimable(self, ph: Callable[[Any], str], at: datetime) -> str:
        """The SQL condition of a row this instance may claim at ``at``, due or not (``ph`` adds a parameter)."""
        platforms = [p for p, a in self.adapters.items() if a.live_for is None]
        where = [f"platform IN ({', '.join(ph(p) for p in platforms)})"] if platforms else []
        for platform, adapter in self.adapters.items():
            if adapter.live_for:
                staff = ", ".join(ph(s) for s in sorted(adapter.live_for))
                where.append(f"(platform = {ph(platform)} AND staff_id IN ({staff}))")
        if not where:
            return "1 = 0"
        # Per-recipient order across instances: not while a row to the same recipient is out on a live lease. The
        # recipients out (a small set: the rows being sent now) are read once into a hashed set: PostgreSQL hashes
        # a NOT IN of a subquery whatever it guesses of its size, where an anti-join planned on a guess of one row
        # walked them all again for every due row (seconds a claim behind a backlog of 20,000).
        out = (
            "(platform, recipient) NOT IN (SELECT platform, recipient FROM outbox"
            f" WHERE status = 'sending' AND lease_until >= {ph(at)})"
        )
        return f"({' OR '.join(where)}) AND {out}"

    async def _claim(self, now: datetime, limit: int = CLAIM_BATCH) -> list[Claimed]:
        """Lease up to ``limit`` due rows and return them in id order, within each recipient's rate limits.

        One transaction: the due rows (in id order, none while a row to the same recipient is out on a live
        lease, by any instance), the recipients' send slots (``outbox_quota``), one UPDATE leasing the rows that
        may go now and marking them in flight, RETURNING what sending needs, and the rows over a limit put back
        until their slot. On PostgreSQL claims take turns under a transaction-level advisory lock (so that the
        check for a leased row and the slots see every committed claim) and the due rows are locked FOR UPDATE
        SKIP LOCKED (stepping over rows whose outcome is being written); on SQLite the single writer serializes
        them.
        """
        if not self.adapters:
            return []
        at = now.astimezone(UTC)
        lease_until = (now + timedelta(seconds=self.settings.lease_seconds)).astimezone(UTC)
        async with in_transaction() as tx:
            postgres = sql.is_postgres(tx)
            params: list[Any] = []

            def ph(value: Any) -> str:
                params.append(value)
                return f"${len(params)}" if postgres else f"?{len(params)}"  # numbered on both databases

            # Due: pending and its time has come, or out on a lease that ran out; the first of each in id order,
            # never the table's history of sent rows. Pending rows are read in id order from the index of the
            # pending rows (``outbox_pending``; the status is written out, so that a generic plan on PostgreSQL
            # sees that it applies; SQLite, which has no statistics to prefer it by, is told), so a claim stops at
            # its limit however long the backlog. The few expired leases are found through the (status,
            # not_before) index and sorted (``+id``).
            pending = f"status = 'pending' AND not_before <= {ph(at)}"
            expired = f"status = {ph(OutboxStatus.SENDING.value)} AND lease_until < {ph(at)}"
            scope, most = self._claimable(ph, at), ph(limit)
            by_id = "" if postgres else " INDEXED BY outbox_pending"
            first = (
                f"SELECT id FROM (SELECT id FROM outbox{by_id} WHERE {pending} AND {scope} ORDER BY id LIMIT {most})"
                f" AS pending UNION ALL SELECT id FROM (SELECT id FROM outbox WHERE {expired} AND {scope}"
                f" ORDER BY +id LIMIT {most}) AS expired"
            )
            due = (
                f"SELECT id, platform, recipient, attempted_at FROM outbox WHERE id IN ({first})"
                f" AND (({pending}) OR ({expired}))"
                f" ORDER BY id LIMIT {most}{' FOR UPDATE OF outbox SKIP LOCKED' if postgres else ''}"
            )
            # Claims take turns (a short lock, released at commit).
            await sql.xact_lock(tx, CLAIM_LOCK_KEY)
            await sql.fresh_plans(tx)
            candidates = await tx.execute_query_dict(due, params)
            if not candidates:
                return []
            limits = {p: a.rate_limits for p, a in self.adapters.items() if a.rate_limits}
            slots = await _load_slots(tx, candidates, limits)
            ration = _ration(candidates, limits, slots, at)
            if ration.later:
                await tx.execute_many(
                    _PUT_BACK_SQL[postgres], [[until, row_id] for row_id, until in ration.later.items()]
                )
            if ration.slots and postgres:  # the slots in one statement (an executemany is a statement a row)
                await tx.execute_query(_SLOTS_PG, [list(c) for c in zip(*_slot_rows(ration.slots), strict=True)])
            elif ration.slots:
                await tx.execute_many(_SLOT_SQL, _slot_rows(ration.slots))
            if not ration.now:
                return []
            chosen, ids = sql.among(postgres, ration.now, "bigint")
            lease = _LEASE_SQL.format(chosen=chosen)
            # In flight from the claim on: the rows are sent as soon as it commits, each recipient's in order. The
            # lease returns ``attempted_at`` as set now; a send needs it as it was (read under the claim's lock).
            started = {int(row["id"]): row["attempted_at"] for row in candidates}
            leased = await tx.execute_query_dict(sql.for_conn(lease, tx), [lease_until, datetime.now(UTC), *ids, at])
        return sorted((Claimed.of(row, started[int(row["id"])]) for row in leased), key=lambda row: row.id)

    async def _renew(self, claim: _Claim, ledger: _Ledger) -> None:
        """Extend the lease of the claim's unfinished rows every quarter of it, until cancelled."""
        loop = asyncio.get_running_loop()
        lease = self.settings.lease_seconds
        while True:
            await asyncio.sleep(lease / 4)
            started = loop.time()
            ledger.renew((self.clock.now() + timedelta(seconds=lease)).astimezone(UTC), claim.unfinished())
            try:
                await ledger.commit()
            except Exception:
                # Sends stop starting once the last renewed lease would not outlast them (``_Claim.lasts``).
                log.warning("outbox: could not renew a lease; retrying", exc_info=True)
                continue
            claim.deadline = started + lease

    async def _send_in_order(self, rows: Iterable[Claimed], now: datetime, claim: _Claim, ledger: _Ledger) -> None:
        """Send one recipient's rows in order (marked in flight by the claim), each outcome recorded at once."""
        for row in rows:
            if row.id not in ledger.held or not claim.lasts(self.send_timeout):
                return  # the claim is lost or about to be: these rows are claimed again once the lease runs out
            if self._busy():
                async with self._busy_sends:
                    outcome = await self._send_one(row, now)
            else:
                outcome = await self._send_one(row, now)
            claim.finish(row)
            ledger.record(outcome)  # written with what finishes about now

    async def _send_one(self, row: Claimed, now: datetime) -> _Outcome:
        adapter = self.adapters[row.platform]
        payload = dict(row.payload)
        reply_to = payload.pop("reply_to", {})
        reply = Reply.from_payload(row.kind, payload)  # type: ignore[arg-type]
        try:
            async with asyncio.timeout(self.send_timeout):
                result = await adapter.send(row.recipient, reply, reply_to, maybe_sent_at=row.attempted_at)
        except PermanentDeliveryError as exc:
            log.error("outbox %s to %s:%s failed permanently: %s", row.id, row.platform, row.recipient, exc)
            return _Outcome(row, OutboxStatus.FAILED, error=str(exc))
        except (DeliveryError, OSError, TimeoutError) as exc:
            retry_after = exc.retry_after if isinstance(exc, DeliveryError) else None
            return self._retry_later(row, now, str(exc) or type(exc).__name__, retry_after)
        except Exception as exc:
            log.exception("outbox %s: adapter crashed", row.id)
            return self._retry_later(row, now, repr(exc), None)
        return _Outcome(row, OutboxStatus.SENT, result=result, sent_at=self.clock.now())

    def _retry_later(self, row: Claimed, now: datetime, error: str, retry_after: float | None) -> _Outcome:
        if row.attempts >= self.settings.max_attempts:
            log.error("outbox %s to %s gave up after %s attempts: %s", row.id, row.platform, row.attempts, error)
            return _Outcome(row, OutboxStatus.FAILED, error=error)
        delay = min(self.settings.backoff_initial_seconds * 2 ** (row.attempts - 1), self.settings.backoff_max_seconds)
        if retry_after is not None:
            delay = max(delay, retry_after)
        log.warning("outbox %s to %s failed (%s); retry in %.1fs", row.id, row.platform, error, delay)
        return _Outcome(row, OutboxStatus.PENDING, error=error, not_before=now + timedelta(seconds=delay))


def _utc(moment: datetime | None) -> datetime | None:
    return moment.astimezone(UTC) if moment is not None else None


_ENQUEUE_SQL = (
    "INSERT INTO outbox (dedupe_key, platform, recipient, staff_id, kind, payload, status, not_before, created_at,"
    " attempts, last_error, result) VALUES {rows} ON CONFLICT (dedupe_key) DO NOTHING"
)
_ENQUEUE_ROW = "(?, ?, ?, ?, ?, ?, ?, ?, ?, 0, '', '{}')"
# Rows a statement at most: SQLite binds at most 32,766 parameters, nine a row here.
ENQUEUE_ROWS = 1_000
# An outcome is written only while this claim still holds the row (same attempt, still sending).
_RETRY_SQL = sql.both(
    "UPDATE outbox SET status = ?, not_before = ?, lease_until = NULL, last_error = ?"
    " WHERE id = ? AND status = 'sending' AND attempts = ?"
)
_SETTLE_SQL = sql.both(
    "UPDATE outbox SET status = ?, lease_until = NULL, last_error = ?, result = ?, sent_at = ?"
    " WHERE id = ? AND status = 'sending' AND attempts = ?"
)
_RENEW_SQL = sql.both("UPDATE outbox SET lease_until = ? WHERE id = ? AND status = 'sending' AND attempts = ?")
# After a renewal, the rows still leased to the claim: ``attempts`` unchanged since it claimed them.
_LEASED_SQL = "SELECT id, attempts FROM outbox WHERE status = 'sending' AND id {chosen}"


# Leased and marked in flight: the first send's start stays, from then on the row may have reached the person.
_LEASE_SQL = (
    "UPDATE outbox SET status = 'sending', lease_until = ?, attempts = attempts + 1,"
    " attempted_at = COALESCE(attempted_at, ?) WHERE id {chosen}"
    " AND (status = 'pending' OR (status = 'sending' AND lease_until < ?))"
    " RETURNING id, platform, recipient, kind, payload, attempts"
)
# A due row over its recipient's rate limit waits for its slot (unleased: another claim may take it then).
_PUT_BACK_SQL = sql.both("UPDATE outbox SET status = 'pending', not_before = ?, lease_until = NULL WHERE id = ?")
_SLOT_UPSERT = " ON CONFLICT (platform, recipient, period_seconds) DO UPDATE SET slot = excluded.slot"
_SLOT_SQL = "INSERT INTO outbox_quota (platform, recipient, period_seconds, slot) VALUES (?, ?, ?, ?)" + _SLOT_UPSERT
_SLOTS_PG = (
    "INSERT INTO outbox_quota (platform, recipient, period_seconds, slot)"
    " SELECT * FROM unnest($1::text[], $2::text[], $3::int[], $4::timestamptz[])" + _SLOT_UPSERT
)


def _slot_rows(slots: Slots) -> list[list[Any]]:
    return [[p, r, seconds, slot] for (p, r, seconds), slot in slots.items()]


@dataclass(slots=True)
class Claimed:
    """A row leased to this instance, as sending needs it (read from the claim's RETURNING, no model built)."""

    id: int
    platform: str
    recipient: str
    kind: str
    payload: dict[str, Any]
    attempts: int
    attempted_at: datetime | None

    @classmethod
    def of(cls, row: dict[str, Any], attempted_at: Any) -> Claimed:
        """From the lease's RETURNING and ``attempted_at`` as it was before the claim."""
        payload = row["payload"]
        return cls(
            int(row["id"]),
            str(row["platform"]),
            str(row["recipient"]),
            str(row["kind"]),
            parse_json(payload) if isinstance(payload, (str, bytes)) else dict(payload or {}),
            int(row["attempts"]),
            sql.moment(attempted_at) if attempted_at is not None else None,
        )


# (platform, recipient, period in seconds) → the recipient's next free send slot under that limit
Slots = dict[tuple[str, str, int], datetime]


async def _load_slots(
    conn: BaseDBAsyncClient, candidates: list[dict[str, Any]], limits: dict[str, tuple[RateLimit, ...]]
) -> Slots:
    """The stored send slots of the candidates' recipients on rate-limited platforms."""
    slots: Slots = {}
    for platform in limits:
        recipients = sorted({str(row["recipient"]) for row in candidates if row["platform"] == platform})
        if not recipients:
            continue
        chosen, names = sql.among(sql.is_postgres(conn), recipients, "text")
        query = f"SELECT recipient, period_seconds, slot FROM outbox_quota WHERE platform = ? AND recipient {chosen}"
        for row in await sql.select(conn, query, [platform, *names]):
            slots[(platform, str(row["recipient"]), int(row["period_seconds"]))] = sql.moment(row["slot"])
    return slots


@dataclass(slots=True)
class _Ration:
    now: list[int] = field(default_factory=list)  # ids that may be sent now
    later: dict[int, datetime] = field(default_factory=dict)  # id → when its recipient has a slot again
    slots: Slots = field(default_factory=dict)  # the slots this claim moved on


def _ration(
    candidates: list[dict[str, Any]], limits: dict[str, tuple[RateLimit, ...]], slots: Slots, at: datetime
) -> _Ration:
    """Which due rows (in id order) fit their recipient's limits at ``at``: a generic cell rate algorithm per
    recipient and limit (``count`` sends in a row, then one every ``seconds / count``), its state a slot per
    recipient that each send moves on by one interval. Once a recipient's row does not fit, its later rows wait
    too, so each recipient's rows still leave in order."""
    ration = _Ration()
    held: dict[tuple[str, str], datetime] = {}
    for row in candidates:
        row_id, platform, recipient = int(row["id"]), str(row["platform"]), str(row["recipient"])
        if (until := held.get((platform, recipient))) is not None:
            ration.later[row_id] = until
            continue
        keyed = [((platform, recipient, int(limit.seconds)), limit) for limit in limits.get(platform, ())]
        # A slot lies at most one period ahead of the clock that set it; one further ahead was set by a clock that
        # has since gone back (an adjusted clock, another instance's skew): it counts as a period all but used.
        for key, limit in keyed:
            if key in slots and slots[key] > at + timedelta(seconds=limit.seconds):
                slots[key] = at + limit.burst
        wait = max((slots.get(key, at) - limit.burst for key, limit in keyed), default=at)
        if wait > at:
            held[(platform, recipient)] = wait
            ration.later[row_id] = wait
            continue
        for key, limit in keyed:
            slots[key] = ration.slots[key] = max(slots.get(key, at), at) + limit.interval
        ration.now.append(row_id)
    return ration


@dataclass(slots=True)
class _Claim:
    """One drain's claimed rows and, on the event loop's clock, when their lease as last renewed runs out."""

    rows: list[Claimed]
    deadline: float
    finished: set[int] = field(default_factory=set)
    half_sent: asyncio.Event | None = None

    def finish(self, row: Claimed) -> None:
        self.finished.add(row.id)
        if self.half_sent is not None and 2 * len(self.finished) >= len(self.rows):
            self.half_sent.set()

    def lasts(self, seconds: float) -> bool:
        """The lease outlasts a send that starts now and takes at most ``seconds``."""
        return asyncio.get_running_loop().time() + seconds <= self.deadline

    def unfinished(self) -> list[Claimed]:
        return [row for row in self.rows if row.id not in self.finished]


class _Ledger:
    """A drain's writes in group commits: the outcomes and lease renewals waiting when a commit starts go into it
    together (one transaction), and whoever waits for a write waits for the commit carrying it.

    ``held`` are the claimed rows this claim still holds: a renewal that finds a row no longer leased to it (its
    lease ran out before the renewal committed, and another instance claimed it) drops it, and it is not sent.
    """

    def __init__(self, held: set[int]) -> None:
        self.held = held
        self._closed = False
        self._outcomes: list[_Outcome] = []
        self._renewals: list[tuple[datetime, list[Claimed]]] = []
        self._next: asyncio.Future[None] | None = None  # the commit the writes added now will be in
        self._running: asyncio.Future[None] | None = None  # the commit being written
        self._writer: asyncio.Task[None] | None = None
        self._urgent = asyncio.Event()  # someone waits: stop gathering outcomes and write

    def record(self, outcome: _Outcome) -> None:
        self._outcomes.append(outcome)
        self._schedule(urgent=False)

    def renew(self, until: datetime, rows: list[Claimed]) -> None:
        if rows:
            self._renewals.append((until, rows))
            self._schedule(urgent=True)

    def close(self) -> None:
        """No more sends: write what is waiting without gathering more."""
        self._closed = True
        self._urgent.set()

    async def commit(self) -> None:
        """Wait until every write added so far is committed (raises what the commit raised)."""
        waiting = self._next or self._running
        if waiting is not None:
            await asyncio.shield(waiting)  # a cancelled waiter must not cancel the commit others wait for

    def _schedule(self, *, urgent: bool) -> None:
        if urgent:
            self._urgent.set()
        if self._next is None:
            self._next = asyncio.get_running_loop().create_future()
        if self._writer is None or self._writer.done():
            self._writer = asyncio.create_task(self._write_all())

    async def _write_all(self) -> None:
        while self._next is not None:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(GATHER_SECONDS):
                    await self._urgent.wait()
            if not self._closed:
                self._urgent.clear()
            done = self._next
            self._running, self._next = done, None
            outcomes, renewals = self._outcomes, self._renewals
            self._outcomes, self._renewals = [], []
            try:
                self.held -= await _write(outcomes, renewals)
            except Exception as exc:
                done.set_exception(exc)
                done.exception()  # retrieved: a commit nobody waits for any more must not be logged as lost
            else:
                done.set_result(None)
            self._running = None


async def _write(outcomes: list[_Outcome], renewals: list[tuple[datetime, list[Claimed]]]) -> set[int]:
    """Write one group commit; return the ids of the renewed rows this claim no longer holds."""
    retried = [o for o in outcomes if o.status == OutboxStatus.PENDING]
    settled = [o for o in outcomes if o.status != OutboxStatus.PENDING]
    async with in_transaction() as conn:
        postgres = sql.is_postgres(conn)
        if retried:
            await conn.execute_many(
                _RETRY_SQL[postgres],
                [[o.status.value, _utc(o.not_before), o.error[:2000], o.row.id, o.row.attempts] for o in retried],
            )
        if settled:
            await conn.execute_many(
                _SETTLE_SQL[postgres],
                [
                    [
                        o.status.value,
                        o.error[:2000],
                        compact_json(o.result or {}),
                        _utc(o.sent_at),
                        o.row.id,
                        o.row.attempts,
                    ]
                    for o in settled
                ],
            )
        lost: set[int] = set()
        for until, rows in renewals:
            await conn.execute_many(_RENEW_SQL[postgres], [[until, row.id, row.attempts] for row in rows])
            chosen, ids = sql.among(postgres, [row.id for row in rows], "bigint")
            found = await conn.execute_query_dict(sql.for_conn(_LEASED_SQL.format(chosen=chosen), conn), ids)
            still = {(int(r["id"]), int(r["attempts"])) for r in found}
            lost |= {row.id for row in rows if (row.id, row.attempts) not in still}
    return lost


@dataclass(slots=True)
class _Outcome:
    """What happened to one claimed row: sent, failed for good, or back to pending at ``not_before``."""

    row: Claimed
    status: OutboxStatus
    error: str = ""
    result: dict[str, Any] | None = None
    sent_at: datetime | None = None
    not_before: datetime | None = None
