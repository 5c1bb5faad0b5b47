"""The one path of ERP order events into the database, whichever way they come (the signed webhook, a pulled
order feed, a spreadsheet import): validation into ``OrderEvent``, writing each order, its lines and its status
timeline once per (source, order no., status), and each affected customer's repurchase window.

An event is a JSON object (the schema is in README.md, "Orders from the ERP"): ``order_no``, ``customer`` (name or
alias), ``status`` (code or Chinese label), ``at``, and optionally ``event_id``, ``source``, ``order_date``,
``total``, ``lines`` (``product``, ``quantity``, ``amount``, ``product_line``), ``carrier``, ``tracking_no``,
``invoice_no``. A line's product line is the ERP's inventory class (存货分类), else ``erp.product_lines``.
Amounts are yuan: no negative total, quantity or amount, and lines sum to the total within a yuan.

An order feed (``OrderFeed``: ``fetch_changes(since) -> FeedPage``) is what a pull integration registers under
``ORDER_FEEDS``; ``sync_feed`` reads it from its cursor page by page, fetching ahead of the writing, commits the rows
of a group of pages together with the cursor after them, retries a failed fetch with backoff, and tells the admins
what it did.
"""

from __future__ import annotations

import asyncio
import fnmatch
import functools
import itertools
import logging
import re
import statistics
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal, InvalidOperation
from typing import Any, Protocol
from zoneinfo import ZoneInfo

from aiohttp import web
from tortoise import timezone
from tortoise.backends.base.client import BaseDBAsyncClient
from tortoise.transactions import in_transaction

from bot import sql
from bot.config import Settings
from bot.context import Services
from bot.types import Reply
from models.customers import Customer
from models.orders import (
    ORDER_STATUS_LABELS,
    ORDER_STATUS_RANK,
    Order,
    OrderFeedCursor,
    OrderLine,
    OrderStatus,
    OrderStatusChange,
    Repurchase,
)
from models.staff import Role, Staff

log = logging.getLogger(__name__)

SOURCE = "erp"  # orders whose event names no source: one ERP, however they reached us
LINE_TOLERANCE = Decimal(1)  # lines may differ from the total by rounding, up to a yuan
TEXT_MAX = 64
CHUNK = 500
COPY_MIN = 1000  # plain rows from which PostgreSQL's COPY is used rather than multi-row inserts
_STATUS_BY_NAME: dict[str, OrderStatus] = {
    **{s.value: s for s in OrderStatus},
    **{label: s for s, label in ORDER_STATUS_LABELS.items()},
}


class BadEvent(ValueError):
    """An event that cannot be used; the message says why (Chinese and English)."""


@dataclass(frozen=True, slots=True)
class Line:
    product: str
    quantity: Decimal
    amount: Decimal
    product_line: str = ""


@dataclass(frozen=True, slots=True)
class OrderEvent:
    """One validated change of an order: it reached ``status`` at ``at``."""

    source: str
    order_no: str
    customer: str
    status: OrderStatus
    at: datetime
    day: date  # the local day of ``at``: the order day of an order no event gave one
    order_date: date | None = None
    total: Decimal | None = None
    lines: tuple[Line, ...] = ()
    carrier: str = ""
    tracking_no: str = ""
    invoice_no: str = ""
    event_id: str = ""


def parse_status(value: object) -> OrderStatus:
    status = _STATUS_BY_NAME.get(str(value).strip()) if value is not None else None
    if status is None:
        raise BadEvent(f"未知状态 unknown status {value!r}")
    return status


def _text(raw: Mapping[str, Any], key: str, *, required: bool = False, limit: int = TEXT_MAX) -> str:
    value = raw.get(key)
    if value is None or value == "":
        if required:
            raise BadEvent(f"缺少 {key} missing {key}")
        return ""
    if not isinstance(value, str | int) or isinstance(value, bool):
        raise BadEvent(f"{key} 应为文本 must be text")
    text = str(value).strip()
    if len(text) > limit:
        raise BadEvent(f"{key} 过长 too long")
    if required and not text:
        raise BadEvent(f"缺少 {key} missing {key}")
    return text


def _amount(value: object, key: str) -> Decimal:
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise BadEvent(f"{key} 应为数字 must be a number")
    try:
        number = Decimal(str(value).replace(",", "").strip())
    except InvalidOperation as exc:
        raise BadEvent(f"{key} 应为数字 must be a number") from exc
    if not number.is_finite() or number.copy_abs() >= Decimal(10) ** 13:
        raise BadEvent(f"{key} 超出范围 out of range")
    if number < 0:
        raise BadEvent(f"{key} 不能为负数 must not be negative")
    return number


def _moment(value: object, key: str, tz: ZoneInfo) -> datetime:
    if not isinstance(value, str):
        raise BadEvent(f"{key} 应为 ISO 8601 时间 must be an ISO 8601 time")
    try:
        moment = datetime.fromisoformat(value.strip())
    except ValueError as exc:
        raise BadEvent(f"{key} 应为 ISO 8601 时间 must be an ISO 8601 time") from exc
    return (moment if moment.tzinfo else moment.replace(tzinfo=tz)).astimezone(UTC)


def _lines(value: object) -> tuple[Line, ...]:
    if value is None:
        return ()
    if not isinstance(value, list):
        raise BadEvent("lines 应为数组 must be an array")
    lines = []
    for i, item in enumerate(value, 1):
        if not isinstance(item, dict):
            raise BadEvent(f"lines[{i}] 应为对象 must be an object")
        product = _text(item, "product", required=True, limit=128)
        quantity, amount = _amount(item.get("quantity"), "quantity"), _amount(item.get("amount"), "amount")
        lines.append(Line(product, quantity, amount, _text(item, "product_line")))
    return tuple(lines)


def parse_event(raw: object, tz: ZoneInfo) -> OrderEvent:
    """One event as JSON decoded it; ``BadEvent`` when anything in it is unusable."""
    if not isinstance(raw, dict):
        raise BadEvent("事件应为 JSON 对象 an event must be a JSON object")
    at = _moment(raw.get("at"), "at", tz)
    order_date = None
    if raw.get("order_date") not in (None, ""):
        order_date = _moment(raw.get("order_date"), "order_date", tz).astimezone(tz).date()
    lines = _lines(raw.get("lines"))
    total = _amount(raw["total"], "total") if raw.get("total") not in (None, "") else None
    if lines:
        summed = sum((line.amount for line in lines), Decimal(0))
        if total is None:
            total = summed
        elif abs(summed - total) > LINE_TOLERANCE:
            raise BadEvent(f"明细合计 {summed} 与总额 {total} 不符 lines do not sum to the total")
    return OrderEvent(
        source=_text(raw, "source", limit=32) or SOURCE,
        order_no=_text(raw, "order_no", required=True),
        customer=_text(raw, "customer", required=True, limit=128),
        status=parse_status(raw.get("status")),
        at=at,
        day=at.astimezone(tz).date(),
        order_date=order_date,
        total=total,
        lines=lines,
        carrier=_text(raw, "carrier"),
        tracking_no=_text(raw, "tracking_no"),
        invoice_no=_text(raw, "invoice_no"),
        event_id=_text(raw, "event_id", limit=128),
    )


def parse_events(items: Sequence[object], tz: ZoneInfo) -> tuple[list[OrderEvent], list[str]]:
    """Every usable event, and one reason per unusable one (numbered from 1)."""
    events, rejected = [], []
    for i, raw in enumerate(items, 1):
        try:
            events.append(parse_event(raw, tz))
        except BadEvent as exc:
            rejected.append(f"事件 {i} event {i}: {exc}")
    return events, rejected


async def customer_ids(names: Iterable[str], conn: BaseDBAsyncClient) -> dict[str, int]:
    """The customers these names (or aliases) mean; a name nobody has is left out."""
    wanted = set(names)
    found: dict[str, int] = {}
    ordered = sorted(wanted)
    for i in range(0, len(ordered), CHUNK):
        chunk = ordered[i : i + CHUNK]
        query = f"SELECT id, name FROM customer WHERE name IN ({', '.join('?' * len(chunk))})"
        found.update(
            {str(name): int(cid) for cid, name in (await conn.execute_query(sql.for_conn(query, conn), chunk))[1]}
        )
    if wanted - set(found):  # aliases live in a JSON list: look through them only when a name was not found
        for cid, name, aliases in await Customer.all().using_db(conn).values_list("id", "name", "aliases"):
            for candidate in (str(name), *(str(a) for a in aliases or [])):
                if candidate in wanted:
                    found.setdefault(candidate, int(cid))
    return found


@dataclass
class Applied:
    """What writing a set of events changed."""

    orders: int = 0  # new orders
    statuses: int = 0  # new steps on timelines
    repeats: int = 0  # events whose order and status were already known
    customers: set[int] = field(default_factory=set)

    def add(self, other: Applied) -> None:
        self.orders += other.orders
        self.statuses += other.statuses
        self.repeats += other.repeats
        self.customers |= other.customers


async def apply_events(
    events: Sequence[OrderEvent],
    customers: Mapping[str, int],
    settings: Settings,
    now: datetime,
    conn: BaseDBAsyncClient,
    *,
    windows: bool = True,
) -> Applied:
    """Write these events (every customer in ``customers``) in ``conn``'s transaction; recompute the windows.

    Set-based whatever the batch's size: one read of its known orders and one of their timelines, then one upsert of its
    orders, one insert of the new steps, one replacement of the lines told, and one recomputation of the windows of
    the customers whose order days may have changed (a new order, another order day, a cancellation, new lines);
    without ``windows``, the caller recomputes them (an import, once at its end)."""
    await _lock(events, customers, conn)
    by_order: dict[tuple[str, str], list[OrderEvent]] = {}
    for event in events:
        by_order.setdefault((event.source, event.order_no), []).append(event)
    known, timelines = await _known_orders(list(by_order), conn)
    applied = Applied()
    reshaped: set[int] = set()  # customers whose windows may change
    orders: list[_Order] = []
    steps: dict[tuple[str, str], dict[OrderStatus, datetime]] = {}
    lines: dict[tuple[str, str], tuple[Line, ...]] = {}
    for key, told in by_order.items():
        order = known.get(key) or _Order(key[0], key[1], customers[told[0].customer], told[0].day)
        before = (order.order_date, order.status == OrderStatus.CANCELLED)
        new = _fold(order, told, timelines.get(order.id, {}) if order.id is not None else {})
        orders.append(order)
        steps[key] = new
        if told_lines := next((e.lines for e in reversed(told) if e.lines), ()):
            lines[key] = told_lines
        if order.id is None or key in lines or before != (order.order_date, order.status == OrderStatus.CANCELLED):
            reshaped.add(order.customer_id)
        applied.orders += order.id is None
        applied.statuses += len(new)
        applied.repeats += len(told) - len(new)
        applied.customers.add(order.customer_id)
    ids = await _upsert_orders(orders, conn)
    await _insert(
        conn,
        "order_status_change (order_id, status, at, recorded_at)",
        [(ids[key], s.value, at, now) for key, new in steps.items() for s, at in new.items()],
    )
    replaced = [ids[key] for key in lines if key in known]
    if replaced:
        await OrderLine.filter(order_id__in=replaced).using_db(conn).delete()
    line_of = product_line_of(settings)
    await _insert(
        conn,
        "order_line (order_id, product, product_line, quantity, amount)",
        [
            (ids[key], x.product, x.product_line or line_of(x.product), x.quantity, x.amount)
            for key, told in lines.items()
            for x in told
        ],
    )
    if windows:
        await refresh_repurchase(sorted(reshaped), settings, conn)
    return applied


@dataclass(slots=True)
class _Order:
    """An order as a batch finds it and leaves it (a plain record: batches hold many)."""

    source: str
    order_no: str
    customer_id: int
    order_date: date
    id: int | None = None
    total: Decimal = Decimal(0)
    status: OrderStatus = OrderStatus.PLACED
    status_at: datetime | None = None
    carrier: str = ""
    tracking_no: str = ""
    invoice_no: str = ""


_KNOWN_FIELDS = (
    "customer_id",
    "order_date",
    "id",
    "total",
    "status",
    "status_at",
    "carrier",
    "tracking_no",
    "invoice_no",
)


async def _known_orders(
    keys: list[tuple[str, str]], conn: BaseDBAsyncClient
) -> tuple[dict[tuple[str, str], _Order], dict[int, dict[OrderStatus, datetime]]]:
    """The orders among these (source, order no.) that exist, and the steps they reached: one query per source
    (an ERP is usually one), and one for the timelines of those found (none when every order is new)."""
    by_source: dict[str, list[str]] = {}
    for source, order_no in keys:
        by_source.setdefault(source, []).append(order_no)
    found: dict[tuple[str, str], _Order] = {}
    for source, numbers in by_source.items():
        for i in range(0, len(numbers), CHUNK):
            query = Order.filter(source=source, order_no__in=numbers[i : i + CHUNK]).using_db(conn)
            for order_no, *values in await query.values_list("order_no", *_KNOWN_FIELDS):
                found[(source, str(order_no))] = order = _Order(source, str(order_no), *values)
                order.status = OrderStatus(order.status)
    timelines: dict[int, dict[OrderStatus, datetime]] = {}
    ids = [o.id for o in found.values() if o.id is not None]
    for i in range(0, len(ids), CHUNK):
        steps = OrderStatusChange.filter(order_id__in=ids[i : i + CHUNK]).using_db(conn)
        for order_id, status, at in await steps.values_list("order_id", "status", "at"):
            timelines.setdefault(int(order_id), {})[OrderStatus(status)] = at
    return found, timelines


def _fold(order: _Order, told: list[OrderEvent], steps: Mapping[OrderStatus, datetime]) -> dict[OrderStatus, datetime]:
    """Take one order's events into it; the steps of its timeline they add."""
    new: dict[OrderStatus, datetime] = {}
    for event in told:
        _take_details(order, event)
        if event.status not in steps and event.status not in new:
            new[event.status] = event.at
    # The order's status is the latest step of its timeline (the later step when two share a moment).
    order.status, order.status_at = max({**steps, **new}.items(), key=lambda s: (s[1], ORDER_STATUS_RANK[s[0]]))
    return new


_ORDER_COLUMNS = (
    "source",
    "order_no",
    "customer_id",
    "order_date",
    "total",
    "status",
    "status_at",
    "carrier",
    "tracking_no",
    "invoice_no",
)
_SEEN_COLUMNS = "order_event_seen (source, event_id, received_at)"
_ORDER_UPDATES = ", ".join(f"{c} = excluded.{c}" for c in _ORDER_COLUMNS[3:])


async def _upsert_orders(orders: list[_Order], conn: BaseDBAsyncClient) -> dict[tuple[str, str], int]:
    """Write these orders as they now are (new ones created, known ones updated; the customer of a known order
    stays); their ids by (source, order no.)."""
    rows = [
        (
            o.source,
            o.order_no,
            o.customer_id,
            o.order_date,
            o.total,
            o.status.value,
            o.status_at,
            o.carrier,
            o.tracking_no,
            o.invoice_no,
            timezone.now(),
        )
        for o in orders
    ]
    returned = await _insert(
        conn,
        f"customer_order ({', '.join(_ORDER_COLUMNS)}, created_at)",
        rows,
        f" ON CONFLICT (source, order_no) DO UPDATE SET {_ORDER_UPDATES} RETURNING id, source, order_no",
    )
    return {(str(r["source"]), str(r["order_no"])): int(r["id"]) for r in returned}


async def _insert(
    conn: BaseDBAsyncClient, into: str, rows: Sequence[tuple[Any, ...]], tail: str = ""
) -> list[dict[str, Any]]:
    """Multi-row ``INSERT INTO {into} VALUES …{tail}``, ``CHUNK`` rows a statement; what ``tail`` returns. Many
    plain rows (no ``tail``) go by ``COPY`` on PostgreSQL (an import)."""
    returned: list[dict[str, Any]] = []
    if not tail and len(rows) >= COPY_MIN and sql.is_postgres(conn):
        table, _, columns = into.partition(" (")
        async with conn.acquire_connection() as raw:
            await raw.copy_records_to_table(table, columns=columns.rstrip(")").split(", "), records=rows)
        return returned
    for i in range(0, len(rows), CHUNK):
        chunk = rows[i : i + CHUNK]
        statement = _insert_statement(into, tail, len(chunk), len(chunk[0]), sql.is_postgres(conn))
        params = [value for row in chunk for value in row]
        if "RETURNING" in tail:
            returned += await conn.execute_query_dict(statement, params)
        else:
            await conn.execute_query(statement, params)
    return returned


@functools.lru_cache(maxsize=256)
def _insert_statement(into: str, tail: str, rows: int, width: int, postgres: bool) -> str:
    row = "(" + ", ".join("?" * width) + ")"
    statement = f"INSERT INTO {into} VALUES {', '.join([row] * rows)}{tail}"
    return sql.numbered(statement) if postgres else statement


async def _lock(events: Sequence[OrderEvent], customers: Mapping[str, int], conn: BaseDBAsyncClient) -> None:
    """Hold the orders and customers these events touch until commit (PostgreSQL; SQLite has one writer), so that
    concurrent requests about one order or one customer (its timeline, its repurchase window) take turns instead
    of failing on a unique key; always taken in the same order, so two batches never deadlock."""
    names = {f"order:{e.source}:{e.order_no}" for e in events} | {f"customer:{customers[e.customer]}" for e in events}
    if not names or not sql.is_postgres(conn):
        return
    keys = ",".join(str(k) for k in sorted(map(sql.lock_key, names)))
    # One round trip for all of them, taken in that order (the keys are integers made here, not input).
    await conn.execute_script(
        f"DO $$ DECLARE k bigint; BEGIN FOREACH k IN ARRAY ARRAY[{keys}]::bigint[] LOOP"
        " PERFORM pg_advisory_xact_lock(k); END LOOP; END $$"
    )


def _take_details(order: _Order, event: OrderEvent) -> None:
    """What an event says about the order beyond its status; what it leaves out stays as it was."""
    if event.order_date is not None:
        order.order_date = event.order_date
    if event.total is not None:
        order.total = event.total
    for name in ("carrier", "tracking_no", "invoice_no"):
        if value := getattr(event, name):
            setattr(order, name, value)


async def remember_events(events: Iterable[OrderEvent], now: datetime, conn: BaseDBAsyncClient) -> list[str]:
    """Record the events' ids; the ids among them that were taken in before (or twice in ``events``)."""
    # In one order, so that two requests sharing ids wait for each other instead of deadlocking.
    told = sorted((e.source, e.event_id) for e in events if e.event_id)
    rows = [(source, event_id, now) for source, event_id in told]
    tail = " ON CONFLICT DO NOTHING RETURNING source, event_id"
    fresh = {(str(r["source"]), str(r["event_id"])) for r in await _insert(conn, _SEEN_COLUMNS, rows, tail)}
    replayed = []
    for key in told:
        if key in fresh:
            fresh.discard(key)
        else:
            replayed.append(key[1])
    return replayed


# Product lines and repurchase windows

CUSTOMER_BASIS = "customer"  # a window from the customer's own orders
LINE_BASIS = "line"  # a window from the product line's rhythm over all its customers


def product_line_of(settings: Settings) -> Callable[[str], str]:
    """The product line a product name falls in by ``erp.product_lines`` (for lines the ERP sent without one)."""
    patterns = [
        (line, re.compile(fnmatch.translate(p.casefold())))
        for line, globs in settings.erp.product_lines.items()
        for p in globs
    ]

    def line_of(product: str) -> str:
        name = product.casefold()
        return next((line for line, pattern in patterns if pattern.match(name)), "")

    return line_of


@dataclass(frozen=True, slots=True)
class Window:
    """When a customer's next order is expected: the typical interval and its spread (days) after the last."""

    last: date
    interval: int
    spread: int
    orders: int
    basis: str = CUSTOMER_BASIS

    @property
    def predicted(self) -> date:
        return self.last + timedelta(days=self.interval)

    def remind_on(self, lead_days: int) -> date:
        return self.predicted - timedelta(days=self.spread + lead_days)


def window_of(days: Iterable[date], min_orders: int) -> Window | None:
    """The median interval between distinct order days and its median absolute deviation; None with too few."""
    ordered = sorted(set(days))
    if len(ordered) < max(2, min_orders):
        return None
    gaps = [(b - a).days for a, b in itertools.pairwise(ordered)]
    interval = statistics.median(gaps)
    spread = statistics.median(abs(g - interval) for g in gaps)
    return Window(ordered[-1], max(1, round(interval)), round(spread), len(ordered))


@dataclass(frozen=True, slots=True)
class Rhythm:
    """A product line's typical interval over its customers: the median of their own intervals, and a robust
    spread (the median absolute deviation of those intervals, at least their median own spread)."""

    interval: int
    spread: int

    def window(self, days: Iterable[date]) -> Window:
        ordered = sorted(set(days))
        return Window(ordered[-1], self.interval, self.spread, len(ordered), LINE_BASIS)


def rhythm_of(windows: Sequence[tuple[int, int]], min_customers: int) -> Rhythm | None:
    """The rhythm of a line from its customers' own (interval, spread); None with too few customers."""
    if len(windows) < min_customers:
        return None
    interval = statistics.median(i for i, _ in windows)
    deviation = statistics.median(abs(i - interval) for i, _ in windows)
    own = statistics.median(s for _, s in windows)
    return Rhythm(max(1, round(interval)), round(max(deviation, own)))


def local_midnight(day: date, tz: ZoneInfo) -> datetime:
    return datetime.combine(day, time(0), tzinfo=tz).astimezone(UTC)


# Each customer's order days, by product line ('' for an order without one): one row per distinct day and line.
_ORDER_DAYS = (
    "SELECT o.customer_id, o.order_date, COALESCE(l.product_line, '') FROM customer_order o"
    " LEFT JOIN order_line l ON l.order_id = o.id AND l.product_line <> ''"
    " WHERE o.status <> 'cancelled' AND o.customer_id {} GROUP BY 1, 2, 3"
)
_WINDOW_COLUMNS = (
    "repurchase (customer_id, product_line, basis, order_count, last_order_date, interval_days, spread_days,"
    " predicted_on, remind_at, updated_at)"
)


async def refresh_repurchase(customer_ids: list[int], settings: Settings, conn: BaseDBAsyncClient) -> None:
    """Recompute these customers' windows from their orders (cancelled ones aside).

    Per product line a customer bought: its own window with ``rules.repurchase_min_orders`` order days of the
    line, else the line's rhythm (``rhythm_of``, over the customers with their own window of it) from the last
    order of the line. A customer with no window of any line has one over all its orders, as before lines."""
    min_orders = settings.rules.repurchase_min_orders
    for i in range(0, len(customer_ids), CHUNK):
        chunk = customer_ids[i : i + CHUNK]
        every: dict[int, set[date]] = {}
        by_line: dict[tuple[int, str], set[date]] = {}
        chosen, params = sql.among(sql.is_postgres(conn), chunk, "int")
        _, rows = await conn.execute_query(sql.for_conn(_ORDER_DAYS.format(chosen), conn), params)
        for customer_id, order_day, line in rows:
            cid, day = int(customer_id), _day(order_day)
            every.setdefault(cid, set()).add(day)
            if line:
                by_line.setdefault((cid, str(line)), set()).add(day)
        await conn.execute_query(sql.for_conn(f"DELETE FROM repurchase WHERE customer_id {chosen}", conn), params)
        own = {key: w for key, days in by_line.items() if (w := window_of(days, min_orders))}
        await _write_windows(own, settings, conn)
        wanting = {key: days for key, days in by_line.items() if key not in own}
        rhythms = await _rhythms({line for _, line in wanting}, settings, conn)
        fallback = {key: rhythms[key[1]].window(days) for key, days in wanting.items() if key[1] in rhythms}
        lined = {cid for cid, _ in [*own, *fallback]}
        whole = {(cid, ""): w for cid in chunk if cid not in lined and (w := window_of(every.get(cid, ()), min_orders))}
        await _write_windows({**fallback, **whole}, settings, conn)


def _day(value: object) -> date:
    return value if isinstance(value, date) else date.fromisoformat(str(value))


async def _rhythms(lines: set[str], settings: Settings, conn: BaseDBAsyncClient) -> dict[str, Rhythm]:
    """The rhythm of each of these lines that has one."""
    if not lines:
        return {}
    windows: dict[str, list[tuple[int, int]]] = {}
    query = Repurchase.filter(basis=CUSTOMER_BASIS, product_line__in=sorted(lines)).using_db(conn)
    for line, interval, spread in await query.values_list("product_line", "interval_days", "spread_days"):
        windows.setdefault(str(line), []).append((int(interval), int(spread)))
    minimum = settings.erp.line_min_customers
    return {line: r for line, w in windows.items() if (r := rhythm_of(w, minimum))}


async def _write_windows(
    windows: Mapping[tuple[int, str], Window], settings: Settings, conn: BaseDBAsyncClient
) -> None:
    lead, tz, stamp = settings.rules.repurchase_lead_days, settings.tz, timezone.now()
    rows = [
        (cid, line, w.basis, w.orders, w.last, w.interval, w.spread, w.predicted, local_midnight(w.remind_on(lead), tz))
        for (cid, line), w in windows.items()
    ]
    await _insert(conn, _WINDOW_COLUMNS, [(*row, stamp) for row in rows])


# Pulled feeds


@dataclass(frozen=True, slots=True)
class FeedPage:
    """Events changed since a position, the position after them, and whether more follow."""

    events: list[dict[str, Any]]
    position: str
    more: bool = False


class OrderFeed(Protocol):
    """An ERP the bot pulls order changes from; ``since`` is a position it gave before ("" at first)."""

    @property
    def name(self) -> str: ...

    async def fetch_changes(self, since: str) -> FeedPage: ...


ORDER_FEEDS = web.AppKey("order_feeds", list[OrderFeed])


class FeedUnavailable(RuntimeError):
    """The feed could not be read, retries included."""


@dataclass
class SyncSummary:
    feed: str
    pages: int = 0
    applied: Applied = field(default_factory=Applied)
    rejected: list[str] = field(default_factory=list)
    position: str = ""
    error: str = ""

    def text(self) -> str:
        head = f"ERP 订单同步（{self.feed}）" + ("未完成" if self.error else "完成")
        parts = [
            f"{head}：{self.pages} 页，新订单 {self.applied.orders} 个，新状态 {self.applied.statuses} 条，"
            f"重复 {self.applied.repeats} 条，拒绝 {len(self.rejected)} 条"
        ]
        parts.extend(self.rejected[:10])
        if self.error:
            parts.append(f"出错：{self.error}，下次同步会从上次的位置继续")
        return "\n".join(parts)


async def fetch_with_retries(feed: OrderFeed, since: str, settings: Settings) -> FeedPage:
    """One page; a failure is tried again after a doubling pause, ``erp.fetch_attempts`` times in all."""
    erp = settings.erp
    pause = erp.retry_backoff_seconds
    for attempt in range(1, erp.fetch_attempts + 1):
        try:
            return await feed.fetch_changes(since)
        except FeedUnavailable as exc:
            if attempt == erp.fetch_attempts:
                raise
            log.warning("order feed %s: %s; trying again in %.1fs", feed.name, exc, pause)
            await asyncio.sleep(pause)
            pause *= 2
    raise FeedUnavailable("no attempts configured")


PAGES_AHEAD = 8  # pages fetched ahead of the writing at most


async def sync_feed(bot: Services, feed: OrderFeed, since: str | None = None) -> SyncSummary:
    """Read ``feed`` from ``since`` (default: its cursor) to its end, pages fetched ahead of the writing, and
    commit them in order, in groups of about ``erp.sync_batch_events`` events, each with the cursor after it.

    A group whose writing fails leaves the cursor where it was, so the next sync reads it again; rows already
    written are written once (by order and status), so nothing is lost and nothing doubles.
    """
    settings = bot.settings
    cursor = await OrderFeedCursor.get_or_none(feed=feed.name)
    position = since if since is not None else (cursor.position if cursor else "")
    summary = SyncSummary(feed.name, position=position)
    pages: asyncio.Queue[FeedPage | Exception] = asyncio.Queue(PAGES_AHEAD)

    async def fetch_all(position: str) -> None:
        try:
            while True:
                page = await fetch_with_retries(feed, position, settings)
                await pages.put(page)
                if not page.more or not page.events:
                    return
                position = page.position
        except Exception as exc:  # handed to the writer, which reports it after writing what came before
            await pages.put(exc)

    fetching = asyncio.create_task(fetch_all(position))
    try:
        done = False
        while not done:
            group: list[FeedPage] = []
            failure: Exception | None = None
            while not done and sum(len(p.events) for p in group) < settings.erp.sync_batch_events:
                item = await pages.get()
                if isinstance(item, Exception):
                    failure, done = item, True
                else:
                    group.append(item)
                    done = not item.more or not item.events
            if group:
                await _commit_pages(bot, feed.name, group, summary)
                summary.position = group[-1].position
            if failure is not None:
                raise failure
    except Exception as exc:  # reported to the admins and by `crmbot erp sync`; the cursor stays
        log.exception("order feed %s: sync stopped", feed.name)
        summary.error = str(exc) or type(exc).__name__
    finally:
        fetching.cancel()
        await asyncio.gather(fetching, return_exceptions=True)
    # Tried tonight, whatever came of it: the nightly check waits for tomorrow (the admin can run it again now).
    async with in_transaction() as conn:
        await _cursor(feed.name, conn, synced_at=bot.clock.now())
    await _tell_admins(bot, summary)
    return summary


async def _commit_pages(bot: Services, feed: str, group: list[FeedPage], summary: SyncSummary) -> None:
    settings, now = bot.settings, bot.clock.now()
    events, rejected = parse_events([e for page in group for e in page.events], settings.tz)
    async with in_transaction() as conn:
        known = await customer_ids((e.customer for e in events), conn)
        for event in events:
            if event.customer not in known:
                rejected.append(f"订单 {event.order_no}：客户「{event.customer}」不存在 unknown customer")
        usable = [e for e in events if e.customer in known]
        applied = await apply_events(usable, known, settings, now, conn)
        await remember_events(usable, now, conn)
        await _cursor(feed, conn, position=group[-1].position)
    summary.pages += len(group)
    summary.applied.add(applied)
    summary.rejected.extend(rejected)


async def _cursor(feed: str, conn: BaseDBAsyncClient, **values: Any) -> None:
    """Set these columns of the feed's cursor (the row is created the first time), in one statement."""
    row = {"feed": feed, "position": "", "synced_at": None, **values}
    updates = ", ".join(f"{name} = excluded.{name}" for name in values)
    statement = f"INSERT INTO order_feed_cursor ({', '.join(row)}) VALUES (?, ?, ?) ON CONFLICT (feed) DO UPDATE SET"
    await conn.execute_query(sql.for_conn(f"{statement} {updates}", conn), list(row.values()))


async def _tell_admins(bot: Services, summary: SyncSummary) -> None:
    stamp = bot.clock.now().strftime("%Y%m%dT%H%M%S")
    for admin in await Staff.filter(role=Role.ADMIN, active=True):
        await bot.outbox.push(admin, Reply(summary.text()), f"order_sync:{summary.feed}:{stamp}:{admin.id}")
    bot.outbox.wake()


def sync_due(last: datetime | None, now: datetime, settings: Settings) -> bool:
    """Tonight's pull is due: the configured local time has passed since the last sync (or there was none)."""
    tz = settings.tz
    today = datetime.combine(now.astimezone(tz).date(), settings.erp.sync_at, tzinfo=tz)
    moment = today if today <= now else today - timedelta(days=1)
    return last is None or last < moment


async def nightly(bot: Services, feed: OrderFeed) -> SyncSummary | None:
    """The scheduled pull: sync ``feed`` when tonight's time has passed since its last sync (from the database)."""
    cursor = await OrderFeedCursor.get_or_none(feed=feed.name)
    if not sync_due(cursor.synced_at if cursor else None, bot.clock.now(), bot.settings):
        return None
    return await sync_feed(bot, feed)
