"""The SQL dialects in one place: which database a connection speaks, placeholders, JSON text for JSON columns,
and transaction-level advisory locks (PostgreSQL; SQLite has a single writer and needs none).

Raw SQL is written once with ``?`` placeholders; ``numbered`` turns it into PostgreSQL's ``$1, $2, …``.
"""

from __future__ import annotations

import json
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


async def try_xact_lock(conn: BaseDBAsyncClient, key: int) -> bool:
    """Take a transaction-level advisory lock if nobody holds it (PostgreSQL); always True on SQLite."""
    if not is_postgres(conn):
        return True
    rows = await conn.execute_query_dict("SELECT pg_try_advisory_xact_lock($1) AS locked", [key])
    return bool(rows[0]["locked"])


_COMPACT = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"))


def moment(value: Any) -> datetime:
    """A timestamp from a raw query: PostgreSQL returns datetimes, SQLite the ISO text Tortoise stored."""
    found = value if isinstance(value, datetime) else datetime.fromisoformat(str(value))
    return found if found.tzinfo is not None else found.replace(tzinfo=UTC)


def compact_json(value: Any) -> str:
    """JSON as raw SQL stores it in JSON columns: compact, Chinese kept as is (one encoder, built once)."""
    return _COMPACT.encode(value)
