"""Keyword search over archived customer conversations: the n-gram index and the query, one backend per database.

Semantics are substring semantics: the hits for a query are exactly the visible messages whose text contains
it (case-insensitive), as a grep would find them, for any query of one character or more. The index stores every
character unigram and bigram of a message's normalized text; a query looks up grams it must contain (its single
character, or bigrams side by side that cover it, on PostgreSQL the rarest of them), and every candidate is
checked exactly against the stored normalized body, so recall is complete and there are no false hits.

Each indexed message has an order key ``sent_at in ms << 20 | message id`` so that "newest first" and the
time filters are a walk down one integer: SQLite keeps the grams in a contentless FTS5 table whose rowid is the
key; PostgreSQL keeps them in a ``text[]`` column with a GIN index next to a B-tree on the key. The tables are
created by migration ``0002_search``. The data scope (a rep sees their own customers, a manager the team's,
directors and admins everything) is part of the SQL, never a filter applied afterwards.
"""

from __future__ import annotations

import asyncio
import io
import time
import weakref
from collections.abc import AsyncIterator, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo

from tortoise.backends.base.client import BaseDBAsyncClient, TransactionalDBClient
from tortoise.transactions import in_transaction

from bot.sql import default as default_connection
from bot.sql import is_postgres, xact_lock
from models.customers import Customer
from models.staff import Role, Staff

KEY_SHIFT = 20
KEY_LOW = (1 << KEY_SHIFT) - 1
SNIPPET_CHARS = 40
SNIPPET_BEFORE = 14
WINDOW = 2000  # PostgreSQL: newest messages checked directly before asking the GIN index
# Characters of a long body turned into grams between two turns of the event loop (under a millisecond each): a
# 34k-character paste has tens of thousands of distinct grams, work that would otherwise hold the loop in one piece
# (30-160 ms measured on a busy 2-core machine).
GRAM_SLICE = 4096
MONTHS_AHEAD = 3  # PostgreSQL: partitions created ahead at start-up
# PostgreSQL: a query's grams looked up in a month's index: its two rarest, and a third under FREQUENT. Each gram
# looked up costs every month's index a lookup, a frequent one a walk over its long list (a rare word's search is
# mostly that); the body check does the rest. The shares come from a sample of every month's documents.
LOOKED_UP = 3
FREQUENT = 0.02
GRAM_SAMPLE = 5_000  # documents sampled for the shares and the estimates, about
GRAM_SAMPLE_TTL = 3600.0  # seconds a sample is used for
MIN_SAMPLED = 1_000  # PostgreSQL: the kept sample's documents in a query's range that make its estimate
KEPT_AT_MOST = 4 * GRAM_SAMPLE  # PostgreSQL: documents the kept sample holds, at most
GRAM_STATISTICS = 10  # PostgreSQL: statistics target of the gram arrays (migration 0017: planning a month's branch)
COUNT_BOUND = 1_000  # totals are exact up to this many hits, estimated beyond ([search] count_bound)
# PostgreSQL: the hits a span of months is expected to hold, as a multiple of the hits still wanted, when the walk
# sizes its next span from the hits per document found so far.
SPAN_MARGIN = 4
# PostgreSQL: the same for the spans a total is counted in, as a multiple of the hits still to count up to the bound
# (a span too long costs planning its months, one too short a statement more).
COUNT_MARGIN = 2
# PostgreSQL, in the select list of every statement but the cursor's (which never runs in parallel):
# current_schema() is marked parallel unsafe, so the planner never starts parallel workers for a search. A statement
# over a few dozen partitions costs enough for it to plan a Gather, and starting the workers took 30-50 ms on a busy
# machine, several times the statement's own work.
SERIAL = "current_schema() AS serial"
# PostgreSQL: a span of this many months or more is read as two halves side by side, on two connections of the
# pool (a search inside a transaction has one, and reads it whole): a rare word looked for, or a word counted,
# across most of the archive then takes about half the time where a core is free. Fewer months cost less than the
# second statement's planning and round trip.
SPLIT_MONTHS = 4
SAMPLE = 5_000  # documents sampled whose share of hits makes the estimate
MIN_COUNTED = 200  # PostgreSQL: hits counted in whole months that make the estimate instead of the sample
CHUNK = 1_000  # hits a chunk when streaming every hit
DEFAULT_PARTITION = "search_doc_default"


def normalize(text: str) -> str:
    """Lower case, one character for one character (so offsets into the original text stay valid)."""
    lowered = text.lower()
    if len(lowered) == len(text):
        return lowered
    return "".join(c if len(c.lower()) != 1 else c.lower() for c in text)


def _separator(ch: str) -> bool:
    return ch.isspace() or not ch.isprintable()


def index_grams(body: str) -> list[str]:
    """Every distinct unigram and bigram of a normalized body; whitespace and control characters separate."""
    grams: set[str] = set()
    for run in body.split():
        if not run.isprintable():
            grams.update(_slow_grams(run))
            continue
        grams.update(run)
        grams.update(map(str.__add__, run, run[1:]))
    return list(grams)


def _slow_grams(text: str) -> set[str]:
    grams: set[str] = set()
    prev = ""
    for ch in text:
        if _separator(ch):
            prev = ""
            continue
        grams.add(ch)
        if prev:
            grams.add(prev + ch)
        prev = ch
    return grams


def gram_text(body: str) -> str:
    """The grams of a normalized body as the index takes them: distinct, separated by a space (no gram contains
    whitespace)."""
    return " ".join(index_grams(body))


async def gram_text_between(body: str) -> str:
    """``gram_text`` of a body, a long body's a slice at a time with the event loop let in between (the grams are
    computed before the transaction that indexes them, so that it holds its locks shorter)."""
    if len(body) <= GRAM_SLICE:
        return gram_text(body)
    grams: set[str] = set()
    for start in range(0, len(body), GRAM_SLICE):
        # One character of overlap keeps the bigram across the cut.
        grams.update(index_grams(body[start : start + GRAM_SLICE + 1]))
        await asyncio.sleep(0)
    return " ".join(grams)


def query_grams(query: str) -> list[str]:
    """Grams every body containing ``query`` (normalized) has, enough to find it; empty if it is only whitespace.

    A query of one character is that character. Otherwise each run of characters between separators is covered by
    bigrams side by side (its first two characters, the next two, …, and its last two), not by every overlapping
    one: "交期大概多久" looks up 交期, 大概 and 多久, not five. A document with them all but without the query is rare
    and the exact check on its body drops it, while every gram looked up costs each month's index a lookup (most
    of a rare word's search). A run of one character next to longer ones is left to that check as well."""
    chars = [c for c in query if not _separator(c)]
    if len(chars) == 1:
        return chars
    grams: dict[str, None] = {}
    run: list[str] = []
    for ch in [*query, " "]:
        if not _separator(ch):
            run.append(ch)
            continue
        starts = list(range(0, len(run) - 1, 2))
        if len(run) > 2 and len(run) % 2:
            starts.append(len(run) - 2)  # an odd run: its last two characters as well
        grams.update((run[i] + run[i + 1], None) for i in starts)
        run = []
    if not grams:  # characters separated by whitespace only: each must be there
        return list(dict.fromkeys(chars))
    return list(grams)


def order_key(sent_at: datetime, message_id: int) -> int:
    ms = max(0, int(sent_at.timestamp() * 1000))
    return (ms << KEY_SHIFT) | (message_id & KEY_LOW)


def time_key(moment: datetime) -> int:
    return max(0, int(moment.timestamp() * 1000)) << KEY_SHIFT


def _fts_phrase(gram: str) -> str:
    return '"' + gram.replace('"', '""') + '"'


@dataclass(frozen=True, slots=True)
class Hit:
    msgid: str
    customer: str
    sender: str
    time: datetime
    text: str
    snippet: str

    def as_json(self, tz: ZoneInfo) -> dict[str, Any]:
        return {
            "msgid": self.msgid,
            "customer": self.customer,
            "sender": self.sender,
            "time": self.time.astimezone(tz).isoformat(),
            "text": self.text,
            "snippet": self.snippet,
        }


@dataclass(frozen=True, slots=True)
class SearchResult:
    query: str
    total: int
    hits: list[Hit]
    estimated: bool = False  # ``total`` is an estimate: more hits than the count bound


# -- writing the index -------------------------------------------------------------------------------------------


def customer_token(customer_id: int) -> str:
    """The index token of a message's customer: data scope and the customer filter are index lookups too.

    Longer than any gram, so it never collides with text.
    """
    return f"#c{customer_id}"


def _tokens(grams: str, customer_id: int | None) -> str:
    """A document's tokens as the full-text index takes them: its grams, and its customer's token."""
    if customer_id is None:
        return grams
    token = customer_token(customer_id)
    return f"{grams} {token}" if grams else token


Doc = tuple[int, datetime, str, str, "int | None"]


async def index_messages(conn: BaseDBAsyncClient, rows: Sequence[Doc]) -> None:
    """Index new messages, given as (message id, sent_at, normalized body, its ``gram_text``, customer id), in the
    caller's transaction. On PostgreSQL the months' partitions must exist (``ensure_partitions``) and the rows are
    copied in (COPY), the batch in one round trip."""
    rows = [r for r in rows if r[2]]
    if not rows:
        return
    keyed = await _free_keys(
        conn, [(order_key(sent_at, mid), mid, body, grams, cid) for mid, sent_at, body, grams, cid in rows]
    )
    # In key order: FTS5 writes its pending terms out as a new segment whenever a rowid is not above the previous
    # one, so a batch in send-time disorder (an archive's months interleaved) made hundreds of tiny segments to
    # merge, three times the work (docs/BENCHMARKS.md, "Imports in key order").
    keyed.sort(key=lambda row: row[0])
    if is_postgres(conn):
        lines = "".join(
            f"{key}\t{mid}\t{_NULL if cid is None else cid}\t{_copy_text(body)}\t{_array_text(_tokens(grams, cid))}\n"
            for key, mid, body, grams, cid in keyed
        )
        await raw_connection(conn).copy_to_table(
            "search_doc",
            source=io.BytesIO(lines.encode()),
            columns=["key", "message_id", "customer_id", "body", "grams"],
            format="text",
        )
        return
    await conn.execute_many(
        "INSERT OR IGNORE INTO search_doc (key, message_id, customer_id, body) VALUES (?, ?, ?, ?)",
        [[key, mid, cid, body] for key, mid, body, _, cid in keyed],
    )
    await conn.execute_many(
        "INSERT INTO search_fts (rowid, grams) VALUES (?, ?)",
        [[key, _tokens(grams, cid)] for key, _, _, grams, cid in keyed],
    )


# PostgreSQL's COPY text format: a column's backslashes, tabs and line ends escaped, NULL spelled \N. The index is
# copied in this form, written with a few string operations a row, rather than through asyncpg's binary records,
# which check every element of a document's gram array one by one (most of the client's time in an import).
_NULL = "\\N"


def _copy_text(value: str) -> str:
    """``value`` as a column of COPY's text format (``str.replace`` a character at a time: ``str.translate``
    looks every character of a Chinese text up in its table, ten times slower)."""
    return value.replace("\\", "\\\\").replace("\t", "\\t").replace("\n", "\\n").replace("\r", "\\r")


def _array_text(tokens: str) -> str:
    """Space-separated tokens (no token holds whitespace) as a ``text[]`` literal in COPY's text format: each
    element quoted, a backslash or a quote in it escaped for the array (``\\``, ``\"``), then that backslash
    escaped for COPY."""
    if not tokens:
        return "{}"
    quoted = tokens.replace("\\", "\\\\\\\\").replace('"', '\\\\"')
    return '{"' + quoted.replace(" ", '","') + '"}'


def raw_connection(conn: BaseDBAsyncClient) -> Any:
    """The asyncpg connection under a PostgreSQL client of Tortoise (in a transaction: that transaction's), for
    COPY, which Tortoise does not speak."""
    return getattr(conn, "_connection")  # noqa: B009 - a private attribute Tortoise does not expose otherwise


# -- monthly partitions (PostgreSQL) -------------------------------------------------------------------------------


def month_at(moment: datetime) -> int:
    """The month (UTC, counted ``year * 12 + month - 1``) of a moment."""
    utc = moment.astimezone(UTC)
    return utc.year * 12 + utc.month - 1


def month_of(key: int) -> int:
    """The month (as ``month_at``) of an order key."""
    return month_at(datetime.fromtimestamp((key >> KEY_SHIFT) / 1000, UTC))


def month_key(month: int) -> int:
    """The first order key of ``month``."""
    return time_key(datetime(month // 12, month % 12 + 1, 1, tzinfo=UTC))


def partition_name(month: int) -> str:
    return f"search_doc_y{month // 12:04d}m{month % 12 + 1:02d}"


_PARTITION_LOCK = 7_316_220_002
# Per open database (its client), the months known to have their partition.
_ready: weakref.WeakKeyDictionary[BaseDBAsyncClient, set[int]] = weakref.WeakKeyDictionary()


async def _partition_rows(conn: BaseDBAsyncClient) -> dict[str, float]:
    """PostgreSQL: every partition of ``search_doc`` (the default one too) by name, with the planner's estimate of
    its rows (0 before it was first analyzed), from the catalog."""
    rows = await conn.execute_query_dict(
        "SELECT c.relname AS name, greatest(c.reltuples, 0) AS n FROM pg_inherits i"
        " JOIN pg_class c ON c.oid = i.inhrelid WHERE i.inhparent = 'search_doc'::regclass"
    )
    return {str(r["name"]): float(r["n"]) for r in rows}


async def ensure_partitions(months: Iterable[int]) -> None:
    """PostgreSQL: give each month of ``months`` its partition of ``search_doc``, outside any transaction of the
    caller's. A missing one is created and attached; rows of its month that the default partition caught (none,
    when partitions are created ahead) move into it in the same transaction. Nothing to do on SQLite."""
    conn = default_connection()
    if not is_postgres(conn):
        return
    ready = _ready.setdefault(conn, set())
    missing = sorted(set(months) - ready)
    if not missing:
        return
    async with in_transaction() as tx:
        await xact_lock(tx, _PARTITION_LOCK)
        existing = await _partition_rows(tx)
        for month in missing:
            name = partition_name(month)
            if name in existing:
                continue
            low, high = month_key(month), month_key(month + 1)
            await tx.execute_script(
                f"CREATE TABLE {name} (LIKE search_doc INCLUDING DEFAULTS INCLUDING CONSTRAINTS);"
                f" ALTER TABLE {name} ALTER COLUMN grams SET STATISTICS {GRAM_STATISTICS};"
                f" INSERT INTO {name} SELECT * FROM search_doc_default WHERE key >= {low} AND key < {high};"
                f" DELETE FROM search_doc_default WHERE key >= {low} AND key < {high};"
                f" ALTER TABLE search_doc ATTACH PARTITION {name} FOR VALUES FROM ({low}) TO ({high})"
            )
    ready.update(missing)


async def prepare_partitions(now: datetime) -> None:
    """At start-up: the partitions of last month to ``MONTHS_AHEAD`` months ahead."""
    month = month_at(now)
    await ensure_partitions(range(month - 1, month + MONTHS_AHEAD + 1))


Keyed = tuple[int, int, str, str, "int | None"]


async def _free_keys(conn: BaseDBAsyncClient, rows: list[Keyed]) -> list[Keyed]:
    """Resolve the (practically impossible) order-key collisions by stepping down."""
    keys = [r[0] for r in rows]
    if is_postgres(conn):
        # A join, not ``key = ANY(…)``: each key is then looked up in its own month's partition (pruned as the
        # join runs) instead of in every partition's index, six times less work for a batch of an import.
        taken_rows = await conn.execute_query_dict(
            "SELECT d.key FROM unnest($1::bigint[]) AS k(key) JOIN search_doc d ON d.key = k.key", [keys]
        )
    else:
        marks = ",".join("?" * len(keys))
        taken_rows = await conn.execute_query_dict(f"SELECT key FROM search_doc WHERE key IN ({marks})", keys)
    taken = {int(r["key"]) for r in taken_rows}
    if not taken and len(set(keys)) == len(keys):
        return rows
    result: list[Keyed] = []
    for key, mid, body, grams, cid in rows:
        while key in taken:
            key -= 1
        taken.add(key)
        result.append((key, mid, body, grams, cid))
    return result


async def hide_messages(conn: BaseDBAsyncClient, message_ids: Iterable[int]) -> None:
    """Take messages out of search (a recalled message): the message rows stay, their index entries go."""
    ids = list(message_ids)
    if not ids:
        return
    if is_postgres(conn):
        await conn.execute_query(
            "UPDATE search_doc SET hidden = TRUE, grams = '{}' WHERE message_id = ANY($1::bigint[])", [ids]
        )
        return
    marks = ",".join("?" * len(ids))
    docs = await conn.execute_query_dict(
        f"SELECT key, customer_id, body FROM search_doc WHERE hidden = 0 AND message_id IN ({marks})", ids
    )
    # A contentless FTS5 table forgets a row when told the exact tokens it was indexed with.
    await conn.execute_many(
        "INSERT INTO search_fts (search_fts, rowid, grams) VALUES ('delete', ?, ?)",
        [[d["key"], _tokens(gram_text(str(d["body"])), d["customer_id"])] for d in docs],
    )
    await conn.execute_query(f"UPDATE search_doc SET hidden = 1 WHERE message_id IN ({marks})", ids)


# -- querying ----------------------------------------------------------------------------------------------------


@dataclass
class Scope:
    """The customers whose messages a staff member may search (None: everything)."""

    customer_ids: list[int] | None

    @staticmethod
    async def of(staff: Staff) -> Scope:
        if staff.role in (Role.ADMIN, Role.DIRECTOR):
            return Scope(None)
        owners = [staff.id]
        if staff.role == Role.MANAGER:
            owners += [int(str(i)) for i in await Staff.filter(manager_id=staff.id).values_list("id", flat=True)]
        ids = await Customer.filter(owner_id__in=owners).values_list("id", flat=True)
        return Scope([int(str(i)) for i in ids])


class _Sql:
    """A parameterized statement built for one dialect."""

    def __init__(self, postgres: bool) -> None:
        self.postgres = postgres
        self.params: list[Any] = []

    def p(self, value: Any) -> str:
        self.params.append(value)
        return f"${len(self.params)}" if self.postgres else "?"


@dataclass
class _Plan:
    frm: str
    where: str
    key: str
    count_frm: str
    count_where: str


def _plan(
    sql: _Sql,
    needle: str,
    grams: list[str],
    scope: Scope,
    customer_id: int | None,
    sender: str | None,
) -> _Plan:
    """FROM and WHERE for the hits, and (on SQLite) for the count; the caller adds the key range."""
    # Exact from the index alone when the query is one gram (one or two characters); otherwise every candidate
    # is checked against its body.
    exact = len(grams) == 1 and grams[0] == needle
    conds: list[str] = []
    scope_tokens = None if scope.customer_ids is None else [customer_token(c) for c in scope.customer_ids]
    must = list(grams) + ([customer_token(customer_id)] if customer_id is not None else [])
    if not grams:  # only whitespace or control characters: scan the visible bodies
        frm, key = "search_doc d", "d.key"
        conds.append("NOT d.hidden" if sql.postgres else "d.hidden = 0")
        conds.append(f"strpos(d.body, {sql.p(needle)}) > 0" if sql.postgres else f"instr(d.body, {sql.p(needle)}) > 0")
        if customer_id is not None:
            conds.append(f"d.customer_id = {sql.p(customer_id)}")
        if scope.customer_ids is not None:
            conds.append(f"d.customer_id IN ({', '.join(sql.p(c) for c in scope.customer_ids)})")
    elif sql.postgres:
        frm, key = "search_doc d", "d.key"
        conds.append(f"d.grams @> {sql.p(must)}::text[]")
        if scope_tokens is not None:
            conds.append(f"d.grams && {sql.p(scope_tokens)}::text[]")
        if not exact:
            conds.append(f"strpos(d.body, {sql.p(needle)}) > 0")
    else:
        match = " AND ".join(_fts_phrase(t) for t in must)
        if scope_tokens is not None:
            match += " AND (" + " OR ".join(_fts_phrase(t) for t in scope_tokens) + ")"
        conds.append(f"search_fts MATCH {sql.p(match)}")
        key = "f.rowid"
        frm = "search_fts f"
        if not exact or sender is not None:
            frm += " JOIN search_doc d ON d.key = f.rowid"
        if not exact:
            conds.append(f"instr(d.body, {sql.p(needle)}) > 0")
    if sender is not None:
        if "search_doc d" not in frm:
            frm += " JOIN search_doc d ON d.key = f.rowid"
        frm += " JOIN message m ON m.id = d.message_id"
        conds.append(f"m.sender = {sql.p(sender)}")
    where = " AND ".join(conds)
    count_frm = frm
    if "search_doc d" not in frm:  # SQLite, exact from the index: the ids come from search_doc afterwards
        frm += " JOIN search_doc d ON d.key = f.rowid"
    return _Plan(frm, where, key, count_frm, where)


def _partition_month(name: str) -> int | None:
    """The month of a month partition's name (``search_doc_yYYYYmMM``), None for the default partition."""
    return int(name[12:16]) * 12 + int(name[17:19]) - 1 if name.startswith("search_doc_y") else None


def _restricted(table: str, alias: str, low: int, high: int | None) -> str:
    """The key range as a condition for ``table``, or "" when the partition lies inside it: the planner then walks
    the partitions' key indexes (a Merge Append of them under ORDER BY key), where a condition that keeps every row
    (even ``WHERE TRUE``) makes it read and sort them all instead."""
    month = _partition_month(table)
    if month is not None and month_key(month) >= low and (high is None or month_key(month + 1) <= high):
        return ""
    return _Query.within(f"{alias}key", low, high)


def _where(*conditions: str) -> str:
    kept = [c for c in conditions if c]
    return f" WHERE {' AND '.join(kept)}" if kept else ""


@dataclass(frozen=True, slots=True)
class _Span:
    """PostgreSQL: key range [low, high) and the partitions that hold it (the default partition always with them)."""

    tables: tuple[str, ...]
    low: int
    high: int | None
    rows: float = 0  # the planner's estimate of the documents in its month partitions


def _merge(spans: Sequence[_Span]) -> _Span:
    """Adjacent spans, newest first, as one (its partitions newest first, the default partition once, last)."""
    tables = dict.fromkeys(t for span in spans for t in span.tables if t != DEFAULT_PARTITION)
    return _Span((*tables, DEFAULT_PARTITION), spans[-1].low, spans[0].high, sum(span.rows for span in spans))


@dataclass
class _Query:
    """One search, resolved: the statement's parts for its dialect and the key range it may look in."""

    conn: BaseDBAsyncClient
    needle: str
    grams: list[str]
    scope: Scope
    customer_id: int | None
    sender: str | None
    plan: _Plan
    params: list[Any]
    low: int
    high: int | None
    partitions: list[tuple[str, int, float]] | None = None  # PostgreSQL: (name, month, estimated rows), newest first
    documents: float = 0  # PostgreSQL: the estimated rows of every partition, in the range or not
    walked: int = 0  # PostgreSQL: the month spans the top hits were looked for in, newest first
    counted: int | None = None  # PostgreSQL: the hits of the walked months, when the walk read every one of them

    @property
    def postgres(self) -> bool:
        return is_postgres(self.conn)

    @staticmethod
    def within(key: str, low: int, high: int | None) -> str:
        """The key range as SQL (integers of our own: literals)."""
        return f"{key} >= {int(low)}" + (f" AND {key} < {int(high)}" if high is not None else "")

    def branches(self, columns: str, span: _Span) -> str:
        """PostgreSQL: the query over each partition of ``span`` by its own name, as one UNION ALL: planning
        touches those partitions only, never the dozens of the whole table. ``{table}`` in ``columns`` is the
        partition's name."""
        return " UNION ALL ".join(
            f"SELECT {columns.format(table=table)} FROM {self.plan.frm.replace('search_doc d', f'{table} d', 1)}"
            f"{_where(self.plan.where, _restricted(table, 'd.', span.low, span.high))}"
            for table in span.tables
        )

    def select(self, span: _Span, limit: int | None) -> str:
        if not self.postgres:
            plan = self.plan
            query = (
                f"SELECT d.message_id AS id, {plan.key} AS k FROM {plan.frm} WHERE {plan.where}"
                f" AND {self.within(plan.key, span.low, span.high)} ORDER BY {plan.key} DESC"
            )
        else:
            serial = f", {SERIAL}" if limit else ""  # a cursor (every hit) never runs in parallel
            branches = self.branches("d.message_id AS id, d.key AS k", span)
            query = f"SELECT id, k{serial} FROM ({branches}) u ORDER BY k DESC"
        return query + (f" LIMIT {int(limit)}" if limit else "")

    def count(self, span: _Span, limit: int) -> str:
        plan = self.plan
        if self.postgres:
            # The branches run in order, newest month first, until the limit: older months are never read. The
            # hits are counted by partition (names of our own, as literals).
            inner = self.branches("'{table}' AS t", span)
            return f"SELECT t, count(*) AS n, {SERIAL} FROM ({inner} LIMIT {int(limit)}) c GROUP BY t"
        within = self.within(plan.key, span.low, span.high)
        inner = f"SELECT 1 FROM {plan.count_frm} WHERE {plan.count_where} AND {within}"
        return f"SELECT count(*) AS n FROM ({inner} LIMIT {int(limit)}) c"


def _rarest(grams: list[str], shares: Mapping[str, float]) -> list[str]:
    """The grams a month's index is asked for (``LOOKED_UP``): the rarest two, and the next while under
    ``FREQUENT``; all of them when no sample is known. A gram the sample did not see counts as rare."""
    if not shares:
        return grams
    ranked = sorted(grams, key=lambda gram: shares.get(gram, 0.0))
    kept = ranked[:2] + [g for g in ranked[2:LOOKED_UP] if shares.get(g, 0.0) < FREQUENT]
    return [g for g in grams if g in kept]  # in the query's order


@dataclass(frozen=True, slots=True)
class _Sampled:
    """One sampled document: its order key, customer, whether it is hidden, and its normalized body."""

    key: int
    customer_id: int | None
    hidden: bool
    body: str


@dataclass(frozen=True)
class _Sample:
    """PostgreSQL: documents sampled from pages of every month, kept for ``GRAM_SAMPLE_TTL`` seconds. Their frequent
    grams' shares pick the grams a query looks up (``_rarest``); the documents themselves make the estimates of
    totals beyond the bound (``_sampled``)."""

    taken: float
    shares: dict[str, float]  # a gram in 1% or more of the documents, and its share; the others are rarer
    docs: list[_Sampled]


# Per open database (its client), its sample.
_samples: weakref.WeakKeyDictionary[BaseDBAsyncClient, _Sample] = weakref.WeakKeyDictionary()


async def _sample(conn: BaseDBAsyncClient) -> _Sample:
    """PostgreSQL: the sample of ``conn``'s documents, taken again after ``GRAM_SAMPLE_TTL`` seconds: pages of every
    month (``TABLESAMPLE SYSTEM``, the same pages both times), about ``GRAM_SAMPLE`` documents, 70-120 ms at 10M."""
    cached = _samples.get(conn)
    if cached is not None and time.monotonic() - cached.taken < GRAM_SAMPLE_TTL:
        return cached
    partitions = await _partition_rows(conn)
    documents = sum(partitions.values())
    shares: dict[str, float] = {}
    docs: list[_Sampled] = []
    if documents > 0:
        percent = min(100.0, 100.0 * GRAM_SAMPLE / documents)
        # Each partition with a seed of its own: with one seed they would all take the pages at the same places,
        # and the sample would vary as much as a handful of pages (1,552 to 6,338 documents at 10M).
        pages = " UNION ALL ".join(
            f"SELECT * FROM {name} TABLESAMPLE SYSTEM ({percent:.6f}) REPEATABLE ({seed})"
            for seed, name in enumerate(sorted(partitions))
        )
        found = await conn.execute_query_dict(
            f"WITH s AS (SELECT grams FROM ({pages}) p), n AS (SELECT count(*) AS docs FROM s)"
            f" SELECT g, count(*)::float8 / max(n.docs) AS share, {SERIAL} FROM s, n, unnest(s.grams) AS g"
            " GROUP BY g HAVING count(*) * 100 >= max(n.docs)"
        )
        shares = {str(r["g"]): float(r["share"]) for r in found}
        # At most KEPT_AT_MOST documents in memory, also when the row estimates are far behind the table (an
        # import not yet analyzed makes the share sampled far larger than meant).
        rows = await conn.execute_query_dict(
            f"SELECT key, customer_id, hidden, body, {SERIAL} FROM ({pages}) p LIMIT {KEPT_AT_MOST}"
        )
        docs = [_Sampled(int(r["key"]), r["customer_id"], bool(r["hidden"]), str(r["body"])) for r in rows]
    sample = _Sample(time.monotonic(), shares, docs)
    if docs:  # an empty one (partitions never analyzed yet, or no documents) is taken again by the next search
        _samples[conn] = sample
    return sample


async def _prepare(
    conn: BaseDBAsyncClient,
    query: str,
    staff: Staff | None,
    customer_id: int | None,
    sender: str | None,
    since: datetime | None,
    until: datetime | None,
) -> _Query | None:
    """The search resolved, or None when it can find nothing (an empty query, a scope without customers)."""
    needle = normalize(query)
    if not needle:
        return None
    scope = await Scope.of(staff) if staff is not None else Scope(None)
    if scope.customer_ids == []:
        return None
    grams = query_grams(needle)
    if len(grams) > 2 and is_postgres(conn):
        grams = _rarest(grams, (await _sample(conn)).shares)
    sql = _Sql(is_postgres(conn))
    plan = _plan(sql, needle, grams, scope, customer_id, sender)
    low = time_key(since) if since is not None else 0
    high = time_key(until) if until is not None else None
    return _Query(conn, needle, grams, scope, customer_id, sender, plan, sql.params, low, high)


async def search(
    conn: BaseDBAsyncClient,
    query: str,
    *,
    staff: Staff | None,
    customer_id: int | None = None,
    sender: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    limit: int | None = 20,
    count: bool = True,
    count_bound: int = COUNT_BOUND,
) -> SearchResult:
    """Messages containing ``query`` visible to ``staff`` (None: no scope, for admin tools), newest first.

    ``limit`` None or 0 returns every hit (``stream`` gives them a chunk at a time). The total is exact up to
    ``count_bound`` hits and estimated beyond (``estimated``); ``count`` False skips it (then ``total`` is the
    hits found).
    """
    q = await _prepare(conn, query, staff, customer_id, sender, since, until)
    if q is None:
        return SearchResult(query, 0, [])
    if not limit:
        hits = [hit async for chunk in _stream(q) for hit in chunk]
        return SearchResult(query, len(hits), hits)
    found, complete = await _top(q, limit, max(limit, count_bound + 1) if count else limit)
    total, estimated = len(found), False
    if count and not complete:
        if len(found) > count_bound:
            counted, newer = 0, list[str]()
            if q.postgres:  # the oldest hit is in the one month not read to its end
                oldest = month_of(found[-1][1])
                newer = [p[0] for p in await _partitions(q) if p[1] > oldest]
                counted = sum(month_of(k) > oldest for _, k in found)
            total, estimated = await _estimate(q, count_bound, counted, newer), True
        else:
            total, estimated = await _total(q, count_bound)
    return SearchResult(query, total, await _hits(conn, found[:limit], q.needle), estimated)


async def stream(
    conn: BaseDBAsyncClient,
    query: str,
    *,
    staff: Staff | None,
    customer_id: int | None = None,
    sender: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
) -> AsyncIterator[list[Hit]]:
    """Every hit, newest first, a chunk of at most ``CHUNK`` at a time: memory stays bounded whatever the count."""
    q = await _prepare(conn, query, staff, customer_id, sender, since, until)
    if q is not None:
        async for chunk in _stream(q):
            yield chunk


async def _rows(q: _Query, statement: str) -> list[tuple[int, int]]:
    return [(int(r["id"]), int(r["k"])) for r in await q.conn.execute_query_dict(statement, q.params)]


async def _top(q: _Query, limit: int, want: int) -> tuple[list[tuple[int, int]], bool]:
    """The newest ``limit`` hits, newest first, and whether they are every hit. PostgreSQL walks the months newest
    first, one span of months at a time (a long one in two halves side by side: ``_halves``), and stops as soon as
    it has them: a frequent word is answered from the newest month. Each next span is as long as the hits per
    document found so far say it takes to hold ``SPAN_MARGIN`` times the hits still wanted, so a rare word, found
    nowhere in the newest months, reads all the older ones in one span. Each statement reads up to ``want`` hits
    in all (with a total, at least the count bound and one: a span's bitmap holds every hit of its months anyway),
    so when none reached it the hits of the months walked are all there (``_Query.counted``) and the total only
    counts the months after them."""
    if not q.postgres:
        found = await _rows(q, q.select(_Span((), q.low, q.high), limit))
        return found, len(found) < limit
    months = await _spans(q)
    if q.grams and q.scope.customer_ids is None and q.customer_id is None and q.sender is None:
        found = await _newest_window(q, months, limit)
        if len(found) == limit:
            q.walked = 1
            return found, False
    found, seen, whole = [], 0.0, True
    while q.walked < len(months) and len(found) < limit:
        take = 1 if not q.walked else _next_span(months[q.walked :], len(found), seen, limit)
        parts = _halves(q, months[q.walked : q.walked + take])
        asked = want - len(found)
        read = await asyncio.gather(*(_rows(q, q.select(part, asked)) for part in parts))
        rows = [row for part in read for row in part]  # the newer half's first: newest first throughout
        whole = whole and len(rows) < asked
        found += rows[:asked]
        seen += sum(part.rows for part in parts)
        q.walked += take
    q.counted = len(found) if whole else None
    return found, whole and q.walked == len(months)


def _next_span(months: Sequence[_Span], found: int, seen: float, limit: int, margin: float = SPAN_MARGIN) -> int:
    """How many of the next ``months`` to read in one statement: as many as are expected to hold ``margin`` times
    the hits still wanted, at the rate found so far (one hit more than found, so that none found yet still sizes
    the span by the documents already read), at least one."""
    budget = margin * (limit - found) * max(seen, 1.0) / (found + 1)
    take, rows = 0, 0.0
    for span in months:
        rows += span.rows
        if take and rows > budget:
            break
        take += 1
    return take


async def _partitions(q: _Query) -> list[tuple[str, int, float]]:
    """PostgreSQL: the month partitions of ``search_doc`` that meet the query's key range, newest first, with the
    planner's estimate of their rows (from the catalog: one cheap query)."""
    if q.partitions is None:
        months = []
        every = await _partition_rows(q.conn)
        q.documents = sum(every.values())
        for name, rows in every.items():
            month = _partition_month(name)
            if month is None:
                continue
            if month_key(month + 1) > q.low and (q.high is None or month_key(month) < q.high):
                months.append((name, month, rows))
        q.partitions = sorted(months, key=lambda m: -m[1])
    return q.partitions


async def _spans(q: _Query) -> list[_Span]:
    """PostgreSQL: the query's key range cut newest first into spans of one month's partition each, the first this
    month's with any later ones (created ahead, usually empty). Together the spans cover the range without gaps,
    the default partition in each."""
    partitions = await _partitions(q)
    current = month_at(datetime.now(UTC))
    groups = [[p for p in partitions if p[1] >= current], *([p] for p in partitions if p[1] < current)]
    groups = [g for g in groups if g]
    spans, high = [], q.high
    for i, group in enumerate(groups):
        low = q.low if i == len(groups) - 1 else max(q.low, month_key(group[-1][1]))
        spans.append(_Span((*(p[0] for p in group), DEFAULT_PARTITION), low, high, sum(p[2] for p in group)))
        high = low
    return spans or [_Span((DEFAULT_PARTITION,), q.low, q.high)]


async def _total(q: _Query, bound: int) -> tuple[int, bool]:
    """The exact count up to ``bound`` hits, else an estimate. PostgreSQL counts newest first: the months the top
    hits came from (unless the walk already read all their hits), then the others, in spans sized by the hits per
    document found so far (``COUNT_MARGIN``; a long one in two halves side by side: ``_halves``), so that a frequent
    word's count stops planning and reading months soon after the bound."""
    if not q.postgres:
        rows = await q.conn.execute_query_dict(q.count(_Span((), q.low, q.high), bound + 1), q.params)
        counted = int(rows[0]["n"])
        return (counted, False) if counted <= bound else (await _estimate(q, bound), True)
    months = await _spans(q)
    walked = max(q.walked, 1)
    counted, seen, whole, at = 0, 0.0, list[str](), 0
    if q.counted is not None:  # the walk read every hit of its months
        counted, at = q.counted, walked
        seen = sum(span.rows for span in months[:walked])
        whole = [t for span in months[:walked] for t in span.tables]
    while at < len(months):
        take = walked if not at else _next_span(months[at:], counted, seen, bound + 1, COUNT_MARGIN)
        parts = _halves(q, months[at : at + take])
        read = await asyncio.gather(
            *(q.conn.execute_query_dict(q.count(p, bound + 1 - counted), q.params) for p in parts)
        )
        for span, rows in zip(parts, read, strict=True):  # the newer half first, as if counted one after the other
            counts = {str(r["t"]): int(r["n"]) for r in rows}
            counted += sum(counts.values())
            if counted > bound:
                # Every partition before the last one counted in was counted to its end (the branches run in order).
                last = max((i for i, t in enumerate(span.tables) if counts.get(t)), default=0)
                whole += span.tables[:last]
                hits = sum(counts.get(t, 0) for t in span.tables[:last]) + counted - sum(counts.values())
                return await _estimate(q, bound, hits, whole), True
            whole += span.tables
            seen += span.rows
        at += take
    return counted, False


def _halves(q: _Query, months: Sequence[_Span]) -> list[_Span]:
    """PostgreSQL: ``months`` as the spans to read at once. ``SPLIT_MONTHS`` of them or more, outside a transaction,
    are two halves of about as many documents each (newer, then older), read side by side on two of the pool's
    connections; otherwise one span."""
    if len(months) < SPLIT_MONTHS or isinstance(q.conn, TransactionalDBClient):
        return [_merge(months)]
    half, rows, cut = sum(span.rows for span in months) / 2, 0.0, 1
    while cut < len(months) - 1 and rows + months[cut - 1].rows < half:
        rows += months[cut - 1].rows
        cut += 1
    return [_merge(months[:cut]), _merge(months[cut:])]


def _scaled(q: _Query, hits: int, whole: Sequence[str]) -> int | None:
    """PostgreSQL: ``hits`` counted in the month partitions ``whole`` (read to their end), scaled to the documents
    of the range by the partitions' row estimates; None when too few hits were counted for a share (a scoped search
    sees few of the documents a sample holds, so its counted months give the better estimate)."""
    rows = {p[0]: p[2] for p in q.partitions or []}
    counted_in = sum(rows.get(t, 0.0) for t in whole)
    if hits < MIN_COUNTED or counted_in < 1:
        return None
    return round(hits * sum(rows.values()) / counted_in)


async def _estimate(q: _Query, bound: int, hits: int = 0, whole: Sequence[str] = ()) -> int:
    """Beyond the bound, to two significant digits: on PostgreSQL the ``hits`` counted in the month partitions
    ``whole`` scaled up (``_scaled``) when there are enough of them, else the hits in a sample of the range's
    documents, scaled up (``_sampled``)."""
    scaled = _scaled(q, hits, whole) if q.postgres else None
    estimate = scaled if scaled is not None else await _sampled(q)
    if estimate > bound:
        digits = len(str(estimate)) - 2
        estimate = round(estimate, -digits) if digits > 0 else estimate
    return max(bound + 1, estimate)


async def _sampled(q: _Query) -> int:
    """The hits among sampled documents of the range, times the documents. PostgreSQL checks the documents of its
    kept sample (``_sample``) that lie in the range when there are ``MIN_SAMPLED`` of them, each standing for its
    share of all documents. A range of a few months holds fewer (and the sample knows no senders): then it samples
    pages of the range's months (``TABLESAMPLE SYSTEM``, the same pages every time: the estimate does not change
    between two searches), about ``SAMPLE`` documents in all by the partitions' row estimates, and scales the share
    of hits among them by those estimates. Either way a word frequent only lately is not taken for frequent
    throughout. SQLite takes the newest ``SAMPLE`` documents, times the documents in the range."""
    if q.postgres and q.sender is None:
        docs = (await _sample(q.conn)).docs
        kept = [d for d in docs if d.key >= q.low and (q.high is None or d.key < q.high)]
        if len(kept) >= MIN_SAMPLED:
            scope = None if q.scope.customer_ids is None else set(q.scope.customer_ids)
            hits = sum(
                not d.hidden
                and q.needle in d.body
                and (q.customer_id is None or d.customer_id == q.customer_id)
                and (scope is None or d.customer_id in scope)
                for d in kept
            )
            await _partitions(q)
            # Each sampled document stands for as many as the sample is smaller than the whole index.
            return round(hits * max(q.documents, len(docs)) / len(docs))
    sql = _Sql(q.postgres)
    contains = "strpos(d.body, {}) > 0" if q.postgres else "instr(d.body, {}) > 0"
    conds = ["NOT d.hidden" if q.postgres else "d.hidden = 0", contains.format(sql.p(q.needle))]
    if q.customer_id is not None:
        conds.append(f"d.customer_id = {sql.p(q.customer_id)}")
    if q.scope.customer_ids is not None:
        conds.append(f"d.customer_id IN ({', '.join(sql.p(c) for c in q.scope.customer_ids)})")
    join = ""
    if q.sender is not None:
        join = " JOIN message m ON m.id = d.message_id"
        conds.append(f"m.sender = {sql.p(q.sender)}")
    hit = f"coalesce(sum(CASE WHEN {' AND '.join(conds)} THEN 1 ELSE 0 END), 0) AS hits"
    columns = "d.key, d.message_id, d.customer_id, d.hidden, d.body"
    if q.postgres:
        span = _merge(await _spans(q))
        percent = min(100.0, 100.0 * SAMPLE / max(span.rows, 1.0))
        sample = " UNION ALL ".join(
            f"SELECT {columns} FROM {t} d TABLESAMPLE SYSTEM ({percent:.6f}) REPEATABLE ({seed})"
            f"{_where(_restricted(t, 'd.', span.low, span.high))}"
            for seed, t in enumerate(span.tables)
        )
        rows = await q.conn.execute_query_dict(
            f"SELECT count(*) AS n, {hit}, {SERIAL} FROM ({sample}) d{join}", sql.params
        )
        # The share of hits among the pages sampled, times the documents: pages hold different numbers of rows.
        sampled, hits = int(rows[0]["n"]), int(rows[0]["hits"])
        return round(hits * max(span.rows, sampled) / sampled) if sampled else 0
    newest = f"SELECT {columns} FROM search_doc d WHERE {q.within('d.key', q.low, q.high)}"
    rows = await q.conn.execute_query_dict(
        f"SELECT count(*) AS n, {hit} FROM (SELECT * FROM ({newest}) n ORDER BY key DESC LIMIT {SAMPLE}) d{join}",
        sql.params,
    )
    sampled, hits = int(rows[0]["n"]), int(rows[0]["hits"])
    documents = await _documents(q) if sampled == SAMPLE else sampled  # else the sample was every document
    return hits * documents // sampled if sampled else 0


async def _documents(q: _Query) -> int:
    rows = await q.conn.execute_query_dict(
        f"SELECT count(*) AS n FROM search_doc WHERE {q.within('key', q.low, q.high)}"
    )
    return int(rows[0]["n"])


async def _stream(q: _Query) -> AsyncIterator[list[Hit]]:
    """Every hit, newest first, in chunks. SQLite pages down the key (FTS5 seeks by rowid); PostgreSQL reads a
    month at a time (one bitmap per month) through a cursor, a chunk of keys at a time, each chunk then detailed:
    the client never holds more than a chunk, however many hits a month has."""
    if q.postgres:
        async with q.conn.acquire_connection() as raw, raw.transaction():
            for span in await _spans(q):
                found: list[tuple[int, int]] = []
                async for r in raw.cursor(q.select(span, None), *q.params, prefetch=CHUNK):
                    found.append((int(r["id"]), int(r["k"])))
                    if len(found) == CHUNK:
                        yield _detail(await raw.fetch(_hits_sql(found)), found, q.needle)
                        found = []
                if found:
                    yield _detail(await raw.fetch(_hits_sql(found)), found, q.needle)
        return
    below = q.high
    while found := await _rows(q, q.select(_Span((), q.low, below), CHUNK)):
        yield await _hits(q.conn, found, q.needle)
        if len(found) < CHUNK:
            return
        below = found[-1][1]


async def _newest_window(q: _Query, spans: list[_Span], limit: int) -> list[tuple[int, int]]:
    """PostgreSQL, unscoped queries: the newest WINDOW bodies of the first two spans checked directly along the key
    index.

    A GIN bitmap has to fetch and sort every match, which is slow for a frequent word; when at least ``limit``
    matches lie among the newest WINDOW messages they are the answer (anything else is older). Otherwise the
    caller walks the months with the GIN query, which is then cheap because matches are rare. Used without a data
    scope or a customer filter only: their customer tokens already make the GIN query selective.
    """
    sql = _Sql(True)
    newest = spans[:2]
    low = newest[-1].low
    tables = dict.fromkeys(t for span in newest for t in span.tables)
    # The UNION ALL in FROM, ordered outside it: the planner merges the partitions' key indexes (Merge Append) and
    # reads the newest rows only, where an ORDER BY on the UNION itself sorts them all.
    union = " UNION ALL ".join(
        f"SELECT message_id, key, body, hidden FROM {t} d{_where(_restricted(t, 'd.', low, q.high))}" for t in tables
    )
    rows = await q.conn.execute_query_dict(
        f"SELECT message_id AS id, key AS k, {SERIAL}"
        f" FROM (SELECT * FROM ({union}) u ORDER BY key DESC LIMIT {WINDOW}) w"
        f" WHERE NOT hidden AND strpos(body, {sql.p(q.needle)}) > 0 ORDER BY key DESC LIMIT {int(limit)}",
        sql.params,
    )
    return [(int(r["id"]), int(r["k"])) for r in rows]


HITS_SQL = (
    "SELECT m.id AS id, m.msgid AS msgid, m.sender AS sender, m.text AS text, c.name AS customer,"
    " (SELECT s.name FROM staff_account a JOIN staff s ON s.id = a.staff_id"
    "  WHERE a.platform = m.platform AND a.user_id = m.sender LIMIT 1) AS staff_name,"
    " (SELECT ct.name FROM contact ct WHERE ct.external_userid = m.sender LIMIT 1) AS contact_name"
    " FROM message m LEFT JOIN customer c ON c.id = m.customer_id WHERE m.id IN ({ids})"
)


async def _hits(conn: BaseDBAsyncClient, found: list[tuple[int, int]], needle: str) -> list[Hit]:
    """The hits' details in one query."""
    return _detail(await conn.execute_query_dict(_hits_sql(found)), found, needle) if found else []


def _hits_sql(found: list[tuple[int, int]]) -> str:
    return HITS_SQL.format(ids=", ".join(str(mid) for mid, _ in found))  # integers from our own query


def _detail(rows: Iterable[Mapping[str, Any]], found: list[tuple[int, int]], needle: str) -> list[Hit]:
    """The hits of ``found`` (message id, order key) from their rows; the time comes from the order key (ms), the
    same on every database."""
    by_id = {int(r["id"]): r for r in rows}
    hits = []
    for mid, key in found:
        r = by_id.get(mid)
        if r is None:
            continue
        text = str(r["text"])
        hits.append(
            Hit(
                msgid=str(r["msgid"]),
                customer=str(r["customer"] or ""),
                sender=str(r["staff_name"] or r["contact_name"] or r["sender"]),
                time=datetime.fromtimestamp((key >> KEY_SHIFT) / 1000, UTC),
                text=text,
                snippet=snippet(text, needle),
            )
        )
    return hits


def about(total: int) -> str:
    """An estimated total as people say it: 约 35 万, 约 1.2 万, 约 3.5 亿."""
    for unit, size in (("亿", 10**8), ("万", 10**4)):
        if total >= size:
            value = total / size
            number = f"{value:.1f}".removesuffix(".0") if value < 10 else str(round(value))
            return f"约 {number} {unit}"
    return f"约 {total}"


def snippet(text: str, needle: str, width: int = SNIPPET_CHARS) -> str:
    """About ``width`` characters around the first occurrence, the occurrence marked 【like this】."""
    at = normalize(text).find(needle)
    if at < 0:
        return text[:width] + ("…" if len(text) > width else "")
    end = at + len(needle)
    start = max(0, at - SNIPPET_BEFORE)
    stop = min(len(text), max(end, start + width))
    start = max(0, min(start, stop - width))
    head = ("…" if start > 0 else "") + text[start:at]
    tail = text[end:stop] + ("…" if stop < len(text) else "")
    return f"{head}【{text[at:end]}】{tail}".replace("\n", " ")
