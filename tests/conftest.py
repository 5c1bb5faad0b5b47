"""Shared fixtures: a real database per test (SQLite file, or a fresh PostgreSQL database when
``CRMBOT_TEST_DATABASE_URL`` is set), settings for a test corp, and the app started on a test server."""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from bot.app import create_app
from bot.clock import Clock
from bot.config import Settings, load_settings
from tests.helpers import WECOM

PG_URL = os.environ.get("CRMBOT_TEST_DATABASE_URL", "")


def _with_database(url: str, name: str) -> str:
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path="/" + name))


@pytest.fixture
async def database_url(tmp_path: Any) -> AsyncIterator[str]:
    """SQLite in a temporary file, or a throw-away PostgreSQL database."""
    if not PG_URL:
        yield f"sqlite://{tmp_path}/crmbot.sqlite3"
        return
    name = f"crmbot_t_{uuid.uuid4().hex[:12]}"
    admin_url = PG_URL.replace("asyncpg://", "postgresql://").replace("postgres://", "postgresql://")
    conn = await asyncpg.connect(admin_url)
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    yield _with_database(PG_URL, name)
    conn = await asyncpg.connect(admin_url)
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await conn.close()


@pytest.fixture
def make_settings(database_url: str) -> Callable[..., Settings]:
    """Settings for the test corp (WeCom vector B of PROTOCOLS.md); keyword sections override."""

    def make(**sections: Any) -> Settings:
        base: dict[str, Any] = {
            "database": {"url": database_url},
            "wecom": {
                "corp_id": WECOM.corp_id,
                "agent_id": WECOM.agent_id,
                "secret": WECOM.secret,
                "token": WECOM.token,
                "encoding_aes_key": WECOM.encoding_aes_key,
                "api_base": "http://127.0.0.1:9",
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
async def start_app(
    aiohttp_client: Callable[..., Any],
) -> Callable[..., Any]:
    """Start ``create_app(settings)`` on a test server; returns the test client (``client.app`` is the app)."""

    async def start(settings: Settings, clock: Clock | None = None, **kwargs: Any) -> TestClient[Any, web.Application]:
        client: TestClient[Any, web.Application] = await aiohttp_client(create_app(settings, clock=clock, **kwargs))
        return client

    return start
