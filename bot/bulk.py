"""Set-wise writes for imports, one dialect at a time: many rows per statement inside the caller's transaction.

On SQLite a write is a multi-row ``INSERT … VALUES (…), (…)`` (as many rows as the statement's variables allow);
on PostgreSQL rows travel by ``COPY`` (asyncpg's ``copy_records_to_table``), into a temporary table first when they
must be merged with ``INSERT … SELECT … ON CONFLICT``. Updates are one prepared statement run for many rows.
Values go in as the ORM stores them: JSON columns as compact JSON text, moments in UTC, enums as their values.
"""

from __future__ import annotations

from datetime import UTC, datetime
from enum import Enum
from typing import Any

from tortoise.backends.base.client import BaseDBAsyncClient

from bot.jsontext import compact_json
from bot.sql import is_postgres

SQLITE_VARIABLES = 32766  # SQLITE_MAX_VARIABLE_NUMBER since SQLite 3.32
ROWS_PER_STATEMENT = 1000


def db_value(value: Any) -> Any:
    """``value`` as raw SQL stores it in our columns."""
    kind = type(value)
    if kind is str or kind is int or value is None:  # most cells: as they are, without the checks below
        return value
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, datetime):
        return value.astimezone(UTC)
    if isinstance(value, dict | list):
        return compact_json(value)
    return value


def _rows(rows: list[list[Any]]) -> list[list[Any]]:
    return [[db_value(v) for v in row] for row in rows]


def _slices(rows: list[list[Any]], width: int) -> list[list[list[Any]]]:
    size = max(1, min(ROWS_PER_STATEMENT, SQLITE_VARIABLES // max(width, 1)))
    return [rows[i : i + size] for i in range(0, len(rows), size)]


def _raw(conn: BaseDBAsyncClient) -> Any:
    """The asyncpg connection under the ORM's transaction (for COPY, which the ORM does not offer)."""
    return getattr(conn, "_connection")  # noqa: B009 - the driver's connection has no public accessor


def _columns(columns: list[str]) -> str:
    return ", ".join(f'"{c}"' for c in columns)


async def insert(conn: BaseDBAsyncClient, table: str, columns: list[str], rows: list[list[Any]]) -> None:
    """Insert ``rows`` (values in ``columns`` order) into ``table``."""
    if not rows:
        return
    if is_postgres(conn):
        await _raw(conn).copy_records_to_table(table, records=_rows(rows), columns=columns)
        return
    for part in _slices(_rows(rows), len(columns)):
        marks = ", ".join(["(" + ", ".join("?" * len(columns)) + ")"] * len(part))
        await conn.execute_query(
            f'INSERT INTO "{table}" ({_columns(columns)}) VALUES {marks}', [v for row in part for v in row]
        )


async def insert_new(
    conn: BaseDBAsyncClient, table: str, key: str, columns: list[str], rows: list[list[Any]]
) -> dict[Any, int]:
    """Insert the ``rows`` whose ``key`` column is not taken yet; key → id of the rows inserted (a row whose key
    someone else took in the meantime is left out)."""
    if not rows:
        return {}
    ids: dict[Any, int] = {}
    if is_postgres(conn):
        raw = _raw(conn)
        temp, names = f"import_{table}", _columns(columns)
        await raw.execute(f'CREATE TEMP TABLE "{temp}" ON COMMIT DROP AS SELECT {names} FROM "{table}" WITH NO DATA')
        await raw.copy_records_to_table(temp, records=_rows(rows), columns=columns)
        returned = await raw.fetch(
            f'INSERT INTO "{table}" ({names}) SELECT {names} FROM "{temp}" '
            f'ON CONFLICT ("{key}") DO NOTHING RETURNING id, "{key}"'
        )
        return {r[key]: int(r["id"]) for r in returned}
    for part in _slices(_rows(rows), len(columns)):
        marks = ", ".join(["(" + ", ".join("?" * len(columns)) + ")"] * len(part))
        returned = await conn.execute_query_dict(
            f'INSERT INTO "{table}" ({_columns(columns)}) VALUES {marks} '
            f'ON CONFLICT ("{key}") DO NOTHING RETURNING id, "{key}"',
            [v for row in part for v in row],
        )
        ids.update({r[key]: int(r["id"]) for r in returned})
    return ids


async def reserve_ids(conn: BaseDBAsyncClient, table: str, count: int) -> list[int]:
    """``count`` fresh ids for ``table`` (rows then inserted with their id given), so that rows written set-wise
    can be named (e.g. in the audit log) without reading them back. On SQLite the caller must already hold the
    write lock (have written in its transaction), so that nobody takes the same ids meanwhile."""
    if count <= 0:
        return []
    if is_postgres(conn):
        rows = await _raw(conn).fetch(
            "SELECT nextval(pg_get_serial_sequence($1, 'id')) AS id FROM generate_series(1, $2)", table, count
        )
        return [int(r["id"]) for r in rows]
    rows = await conn.execute_query_dict(
        f"SELECT MAX(COALESCE((SELECT seq FROM sqlite_sequence WHERE name = ?), 0), "
        f'COALESCE((SELECT MAX(id) FROM "{table}"), 0)) AS top',
        [table],
    )
    top = int(rows[0]["top"])
    return list(range(top + 1, top + 1 + count))


async def update(conn: BaseDBAsyncClient, table: str, columns: list[str], rows: list[list[Any]]) -> None:
    """Set ``columns`` of the rows whose id ends each row of ``rows``: one statement, run for every row."""
    if not rows:
        return
    if is_postgres(conn):
        sets = ", ".join(f'"{c}" = ${i}' for i, c in enumerate(columns, start=1))
        sql = f'UPDATE "{table}" SET {sets} WHERE id = ${len(columns) + 1}'
    else:
        sets = ", ".join(f'"{c}" = ?' for c in columns)
        sql = f'UPDATE "{table}" SET {sets} WHERE id = ?'
    await conn.execute_many(sql, _rows(rows))
