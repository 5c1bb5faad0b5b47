"""WeCom (企业微信): callback verification and decryption, normalization, the API client and the channel."""

from __future__ import annotations

from aiohttp import web

from bot.app import SETTINGS
from integrations.wecom.callback import CRYPTO, receive, verify_url
from integrations.wecom.crypto import WeComCrypto


def setup(app: web.Application) -> None:
    settings = app[SETTINGS].wecom
    if not settings.enabled:
        return
    app[CRYPTO] = WeComCrypto(settings.token, settings.encoding_aes_key, settings.corp_id)
    app.router.add_get("/wecom/callback", verify_url)
    app.router.add_post("/wecom/callback", receive)
