"""WeCom (企业微信): callback verification and decryption, normalization, the API client and the channel.

``setup`` mounts ``GET|POST /wecom/callback`` when the callback is configured (corp id, token, AES key) and, when
the app's agent id and secret are set too, puts the API client in ``app[SERVICES]["wecom"]`` and registers the
WeCom channel on the outbox.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator

from aiohttp import web

from bot.app import BOT, HTTP, OUTBOX, SERVICES, SETTINGS
from integrations.wecom.callback import CRYPTO, receive, verify_url
from integrations.wecom.channel import WeComChannel
from integrations.wecom.client import WeComClient
from integrations.wecom.crypto import WeComCrypto

log = logging.getLogger(__name__)


def setup(app: web.Application) -> None:
    settings = app[SETTINGS].wecom
    if settings.archive_enabled:
        _setup_archive(app)
    if not settings.enabled:
        return
    app[CRYPTO] = WeComCrypto(settings.token, settings.encoding_aes_key, settings.corp_id)
    app.router.add_get("/wecom/callback", verify_url)
    app.router.add_post("/wecom/callback", receive)
    if not (settings.secret and settings.agent_id):
        log.warning("wecom: agent_id or secret not set; messages are received but replies cannot be sent")
        return
    client = WeComClient(settings, lambda: app[HTTP])
    app[SERVICES]["wecom"] = client
    app[OUTBOX].register(WeComChannel(client))


def _setup_archive(app: web.Application) -> None:
    """The chat-archive puller: pulled on the msgaudit_notify event and by the scheduler's periodic job."""
    from integrations.wecom.archive import ArchivePuller

    puller = ArchivePuller(app[BOT], app[SETTINGS].wecom)
    app[SERVICES]["wecom_archive"] = puller
    app[BOT].archive_pullers.append(puller.pull)

    async def close_sdk(app: web.Application) -> AsyncIterator[None]:
        yield
        puller.close()

    app.cleanup_ctx.append(close_sdk)
