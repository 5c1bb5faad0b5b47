"""Shared fixtures: a real database per test (SQLite file, or a fresh PostgreSQL database when
``CRMBOT_TEST_DATABASE_URL`` is set), settings for a test corp, and the app started on a test server.

Every test's database is a copy of one migrated once per session (a file copy, or ``CREATE DATABASE … TEMPLATE``),
so the schema is the migrations' own and no test pays for running them; the app's start-up still checks them."""

from __future__ import annotations

import asyncio
import os
import shutil
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from bot.app import create_app, load_settings
from bot.clock import Clock
from bot.config import Settings
from bot.db import migrate_database
from tests.helpers import WECOM
from tests.simulators.wecom import WeComSimulator

PG_URL = os.environ.get("CRMBOT_TEST_DATABASE_URL", "")


def _with_database(url: str, name: str) -> str:
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path="/" + name))


def _admin_url() -> str:
    return PG_URL.replace("asyncpg://", "postgresql://").replace("postgres://", "postgresql://")


async def _admin(sql: str) -> None:
    conn = await asyncpg.connect(_admin_url())
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


def _run(coro: Any) -> None:
    """Run set-up work on a loop of its own (session fixtures run outside the tests' loops)."""
    loop = asyncio.new_event_loop()
    try:
        loop.run_until_complete(coro)
    finally:
        loop.close()


def _copy_sqlite(template: Path, path: Path) -> Path:
    for suffix in ("", "-wal"):  # the log too, should the template's last checkpoint have left one
        if template.with_name(template.name + suffix).exists():
            shutil.copyfile(template.with_name(template.name + suffix), path.with_name(path.name + suffix))
    return path


@pytest.fixture(scope="session")
def migrated_database(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """An empty database with every migration applied: an SQLite file, or a PostgreSQL template's name."""
    if not PG_URL:
        path = tmp_path_factory.mktemp("template") / "crmbot.sqlite3"
        _run(migrate_database(f"sqlite://{path}"))
        yield str(path)
        return
    name = f"crmbot_tpl_{uuid.uuid4().hex[:12]}"
    _run(_admin(f'CREATE DATABASE "{name}"'))
    try:
        _run(migrate_database(_with_database(PG_URL, name)))
        yield name
    finally:
        _run(_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@pytest.fixture
async def database_url(tmp_path: Any, migrated_database: str) -> AsyncIterator[str]:
    """A copy of the migrated database: in a temporary SQLite file, or a throw-away PostgreSQL database."""
    if not PG_URL:
        yield f"sqlite://{_copy_sqlite(Path(migrated_database), tmp_path / 'crmbot.sqlite3')}"
        return
    name = f"crmbot_t_{uuid.uuid4().hex[:12]}"
    await _admin(f'CREATE DATABASE "{name}" TEMPLATE "{migrated_database}"')
    yield _with_database(PG_URL, name)
    await _admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
async def wecom_sim(aiohttp_server: Callable[..., Any]) -> WeComSimulator:
    """The WeCom API simulator on a test server; ``make_settings`` points ``wecom.api_base`` at it.

    ``wecom_sim.sent`` records every accepted call (``{"endpoint", "body", "answer"}``), ``texts_to(userid)`` /
    ``cards_to(userid)`` / ``card_updates()`` read it; ``fail_next``, ``http_error_next``, ``slow_next``,
    ``expire_tokens`` and ``revoke_tokens`` inject faults.
    """
    sim = WeComSimulator(WECOM.corp_id, WECOM.secret, WECOM.agent_id)
    server = await aiohttp_server(sim.app())
    sim.url = str(server.make_url("")).rstrip("/")
    return sim


@pytest.fixture
def make_settings(database_url: str, wecom_sim: WeComSimulator) -> Callable[..., Settings]:
    """Settings for the test corp (WeCom vector B of PROTOCOLS.md); keyword sections override.

    WeCom API calls go to the ``wecom_sim`` simulator, with quick retries so that fault tests run fast.
    """

    def make(**sections: Any) -> Settings:
        base: dict[str, Any] = {
            "database": {"url": database_url},
            "wecom": {
                "corp_id": WECOM.corp_id,
                "agent_id": WECOM.agent_id,
                "secret": WECOM.secret,
                "token": WECOM.token,
                "encoding_aes_key": WECOM.encoding_aes_key,
                "api_base": wecom_sim.url,
                "retry_delay_seconds": 0.01,
                "rate_limit_retry_seconds": 0.05,
                # WeCom's limits per person (30 a minute) are tested on their own (tests/test_outbox.py); stories
                # that flood one person would otherwise wait for the next minute.
                "member_messages_per_minute": 100_000,
                "member_messages_per_hour": 1_000_000,
            },
            "outbox": {"poll_seconds": 0.05, "backoff_initial_seconds": 0.05, "backoff_max_seconds": 0.2},
        }
        for key, value in sections.items():
            if isinstance(value, dict) and isinstance(base.get(key), dict):
                base[key] = {**base[key], **value}
            else:
                base[key] = value
        return load_settings(os.devnull, **base)

    return make


@pytest.fixture
async def start_app(database_url: str, aiohttp_client: Callable[..., Any]) -> Callable[..., Any]:
    """Start ``create_app(settings)`` on a test server; returns the test client (``client.app`` is the app).

    Depending on ``database_url`` makes the database outlive the app: fixtures are torn down in reverse order,
    so the app shuts down before a PostgreSQL test database is dropped, whichever fixture a test names first.
    """

    async def start(settings: Settings, clock: Clock | None = None, **kwargs: Any) -> TestClient[Any, web.Application]:
        client: TestClient[Any, web.Application] = await aiohttp_client(create_app(settings, clock=clock, **kwargs))
        return client

    return start


@pytest.fixture
async def dingtalk_sim(aiohttp_server: Callable[..., Any]) -> Any:
    """The DingTalk simulator on a test server, with its own pinned clock: pass ``clock=dingtalk_sim.clock`` to
    ``start_app`` so that the bot and DingTalk agree on time, and ``dingtalk=dingtalk_sim.settings()`` to
    ``make_settings``. ``deliver(client, staff_id, text)`` posts a signed robot callback; ``deliveries`` records what
    reached users; ``fail``/``throttle``/``expire_tokens``/``invalid_staff_ids`` inject faults."""
    from datetime import UTC, datetime

    from tests.simulators.dingtalk import DingTalkSimulator

    sim = DingTalkSimulator(clock=Clock(datetime(2026, 3, 2, 2, 0, tzinfo=UTC)))
    server = await aiohttp_server(sim.app)
    sim.base_url = str(server.make_url("")).rstrip("/")
    return sim
