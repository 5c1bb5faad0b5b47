"""The SQL dialects in one place: which database a connection speaks, placeholders, JSON text for JSON columns,
and transaction-level advisory locks (PostgreSQL; SQLite has a single writer and needs none).

Raw SQL is written once with ``?`` placeholders; ``numbered`` turns it into PostgreSQL's ``$1, $2, …``.

On SQLite the app has one connection, and every statement and transaction takes turns on it; ``first_in_line``
lets the writes that acknowledgements wait for go before whatever else is waiting (``ConnectionLock``).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import contextvars
import hashlib
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

from tortoise import connections
from tortoise.backends.base.client import BaseDBAsyncClient


def default() -> BaseDBAsyncClient:
    """The default connection, for raw SQL."""
    client: BaseDBAsyncClient = connections.get("default")
    return client


def is_postgres(conn: BaseDBAsyncClient | None = None) -> bool:
    return str((conn or default()).capabilities.dialect) == "postgres"


def numbered(sql: str) -> str:
    """``sql`` written with ``?`` placeholders, numbered the way PostgreSQL spells them: ``$1, $2, …``."""
    parts = sql.split("?")
    return parts[0] + "".join(f"${i}{part}" for i, part in enumerate(parts[1:], start=1))


def among(postgres: bool, values: list[Any], pg_type: str) -> tuple[str, list[Any]]:
    """A condition's right-hand side for a column among ``values``, and its parameters: on PostgreSQL
    ``= ANY(?::<pg_type>[])`` with the list as one parameter (one statement, prepared once, for any number of
    values), on SQLite ``IN (?, ?, …)``."""
    if postgres:
        return f"= ANY(?::{pg_type}[])", [values]
    return f"IN ({', '.join('?' * len(values))})", list(values)


def both(sql: str) -> tuple[str, str]:
    """``sql`` for (SQLite, PostgreSQL), indexable by ``is_postgres(conn)``."""
    return sql, numbered(sql)


def for_conn(sql: str, conn: BaseDBAsyncClient) -> str:
    """``sql`` (with ``?`` placeholders) as ``conn``'s database spells it."""
    return numbered(sql) if is_postgres(conn) else sql


async def select(conn: BaseDBAsyncClient, sql: str, params: list[Any]) -> list[dict[str, Any]]:
    """Run a query written with ``?`` placeholders on either database."""
    return list(await conn.execute_query_dict(for_conn(sql, conn), params))


async def xact_lock(conn: BaseDBAsyncClient, key: int) -> None:
    """Wait for a transaction-level advisory lock (PostgreSQL); released at commit."""
    if is_postgres(conn):
        await conn.execute_query("SELECT pg_advisory_xact_lock($1)", [key])


async def fresh_plans(conn: BaseDBAsyncClient) -> None:
    """On PostgreSQL, plan this transaction's statements anew, for their parameters and the tables as they are now.

    A statement prepared again and again (asyncpg prepares every statement) is soon run by a generic plan, made
    once and kept for the connection's life until the table is analyzed again. One made while a table was empty
    (a new database; a burst before autovacuum analyzes, or with autovacuum off) can read a table of 30,000 rows
    once per row: a claim that took 20 ms took minutes. For the few statements that read a queue which grows and
    shrinks by the thousand, planning each time (well under a millisecond) is the cheap insurance."""
    if is_postgres(conn):
        await conn.execute_query("SET LOCAL plan_cache_mode = force_custom_plan")


async def try_xact_lock(conn: BaseDBAsyncClient, key: int) -> bool:
    """Take a transaction-level advisory lock if nobody holds it (PostgreSQL); always True on SQLite."""
    if not is_postgres(conn):
        return True
    rows = await conn.execute_query_dict("SELECT pg_try_advisory_xact_lock($1) AS locked", [key])
    return bool(rows[0]["locked"])


def lock_key(name: str) -> int:
    """An advisory lock's key for ``name`` (a 64-bit hash: names that collide only take turns)."""
    return int.from_bytes(hashlib.sha1(name.encode()).digest()[:8], "big", signed=True)


async def try_xact_locks(conn: BaseDBAsyncClient, names: set[str]) -> set[str]:
    """Which of ``names`` this transaction now holds an advisory lock for, taking each that nobody else holds, in
    one round trip (PostgreSQL); all of them on SQLite."""
    if not is_postgres(conn) or not names:
        return set(names)
    keys = {lock_key(name): name for name in names}
    rows = await conn.execute_query_dict(
        "SELECT k, pg_try_advisory_xact_lock(k) AS locked FROM unnest($1::bigint[]) AS k", [sorted(keys)]
    )
    return {keys[int(row["k"])] for row in rows if row["locked"]}


def moment(value: Any) -> datetime:
    """A timestamp from a raw query: PostgreSQL returns datetimes, SQLite the ISO text Tortoise stored."""
    found = value if isinstance(value, datetime) else datetime.fromisoformat(str(value))
    return found if found.tzinfo is not None else found.replace(tzinfo=UTC)


_FIRST_IN_LINE: contextvars.ContextVar[bool] = contextvars.ContextVar("first_in_line", default=False)


@contextlib.contextmanager
def first_in_line() -> Iterator[None]:
    """Statements and transactions started in this context wait only for the one holding the SQLite connection,
    not behind the others waiting for it (on PostgreSQL each takes a connection of the pool anyway)."""
    token = _FIRST_IN_LINE.set(True)
    try:
        yield
    finally:
        _FIRST_IN_LINE.reset(token)


class ConnectionLock:
    """The turn on a single connection: ``asyncio.Lock``'s interface, first come first served, except that who
    waits in ``first_in_line`` goes before everyone else waiting. The lock is handed straight to the next waiter."""

    def __init__(self) -> None:
        self._locked = False
        self._first: collections.deque[asyncio.Future[None]] = collections.deque()
        self._others: collections.deque[asyncio.Future[None]] = collections.deque()

    def locked(self) -> bool:
        return self._locked

    async def acquire(self) -> bool:
        if not self._locked:
            self._locked = True
            return True
        turn: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        (self._first if _FIRST_IN_LINE.get() else self._others).append(turn)
        try:
            await turn
        except asyncio.CancelledError:
            if turn.done() and not turn.cancelled():  # handed the lock just as cancelled: pass it on
                self.release()
            raise
        return True

    def release(self) -> None:
        if not self._locked:
            raise RuntimeError("ConnectionLock released while not held")
        for waiting in (self._first, self._others):
            while waiting:
                turn = waiting.popleft()
                if not turn.done():  # a cancelled waiter is skipped
                    turn.set_result(None)
                    return
        self._locked = False

    async def __aenter__(self) -> None:
        await self.acquire()

    async def __aexit__(self, *exc: object) -> None:
        self.release()


def prioritize(conn: BaseDBAsyncClient) -> None:
    """Give an SQLite client a ``ConnectionLock`` (its statements and transactions take turns on its one
    connection under ``_lock``); a PostgreSQL client is left as it is."""
    if not is_postgres(conn) and isinstance(getattr(conn, "_lock", None), asyncio.Lock):
        conn._lock = ConnectionLock()  # type: ignore[attr-defined]
