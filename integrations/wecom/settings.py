"""The ``[wecom]`` section: the self-built app, its callback, the customer-contact permission and the chat archive."""

from __future__ import annotations

from aiohttp import web
from pydantic import Field, field_validator

from bot.config import PlatformSettings
from bot.keys import SETTINGS

PLATFORM = "wecom"


class WeComSettings(PlatformSettings):
    corp_id: str = ""
    agent_id: int = 0
    secret: str = ""
    token: str = ""
    encoding_aes_key: str = ""
    # A callback whose signed timestamp is further than this from our clock is refused (403). WeCom re-sends an
    # unanswered callback 3 times, 5 s apart: 300 s covers those retries with minutes of clock drift to spare.
    callback_window_seconds: int = Field(300, ge=30)
    api_base: str = "https://qyapi.weixin.qq.com"
    request_timeout_seconds: float = Field(10.0, gt=0)
    request_retries: int = Field(2, ge=0)
    retry_delay_seconds: float = Field(0.5, ge=0)
    rate_limit_retry_seconds: float = Field(60.0, ge=0)
    # The chat sidebar (聊天工具栏): where members sign in (web OAuth) and the JS-SDK script its page loads.
    oauth_url: str = "https://open.weixin.qq.com/connect/oauth2/authorize"
    jssdk_url: str = "https://res.wx.qq.com/open/js/jweixin-1.2.0.js"
    # WeCom drops (silently) app messages past 30 per person per minute and 1,000 per hour: the outbox holds them.
    member_messages_per_minute: int = Field(30, ge=1)
    member_messages_per_hour: int = Field(1000, ge=1)
    customer_contact: bool = False  # the app may call externalcontact/* (客户联系 permission granted to it)
    # Chat archive (会话内容存档) through Tencent's Finance SDK; enabled when the library path and secret are set.
    archive_sdk_path: str = ""
    archive_secret: str = ""
    archive_private_keys: dict[int, str] = Field(default_factory=dict)  # publickey_ver → PEM file path
    archive_pull_interval_seconds: float = Field(300.0, ge=0)  # 0: pull only on the msgaudit_notify event
    archive_batch_limit: int = Field(1000, ge=1, le=1000)
    archive_timeout_seconds: int = Field(10, ge=1)
    archive_retries: int = Field(3, ge=0)
    archive_retry_backoff_seconds: float = Field(2.0, ge=0)
    archive_proxy: str = ""
    archive_proxy_password: str = ""

    @field_validator("encoding_aes_key")
    @classmethod
    def _aes_key_length(cls, value: str) -> str:
        if value and len(value) != 43:
            raise ValueError("must be the 43-character EncodingAESKey from the WeCom admin console")
        return value

    @property
    def enabled(self) -> bool:
        return bool(self.corp_id and self.token and self.encoding_aes_key)

    @property
    def archive_enabled(self) -> bool:
        return bool(self.corp_id and self.archive_sdk_path and self.archive_secret)

    @property
    def can_send(self) -> bool:
        """The app may send messages (and so be a channel), not only receive them."""
        return self.enabled and bool(self.secret and self.agent_id)

    def secrets(self) -> tuple[str, ...]:
        return (self.corp_id, self.secret)


def settings_of(app: web.Application) -> WeComSettings:
    return app[SETTINGS].platform(PLATFORM, WeComSettings)
