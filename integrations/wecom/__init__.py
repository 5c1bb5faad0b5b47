"""WeCom (企业微信): callback verification and decryption, normalization, the API client, the channel, who is who
(staff accounts are WeCom UserIDs, customer contacts are external ids starting ``wm``/``wo``) and the chat archive.

``setup`` registers the WeCom identity, mounts ``GET|POST /wecom/callback`` when the callback is configured (corp
id, token, AES key) and, when the app's agent id and secret are set too, keeps the API client under
``WECOM_CLIENT``, registers the WeCom channel on the outbox and offers the chat sidebar (``SIDEBAR``: web OAuth and
the JS-SDK signatures); with the archive configured it registers the chat-archive puller (``WECOM_ARCHIVE``) as an
archive source.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

from aiohttp import web

from bot.context import ArchiveSource
from bot.identity import Identity
from bot.integration import Integration
from bot.keys import BOT, HTTP, OUTBOX
from bot.sidebar import SIDEBAR
from integrations.wecom.callback import CRYPTO, receive, verify_url
from integrations.wecom.channel import WeComChannel
from integrations.wecom.client import WeComClient
from integrations.wecom.contacts import ContactMover, describe
from integrations.wecom.crypto import WeComCrypto
from integrations.wecom.settings import PLATFORM, WeComSettings, settings_of
from integrations.wecom.sidebar import WeComSidebar

if TYPE_CHECKING:
    from integrations.wecom.archive import ArchivePuller

log = logging.getLogger(__name__)

WECOM_CLIENT = web.AppKey("wecom_client", WeComClient)
WECOM_ARCHIVE: web.AppKey[ArchivePuller] = web.AppKey("wecom_archive")
ACCOUNT_HEADERS = ("企业微信账号", "wecom_userid", "企业微信", "企微账号", "企业微信userid", "wecom")
EXTERNAL_PREFIXES = ("wm", "wo")  # external contacts (customers): wm… for WeChat users, wo… for WeCom users


def identity(settings: WeComSettings) -> Identity:
    return Identity(
        PLATFORM,
        account_headers=ACCOUNT_HEADERS,
        external_prefixes=EXTERNAL_PREFIXES,
        external_hint="应以 wm 或 wo 开头",
        messages_customers=settings.customer_contact and settings.can_send,
        confirm_hint="请在企业微信「客户联系 → 群发助手」中确认发送",
        label="企业微信",
        demo_prefix="",
    )


def setup(app: web.Application) -> None:
    settings = settings_of(app)
    who = identity(settings)
    app[BOT].directory.register(who)
    if settings.archive_enabled:
        _setup_archive(app, settings)
    if not settings.enabled:
        return
    app[CRYPTO] = WeComCrypto(settings.token, settings.encoding_aes_key, settings.corp_id)
    app.router.add_get("/wecom/callback", verify_url)
    app.router.add_post("/wecom/callback", receive)
    if not settings.can_send:
        log.warning("wecom: agent_id or secret not set; messages are received but replies cannot be sent")
        return
    client = WeComClient(settings, lambda: app[HTTP])
    app[WECOM_CLIENT] = client
    app[OUTBOX].register(WeComChannel(client))
    who.move_contacts = ContactMover(client)
    who.describe_contact = functools.partial(describe, client)
    app[SIDEBAR] = WeComSidebar(settings, client).port()


def _setup_archive(app: web.Application, settings: WeComSettings) -> None:
    """The chat-archive puller: pulled on the archive-ready event and every ``archive_pull_interval_seconds``."""
    from integrations.wecom.archive import ArchivePuller  # start-up time: only where the archive is configured

    puller = ArchivePuller(app[BOT], settings)
    app[WECOM_ARCHIVE] = puller
    app[BOT].archive_sources.append(ArchiveSource(puller.pull, settings.archive_pull_interval_seconds))

    async def close_sdk(app: web.Application) -> AsyncIterator[None]:
        yield
        puller.close()

    app.cleanup_ctx.append(close_sdk)


INTEGRATION = Integration(PLATFORM, setup, WeComSettings)
