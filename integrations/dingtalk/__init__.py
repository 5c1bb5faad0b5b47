"""DingTalk (钉钉): robot callback signature check, normalization, the API client and the channel."""

from __future__ import annotations

from aiohttp import web


def setup(app: web.Application) -> None:
    """Mount ``POST /dingtalk/callback`` and register the channel when DingTalk is configured."""
