"""The database: Tortoise configuration from a URL, schema migrations on start-up, and the connection lifecycle.

The schema is owned by Tortoise's migration framework (``models/migrations``): ``open_database`` applies any
pending migration before the app serves, on SQLite and PostgreSQL alike. After changing a model, run
``tortoise -c bot.db.TORTOISE_ORM makemigrations`` and commit the new file. A database that is not there (not
running, unreachable, missing, refusing us, an SQLite file in a missing folder) is reported as
``DatabaseUnavailable``, one line without the password, before Tortoise is asked to open it.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sqlite3
from contextlib import closing
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from tortoise import connections
from tortoise.backends.base.config_generator import expand_db_url
from tortoise.context import TortoiseContext
from tortoise.migrations.api import migrate

from bot import sql
from bot.collector import fewer_collections
from models import MODEL_MODULES

log = logging.getLogger(__name__)

CONNECT_TIMEOUT_SECONDS = 10.0


class DatabaseUnavailable(Exception):
    """The database cannot be opened; the message is one line for the admin, without the password."""


def normalize_url(url: str) -> str:
    """Tortoise spells PostgreSQL over asyncpg ``asyncpg://``; accept the usual ``postgres(ql)://`` too."""
    for prefix in ("postgresql://", "postgres://"):
        if url.startswith(prefix):
            return "asyncpg://" + url[len(prefix) :]
    return url


def is_postgres(url: str) -> bool:
    return normalize_url(url).startswith("asyncpg://")


async def _keep_session(connection: Any) -> None:
    """PostgreSQL: what the connection pool does to a connection it takes back, beyond what it always does (roll
    back a transaction left open): nothing. Its default, one more statement (release session advisory locks,
    close cursors, stop listening, reset settings), costs a round trip per transaction and per query outside one,
    for state the app never leaves in a session: its advisory locks are transaction-level, its cursors live in
    transactions, it listens to nothing and sets nothing for a session."""


def tortoise_config(url: str) -> dict[str, Any]:
    connection: str | dict[str, Any] = normalize_url(url)
    if is_postgres(url):
        connection = expand_db_url(str(connection))
        connection["credentials"]["reset"] = _keep_session
    return {
        "connections": {"default": connection},
        "apps": {
            "models": {
                "models": list(MODEL_MODULES),
                "default_connection": "default",
                "migrations": "models.migrations",
            }
        },
        "use_tz": True,
        "timezone": "UTC",
    }


# For the ``tortoise`` migration CLI (``tortoise -c bot.db.TORTOISE_ORM makemigrations``).
TORTOISE_ORM = tortoise_config(os.environ.get("CRMBOT_DATABASE__URL", "sqlite://crmbot.sqlite3"))


async def migrate_database(url: str) -> None:
    """Apply pending migrations to the database at ``url`` (in a context of their own, closed afterwards).

    SQLite changes a table's columns by rebuilding the table, and dropping the old one would set off every
    ``ON DELETE`` of the tables that refer to it. As SQLite prescribes, its migrations therefore run with foreign
    keys off, and the references are checked once they are done.
    """
    sqlite = not is_postgres(url)
    # The migration engine makes the schema's every model anew for each migration it applies: a new database's
    # migrations make about 1.6 million short-lived objects, whose collection took 40% of the time.
    async with TortoiseContext():
        with fewer_collections():
            await migrate(config=tortoise_config(_with_pragma(url, "foreign_keys", "OFF") if sqlite else url))
        if sqlite:
            broken = await connections.get("default").execute_query_dict("PRAGMA foreign_key_check")
            if broken:
                raise RuntimeError(f"migrations left {len(broken)} broken references, e.g. {dict(broken[0])}")


def _with_pragma(url: str, name: str, value: str) -> str:
    return f"{url}{'&' if '?' in url else '?'}{name}={value}"


def shown_url(url: str) -> str:
    """``url`` as it may be shown and logged: the password left out."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.rsplit("@", 1)[1]
    return urlunsplit(parts._replace(netloc=f"{parts.username}@{netloc}" if parts.username else netloc))


async def check_reachable(url: str) -> None:
    """Open one connection and close it again, or raise ``DatabaseUnavailable``.

    Tortoise reports a dead port or a missing database as a long chain of tracebacks, and waits forever on an
    SQLite file it cannot create; one plain connection first turns all of these into one line.
    """
    credentials = expand_db_url(normalize_url(url))["credentials"]
    if is_postgres(url):
        refusal = await _postgres_refusal(credentials)
    else:
        refusal = await asyncio.to_thread(_sqlite_refusal, str(credentials["file_path"]))
    if refusal is not None:
        raise DatabaseUnavailable(f"无法打开数据库 cannot open the database {shown_url(url)}: {refusal}")


def _one_line(exc: Exception) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__


async def _postgres_refusal(credentials: dict[str, Any]) -> str | None:
    import asyncpg  # start-up time: only PostgreSQL needs the driver

    try:
        conn = await asyncpg.connect(
            host=credentials.get("host"),
            port=credentials.get("port"),
            user=credentials.get("user"),
            password=credentials.get("password"),
            database=credentials.get("database"),
            timeout=CONNECT_TIMEOUT_SECONDS,
        )
    except (OSError, asyncpg.PostgresError) as exc:  # refused, unreachable, timed out, no such database, auth
        return _one_line(exc)
    await conn.close()
    return None


def _sqlite_refusal(path: str) -> str | None:
    if path == ":memory:":
        return None
    try:
        sqlite3.connect(path).close()
    except sqlite3.Error as exc:
        return _one_line(exc)
    return None


async def open_database(url: str) -> TortoiseContext:
    """Apply pending migrations, then open the connections the models use; returns the context to close."""
    config = tortoise_config(url)
    await check_reachable(url)
    await migrate_database(url)
    context = TortoiseContext()
    context.__enter__()  # current in this task, so that init can register the models
    # The global fallback makes the models usable from every task of the process (request handlers,
    # the outbox dispatcher, scheduled jobs), not only from the task that opened the database.
    await context.init(config=config, _enable_global_fallback=True)
    # Acknowledgements wait for their inbox write: on SQLite it goes before other work waiting for the connection.
    sql.prioritize(sql.default())
    log.info("database ready (%s)", "postgresql" if is_postgres(url) else "sqlite")
    return context


async def close_database(context: TortoiseContext) -> None:
    await context.close_connections()


async def health(within: float) -> str:
    """In a word, why the database cannot take a write now ("locked", "timeout", "unavailable"), or "ok".

    Answers within ``within`` seconds whatever the database does. On SQLite the probe takes the write lock (and
    releases it) on a connection of its own: the app's single connection may be queued behind a write that waits
    for another process's lock, and a plain ``SELECT 1`` would pass while every write stalls.
    """
    conn = sql.default()
    path = None if sql.is_postgres(conn) else getattr(conn, "filename", None)
    try:
        if isinstance(path, str) and path != ":memory:":
            await asyncio.wait_for(asyncio.to_thread(_take_write_lock, path, within / 2), within)
        else:
            await asyncio.wait_for(conn.execute_query("SELECT 1"), within)
    except TimeoutError:
        return "timeout"
    except sqlite3.OperationalError as exc:
        return "locked" if "locked" in str(exc) else "unavailable"
    except Exception:  # whatever the driver raises, the database is what does not answer
        return "unavailable"
    return "ok"


def _take_write_lock(path: str, busy_timeout: float) -> None:
    uri = Path(path).resolve().as_uri() + "?mode=rw"  # never creates a missing file
    with closing(sqlite3.connect(uri, uri=True, timeout=busy_timeout, isolation_level=None)) as conn:
        conn.execute("BEGIN IMMEDIATE")
        conn.execute("ROLLBACK")
