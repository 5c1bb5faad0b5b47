"""The ``[dingtalk]`` section: the enterprise robot, its callback signature window and stream mode."""

from __future__ import annotations

from aiohttp import web
from pydantic import Field

from bot.config import PlatformSettings
from bot.keys import SETTINGS

PLATFORM = "dingtalk"


class DingTalkSettings(PlatformSettings):
    app_key: str = ""
    app_secret: str = ""
    robot_code: str = ""
    api_base: str = "https://api.dingtalk.com"
    robot_name: str = ""
    chatbot_user_id: str = ""  # when set, a callback body naming another chatbotUserId is refused (403)
    callback_window_seconds: int = Field(3600, ge=1)
    webhook_margin_seconds: int = Field(60, ge=0)
    token_refresh_margin_seconds: int = Field(300, ge=0)
    request_timeout_seconds: float = Field(10.0, gt=0)
    throttle_retry_seconds: float = Field(60.0, ge=0)
    # A robot takes at most 20 messages a minute; the outbox holds what would go past it, per recipient.
    messages_per_minute: int = Field(20, ge=1)
    session_webhook_prefix: str = "https://oapi.dingtalk.com/"
    stream: bool = False

    @property
    def enabled(self) -> bool:
        return bool(self.app_secret)

    def secrets(self) -> tuple[str, ...]:
        return (self.app_secret,)


def settings_of(app: web.Application) -> DingTalkSettings:
    return app[SETTINGS].platform(PLATFORM, DingTalkSettings)
