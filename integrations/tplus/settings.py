"""The ``[tplus]`` section: where the 用友T+ OpenAPI is and the app credentials the order pull signs in with."""

from __future__ import annotations

from aiohttp import web
from pydantic import Field

from bot.config import PlatformSettings
from bot.keys import SETTINGS

NAME = "tplus"


class TplusSettings(PlatformSettings):
    api_base: str = ""  # e.g. https://openapi.chanjet.com/tplus; empty: no pull
    app_key: str = ""
    app_secret: str = ""
    page_size: int = Field(100, ge=1, le=500)
    request_timeout_seconds: float = Field(20.0, gt=0)

    @property
    def enabled(self) -> bool:
        return bool(self.api_base and self.app_key and self.app_secret)


def settings_of(app: web.Application) -> TplusSettings:
    return app[SETTINGS].platform(NAME, TplusSettings)
